// Package pgtemp runs a throwaway PostgreSQL server for `worker demo`, for
// `worker bench` and, through internal/testenv, for tests.
//
// Start finds PostgreSQL server binaries (version 15 or newer, MinVersion) on
// PATH, through `pg_config --bindir`, under /usr/lib/postgresql/*/bin, or in
// the other places FindBinaries lists (PGDG's, Homebrew's), runs initdb on a
// temporary directory, and starts the server with wal_level=logical on a free
// loopback port and a private Unix socket directory. PostgreSQL refuses to run
// as root, so when the calling process is root the server runs as the
// unprivileged `postgres` OS user (or `nobody`), and the data directory is
// handed to that user. The server is a child process that receives SIGQUIT if
// its parent dies, so a killed run does not leave servers behind; Server.Stop
// shuts it down and removes the directory, Server.Restart and Server.Shutdown
// take it away for fault tests.
//
// SetupSupabase turns a database into the shape a Supabase project has
// (SupabaseSQL): the roles anon, authenticated, service_role and
// supabase_auth_admin, an `auth` schema owned by supabase_auth_admin, and
// `auth.users` with the columns the Supabase Auth server creates.
// DatabaseURL points a connection string at another database and
// DropDatabase drops one together with its replication slots.
//
// The package does not import testing, so the shipped binary can link it.
// Tests use internal/testenv, whose Harness starts one server per test
// binary (or uses EnvTestDatabaseURL, TEST_DATABASE_URL) and gives each test
// its own database cloned from a prepared template.
package pgtemp
