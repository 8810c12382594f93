package daemon

import (
	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/listener"
)

// queries are the statements the daemon runs itself, with the schema
// filled in; the rest are run by the packages that own them (keystore,
// jobs, listener, users).
type queries struct {
	// recordCapture writes the capture path ($1 mode, $2 reason) into the
	// installation row, for `worker status`.
	recordCapture string
	// queueStats is, per River job state, the number of jobs and the wait of
	// the one due first.
	queueStats string
	// slotLag is replication slot $1's lag and retained WAL, in bytes.
	slotLag string
	// checkpointAge is the age of slot $1's checkpoint, in seconds.
	checkpointAge string
	// outboxCount is the number of signups waiting in the outbox.
	outboxCount string
}

func newQueries(schema string) queries {
	q := func(table string) string { return pgx.Identifier{schema, table}.Sanitize() }
	return queries{
		recordCapture: `UPDATE ` + q("installation") + `
		SET capture_mode = $1, capture_reason = $2, capture_chosen_at = now()`,
		queueStats: `SELECT state::text, count(*), greatest(extract(epoch FROM now() - min(scheduled_at)), 0)::float8 FROM ` +
			q("river_job") + ` GROUP BY state`,
		slotLag: `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
			FROM pg_replication_slots WHERE slot_name = $1`,
		checkpointAge: `SELECT extract(epoch FROM now() - updated_at)::float8 FROM ` + q("replication_checkpoints") + ` WHERE slot_name = $1`,
		outboxCount:   `SELECT count(*) FROM ` + q(listener.OutboxTable),
	}
}
