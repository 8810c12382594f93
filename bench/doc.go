// Package bench is `worker bench`: it measures what keyworker costs the
// signup path and how fast it makes keys, side by side with what it
// replaces, under the same load.
//
// # Scenarios
//
// Each scenario runs on a fresh Supabase-shaped database (pgtemp's
// SetupSupabase), one after the other on the same server:
//
//   - none: signups with nothing attached, the baseline;
//   - trigger: the seed trigger (seeds/000), faithfully: pgcrypto, a plaintext
//     key written into public.profiles by an AFTER INSERT, SECURITY DEFINER
//     trigger inside the signup transaction;
//   - logical: `worker run` in logical mode;
//   - listen: `worker run` in listen mode.
//   - outbox: listen mode's trigger and outbox alone: the worker installs
//     them and stops, the load runs, then the worker makes the keys. What the
//     trigger path costs signups apart from making keys on the same machine.
//
// The worker runs as a separate process (Config.WorkerCommand, the same
// binary in `worker bench`), configured through the environment as an
// operator would, so its CPU time and memory are its own: CPU from the
// kernel's account at exit (rusage) and from /proc/<pid>/stat between
// phases, peak memory from rusage's maxrss, and the resident set sampled
// every 100 ms from /proc/<pid>/status, so the steady size can be told from
// the peak. It gets a slot name of its own (slots are cluster-wide) and logs
// at warn level; what it logs is shown.
//
// # Load
//
// Config.Clients connections each sign users up with one INSERT into
// auth.users per transaction (the columns Supabase Auth sets, the id made by
// the client). Each scenario runs two phases, each after a warm-up that is
// not counted and a CHECKPOINT, so no phase inherits another's:
//
//   - burst: every client inserts as fast as it can; gives signups/s
//     accepted (the throughput comparison);
//   - steady: Config.Rate signups/s in total on an exact schedule; gives
//     signup latency and key latency at a known load.
//
// Signup latency is the time from sending the INSERT to its COMMIT
// returning, on the client; only signups whose commit returns inside the
// measured window count. After each phase the bench waits until every user
// has a key (and River is idle) before going on.
//
// # Key latency
//
// For each signup of the measured window: the time from the signup's commit
// to its key's commit. On a throwaway server track_commit_timestamp is on,
// and both are read exactly, on the server's clock:
// pg_xact_commit_timestamp(xmin) of the auth.users row and of the api_keys
// row (neither row is updated afterwards, so xmin is the inserting
// transaction). A commit timestamp is taken just before the commit's WAL
// flush, for both transactions alike. On a given server without
// track_commit_timestamp the rows' created_at are used instead: both
// transactions' start times, an approximation (Report.KeyLatencyMethod says
// which). For the trigger it is zero by construction: the profiles row has
// its user's xmin, which the bench checks.
//
// # Catch-up
//
// After the phases the worker is stopped (SIGTERM), Config.Backlog signups
// are inserted, each its own transaction, and a new worker is started. The
// catch-up runs from starting that process (start-up included) to the last
// backlog key's commit (read from the server, so the polling interval does
// not count). In logical mode the backlog arrives through the slot; the
// leader's start-up reconcile finds the same users, and River's unique jobs
// and the unique index on api_keys keep each to one key. The report gives
// both counts (keyworker_signups_captured_total and
// keyworker_reconcile_found_total from the worker's /metrics). In listen
// mode the backlog waits in the outbox.
//
// # Server
//
// By default a throwaway server from pgtemp with durable commits (fsync,
// full_page_writes and synchronous_commit on: commits cost what they cost in
// production) and track_commit_timestamp on; PostgreSQL's defaults
// otherwise. With Config.DatabaseURL, an existing server: the role must be
// able to create databases, roles and schemas (a superuser, in practice);
// every database the run makes is dropped afterwards, and the worker uses a
// slot named after the run, never the default one.
//
// # Goals
//
// The report ends with issue 6's goals for a 2-core machine running Postgres
// and the worker together, and where the run stands against each: signup
// throughput with keyworker at least the trigger's at 16 clients, key p99
// under 100 ms at 500 signups/s, catch-up above 5,000 keys/s, worker memory
// under 64 MiB steady. The bench reports; it does not adjust anything to
// meet them.
package bench
