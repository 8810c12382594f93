// Package pgtemp runs a throwaway PostgreSQL server for tests and for
// `worker demo`.
//
// Start finds PostgreSQL server binaries (version 14 or newer) on PATH,
// through `pg_config --bindir`, or under /usr/lib/postgresql/*/bin, runs
// initdb on a temporary directory, and starts the server with
// wal_level=logical on a free loopback port and a private Unix socket
// directory. PostgreSQL refuses to run as root, so when the calling process is
// root the server runs as the unprivileged `postgres` OS user (or `nobody`),
// and the data directory is handed to that user. The server is a child
// process that receives SIGQUIT if its parent dies, so a killed test run does
// not leave servers behind; Stop shuts it down and removes the directory.
//
// Setup turns a database into the shape a Supabase project has: the roles
// anon, authenticated, service_role and supabase_auth_admin, an `auth` schema
// owned by supabase_auth_admin, and `auth.users` with the columns the Supabase
// Auth server creates.
//
// For tests, TestMain in a package calls Main, which starts one server per
// test binary (or uses TEST_DATABASE_URL), and each test calls NewDatabase to
// get its own database cloned from a prepared template, so tests stay
// isolated without paying for initdb or migrations per test.
package pgtemp
