package main

import "github.com/jackc/pgx/v5"

// The statements cmd/worker runs itself (the rest go through the packages
// that own them): whether a schema is migrated, and what `worker status`
// reads.

// migratedQuery tells whether $1, the schema-qualified api_keys table,
// exists: whether `worker migrate` ran on that schema.
const migratedQuery = `SELECT to_regclass($1) IS NOT NULL`

// slotQuery reads replication slot $1.
const slotQuery = `SELECT active, active_pid, wal_status, confirmed_flush_lsn::text,
				pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
			FROM pg_replication_slots WHERE slot_name = $1`

// statusQueries are `worker status`'s statements with the schema filled in.
type statusQueries struct {
	// capture is the path the last worker to start chose (migration 005
	// added the columns).
	capture string
	// outbox counts the signups waiting in the outbox and the age of the
	// oldest (migration 005 added the table).
	outbox string
	// checkpoint is slot $1's last acknowledged position.
	checkpoint string
	// queue counts River's jobs by state.
	queue string
	// oldestJob is when the oldest job that may run now was due.
	oldestJob string
	// signupKeys counts the signup keys and when the last was made.
	signupKeys string
	// pendingReveals counts the secrets still waiting for pick-up.
	pendingReveals string
	// lastEvent is the newest key event.
	lastEvent string
}

func newStatusQueries(schema string) statusQueries {
	q := func(table string) string { return pgx.Identifier{schema, table}.Sanitize() }
	return statusQueries{
		capture:        `SELECT capture_mode, capture_reason, capture_chosen_at FROM ` + q("installation"),
		outbox:         `SELECT count(*), extract(epoch FROM now() - min(queued_at))::float8 FROM ` + q("signup_outbox"),
		checkpoint:     `SELECT lsn::text, updated_at, extract(epoch FROM now() - updated_at)::float8, last_signup_at FROM ` + q("replication_checkpoints") + ` WHERE slot_name = $1`,
		queue:          `SELECT state::text, count(*) FROM ` + q("river_job") + ` GROUP BY state`,
		oldestJob:      `SELECT min(scheduled_at), extract(epoch FROM now() - min(scheduled_at))::float8 FROM ` + q("river_job") + ` WHERE state IN ('available', 'retryable') AND scheduled_at <= now()`,
		signupKeys:     `SELECT count(*), max(created_at) FROM ` + q("api_keys") + ` WHERE source = 'signup'`,
		pendingReveals: `SELECT count(*) FROM ` + q("key_reveals") + ` WHERE expires_at > now()`,
		lastEvent:      `SELECT event, occurred_at FROM ` + q("key_events") + ` ORDER BY id DESC LIMIT 1`,
	}
}
