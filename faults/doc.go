// Package faults is keyworker's fault suite (issue 6). It has no code of
// its own: its tests build the real worker binary, run it as a subprocess
// (`worker run`) against a real PostgreSQL server of their own while
// signups stream in, break things, and after each fault check that nothing
// was lost, doubled or leaked.
//
// # Running it
//
//	go test ./faults/                                               # the small version (CI), about 4 minutes
//	KEYWORKER_FAULTS=full go test ./faults/ -run TestFaults -v -timeout 30m   # the full version, about 12 minutes
//	KEYWORKER_FAULTS_SEED=<n> go test ./faults/ -v                  # replay a run's random choices
//	KEYWORKER_FAULTS_MODES=listen go test ./faults/ -v              # only these modes (logical, listen)
//
// Most of the small version's time is waiting, not work: after kill -9,
// the jobs the dead process was running wait for River's rescuer (one job
// timeout plus 15 s, on a 30 s tick): about 60 s with the small version's
// KEYWORKER_JOB_TIMEOUT=20s, about 100 s with the full version's default
// 1 m; notices that
// failed wait for River's backoff (1 s, then 16 s, on its 5 s scheduler).
//
// Both need Go and PostgreSQL server binaries, as every other package's
// tests do (see pgtemp); TEST_DATABASE_URL is ignored, because the suite
// restarts its server. `go test -short` skips it. Every run logs its seed;
// the same seed makes the same choices (kill delays, signup shapes), though
// the timing of a real process and server never repeats exactly.
//
// # What runs
//
// TestMain builds ./cmd/worker once (with -race when the test binary is
// built with -race, so the product's own data races fail the suite; set
// KEYWORKER_FAULTS_WORKER_RACE=0 or 1 to choose) and starts a dedicated
// throwaway server (pgtemp) with wal_sender_timeout=5s. Each mode (logical;
// listen too in the full version) gets its own database with the Supabase
// shape, an in-test webhook receiver (httptest, every request's Standard
// Webhooks signature checked with notify.VerifyWebhook) and an in-test SMTP
// server (go-smtp, plain, on loopback). The worker runs with
// KEYWORKER_LOG_FORMAT=json at debug level, its output appended to one log
// file, and KEYWORKER_RECONCILE_INTERVAL=5s.
//
// A streamer inserts users into auth.users continuously (a few hundred a
// second): single inserts, multi-row inserts and multi-statement
// transactions; about one in ten anonymous, one in thirty soft-deleted at
// signup (both ineligible), and now and then an eligible user deleted
// again. It rides out database outages; a signup whose commit was
// uncertain (the connection died around COMMIT) is looked up afterwards,
// and only users that exist count. Every check runs against the users
// table itself.
//
// # Faults (each followed by the invariant check)
//
//   - kill -9 of the worker at random moments (during start-up too), at
//     least five times in a row, restarting it each time; after each kill
//     the quick check (below), after the series the full check.
//   - PostgreSQL restarted under the running worker, fast and immediate
//     (crash recovery) shutdown.
//   - The WAL sender serving the worker's slot terminated
//     (pg_terminate_backend).
//   - The slot dropped while the worker is stopped; signups go on; the
//     worker must recreate it and reconcile.
//   - The webhook receiver holding requests past the sender's 10 s timeout
//     for a moment (which ties up every notice worker for that long), then
//     answering 500 (and 503 with Retry-After) for a while.
//   - The SMTP server stopped for a while and started again on the same
//     port.
//
// # The check
//
// After a fault the streamer keeps going until the worker has taken in new
// signups itself (its keyworker_signups_captured_total grows: intake, not
// just the reconciler, works again), then pauses; the check waits until
// every eligible user has a key and every key a delivered webhook and
// email. It fails with examples (their River jobs and audit events) when
// that work stops shrinking for 150 s, longer than the slowest legitimate
// wait: jobs a killed process left running are rescued by River one job
// timeout (20 s small, 1 m full) plus 15 s after they started, on its rescuer's 30 s tick.
// Then it asserts:
//
//  1. Every eligible user (not anonymous, not deleted) has exactly one
//     signup key, and no ineligible user has one.
//  2. Every key was announced under exactly one webhook-id (retries repeat
//     it; a second id would be a second notice), delivered at least once
//     with a valid signature and the right user, and mailed at least once
//     to its user under exactly one Message-ID. No notice was discarded
//     and no job gave up.
//  3. jobs.Reconcile with DryRun (since installation) finds nobody.
//  4. No plaintext anywhere. Each check picks keys up (two through POST
//     /v1/keys/reveal with access tokens signed as Supabase signs them,
//     checking that a second pick-up finds nothing; more through the key
//     store with the worker's sealing key; every key left in the final
//     check) and looks for each key's 43-character secret, which a full
//     key contains: with testenv.ScanForSecrets over every column of every
//     table for the keys picked up in that check (the final check, which
//     picks up thousands, gives it a sample: it compares every needle with
//     every value), and, for every key picked up so far, in a COPY of
//     every table (hex-encoded bytea decoded), the worker's log,
//     PostgreSQL's log, every webhook body and every email.
//  5. The worker process is alive and /readyz answers 200; its log has no
//     data race report and no panic.
//
// The quick check after each single kill asserts what needs no settling:
// nobody has two signup keys, no ineligible user has one, no key was
// announced under two ids or mailed under two Message-IDs, no signature was
// bad, no race or panic was logged. Every restart must reach /readyz 200
// (before the next kill, unless that one is aimed at its start-up).
package faults
