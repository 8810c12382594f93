package daemon

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/jobs"
	"github.com/keyworker/keyworker/listener"
	"github.com/keyworker/keyworker/metrics"
)

var batchSizeBuckets = []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}

func (d *Daemon) onBatch(b listener.Batch) {
	m := d.metrics
	m.Counter("keyworker_signups_captured_total", "Signups handed off to River by this process.").Add(uint64(b.Signups))
	m.Counter("keyworker_signups_enqueued_total", "Signups that became new create_key jobs (the rest were duplicates).").Add(uint64(b.Enqueued))
	m.Histogram("keyworker_enqueue_batch_size", "Signups per hand-off transaction.", batchSizeBuckets).Observe(float64(b.Signups))
	m.Histogram("keyworker_enqueue_batch_seconds", "Hand-off transaction time, BEGIN to COMMIT.", nil).ObserveDuration(b.Duration)
	lat := m.Histogram("keyworker_signup_to_job_seconds", "From the signup's commit to its job's commit.", nil)
	for _, at := range b.SourceCommits {
		lat.ObserveDuration(b.CommittedAt.Sub(at))
	}
}

func (d *Daemon) onJobEvent(e jobs.Event) {
	m := d.metrics
	switch e.Kind {
	case jobs.EventKeyCreated:
		m.Counter("keyworker_keys_created_total", "Signup keys created.").Inc()
	case jobs.EventNoticeSent:
		m.Counter("keyworker_notices_total", "Notices by sink and outcome.", "sink", e.Sink, "outcome", "sent").Inc()
	case jobs.EventNoticeFailed:
		m.Counter("keyworker_notices_total", "Notices by sink and outcome.", "sink", e.Sink, "outcome", "failed").Inc()
	case jobs.EventNoticeDiscarded:
		m.Counter("keyworker_notices_total", "Notices by sink and outcome.", "sink", e.Sink, "outcome", "discarded").Inc()
	case jobs.EventReconcileFound:
		m.Counter("keyworker_reconcile_found_total", "Eligible users without a key found by reconcile runs.").Add(uint64(e.Count))
	}
}

// registerMetrics adds the series computed at scrape time from the
// database and the signup source.
func (d *Daemon) registerMetrics() {
	m := d.metrics
	// Create the counters so they show as 0 before the first event.
	m.Counter("keyworker_keys_created_total", "Signup keys created.")
	m.Counter("keyworker_signups_captured_total", "Signups handed off to River by this process.")
	m.Counter("keyworker_reconcile_found_total", "Eligible users without a key found by reconcile runs.")
	states := []string{"available", "scheduled", "running", "retryable", "completed", "cancelled", "discarded", "pending"}
	m.OnScrape(func(ctx context.Context) {
		st := d.SourceStatus()
		up := 0.0
		switch st.Role {
		case listener.RoleStreaming, listener.RoleListening:
			up = 1
		}
		m.Gauge("keyworker_source_streaming", "1 when this process holds the slot (or listens) and reads signups.").Set(up)
		standby := 0.0
		if st.Role == listener.RoleStandby {
			standby = 1
		}
		m.Gauge("keyworker_source_standby", "1 when another replica holds the slot and this one waits.").Set(standby)

		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		depth := map[string]float64{}
		rows, err := d.pool.Query(ctx, `SELECT state::text, count(*) FROM `+pgx.Identifier{d.cfg.Schema, "river_job"}.Sanitize()+` GROUP BY state`)
		if err == nil {
			for rows.Next() {
				var s string
				var n int64
				if rows.Scan(&s, &n) == nil {
					depth[s] = float64(n)
				}
			}
			rows.Close()
		}
		for _, s := range states {
			m.Gauge("keyworker_queue_jobs", "River jobs in this schema by state.", "state", s).Set(depth[s])
		}
		if d.cfg.Mode == ModeLogical {
			var lag *int64
			var age *float64
			_ = d.pool.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1`, st.Slot).Scan(&lag)
			_ = d.pool.QueryRow(ctx, `SELECT extract(epoch FROM now() - updated_at)::float8 FROM `+pgx.Identifier{d.cfg.Schema, "replication_checkpoints"}.Sanitize()+` WHERE slot_name = $1`, st.Slot).Scan(&age)
			if lag != nil {
				m.Gauge("keyworker_slot_lag_bytes", "WAL the slot holds back: current WAL position minus confirmed_flush_lsn.").Set(float64(*lag))
			}
			if age != nil {
				m.Gauge("keyworker_checkpoint_age_seconds", "Time since the replication checkpoint last moved.").Set(*age)
			}
		}
	})
}

var _ = metrics.Labels
