package daemon

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/keyworker/keyworker/jobs"
	"github.com/keyworker/keyworker/listener"
	"github.com/keyworker/keyworker/notify"
)

// revealOutcomes are the outcomes server.Config.OnReveal reports.
var revealOutcomes = []string{"revealed", "nothing", "unauthorized", "rate_limited", "error"}

var batchSizeBuckets = []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}

func (d *Daemon) onBatch(b listener.Batch) {
	m := d.metrics
	m.Counter("keyworker_signups_captured_total", "Signups handed off to River by this process.").Add(uint64(b.Signups))
	m.Counter("keyworker_signups_enqueued_total", "Signups handed to new create-keys jobs (repeats within a hand-off are not counted).").Add(uint64(b.Enqueued))
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
		// One per key, thousands a second in a catch-up: the counter is
		// looked up once.
		if c := d.keysCreated.Load(); c != nil {
			c.Inc()
		}
	case jobs.EventNoticeSent:
		m.Counter("keyworker_notices_total", "Notices by sink and outcome.", "sink", e.Sink, "outcome", "sent").Inc()
	case jobs.EventNoticeFailed:
		m.Counter("keyworker_notices_total", "Notices by sink and outcome.", "sink", e.Sink, "outcome", "failed").Inc()
	case jobs.EventNoticeDiscarded:
		m.Counter("keyworker_notices_total", "Notices by sink and outcome.", "sink", e.Sink, "outcome", "discarded").Inc()
	case jobs.EventKeySkipped:
		m.Counter("keyworker_keys_skipped_total", "Users a create-keys job made no signup key for, by reason (key_exists, user_missing, user_deleted, user_anonymous, malformed_user_id).", "reason", e.Reason).Inc()
	case jobs.EventReconcileFound:
		m.Counter("keyworker_reconcile_found_total", "Eligible users without a key found by reconcile runs.").Add(uint64(e.Count))
	}
}

// registerMetrics adds the series computed at scrape time from the
// database and the signup source.
func (d *Daemon) registerMetrics() {
	m := d.metrics
	// Create the counters so they show as 0 before the first event.
	keysCreated := m.Counter("keyworker_keys_created_total", "Signup keys created.")
	d.keysCreated.Store(&keysCreated)
	m.Counter("keyworker_signups_captured_total", "Signups handed off to River by this process.")
	m.Counter("keyworker_reconcile_found_total", "Eligible users without a key found by reconcile runs.")
	// And the labelled ones whose values are known, so that rates and
	// increases see their first event (alert rules use them).
	for _, s := range d.senders {
		for _, outcome := range []string{"sent", "failed", "discarded"} {
			m.Counter("keyworker_notices_total", "Notices by sink and outcome.", "sink", s.Name(), "outcome", outcome)
		}
	}
	for _, outcome := range revealOutcomes {
		m.Counter("keyworker_reveals_total", "Reveal requests by outcome.", "outcome", outcome)
	}
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
		if c := d.Capture(); c.Mode != "" {
			m.Gauge("keyworker_capture_info", "1 for the signup capture path this process runs (mode: logical or listen) and why it was chosen (reason: configured, publication, or what logical mode lacked).",
				"mode", c.Mode, "reason", c.Reason).Set(1)
		}

		db := d.dbStats.get(ctx, d.cfg.MetricsCacheTTL, d.queryStats)
		if db.depth != nil {
			for _, s := range states {
				m.Gauge("keyworker_queue_jobs", "River jobs in this schema by state.", "state", s).Set(db.depth[s])
			}
			m.Gauge("keyworker_queue_oldest_available_seconds", "How long the oldest job ready to run (state available) has waited for a worker; 0 when none waits.").Set(db.oldestAvailable)
		}
		if db.lag != nil {
			m.Gauge("keyworker_slot_lag_bytes", "WAL the slot holds back: current WAL position minus confirmed_flush_lsn.").Set(float64(*db.lag))
		}
		if db.retained != nil {
			m.Gauge("keyworker_slot_wal_retained_bytes", "WAL the server keeps on disk for the slot: current WAL position minus restart_lsn.").Set(float64(*db.retained))
		}
		if db.outbox != nil {
			m.Gauge("keyworker_outbox_signups", "Signups waiting in listen mode's outbox.").Set(float64(*db.outbox))
		}
		if db.age != nil {
			m.Gauge("keyworker_checkpoint_age_seconds", "Time since the replication checkpoint last moved.").Set(*db.age)
		}
	})
}

// timedSender observes each send's duration in
// keyworker_notice_send_seconds by sink and outcome (sent, retryable,
// permanent).
type timedSender struct {
	notify.Sender
	d *Daemon
}

func (s timedSender) Send(ctx context.Context, n notify.Notice) error {
	began := time.Now()
	err := s.Sender.Send(ctx, n)
	outcome := "sent"
	var perm *notify.PermanentError
	switch {
	case errors.As(err, &perm):
		outcome = "permanent"
	case err != nil:
		outcome = "retryable"
	}
	s.d.metrics.Histogram("keyworker_notice_send_seconds", "One notice's delivery to a sink, by sink and outcome (sent, retryable, permanent).", nil,
		"sink", s.Name(), "outcome", outcome).ObserveDuration(time.Since(began))
	return err
}

// timedSenders wraps the senders for keyworker_notice_send_seconds.
func (d *Daemon) timedSenders() []notify.Sender {
	out := make([]notify.Sender, len(d.senders))
	for i, s := range d.senders {
		out[i] = timedSender{s, d}
	}
	return out
}

// jobEventKinds are the River events watchJobs observes.
var jobEventKinds = []river.EventKind{river.EventKindJobCompleted, river.EventKindJobFailed, river.EventKindJobCancelled, river.EventKindJobSnoozed}

// watchJobs observes, from River's job events until ctx ends, each job
// run's duration and wait by kind, and each finished batch job's size.
// River drops events when this falls behind (the channel holds 1000);
// they are per job, not per key, so a catch-up's rate fits.
func (d *Daemon) watchJobs(ctx context.Context, events <-chan *river.Event) {
	m := d.metrics
	for {
		var e *river.Event
		select {
		case <-ctx.Done():
			return
		case e = <-events:
		}
		if e == nil {
			return // the subscription ended
		}
		if e.Job == nil || e.JobStats == nil {
			continue
		}
		outcome := string(e.Kind)[len("job_"):]
		m.Histogram("keyworker_job_run_seconds", "River job attempts' run time by job kind and outcome (completed, failed, cancelled, snoozed).", nil,
			"kind", e.Job.Kind, "outcome", outcome).ObserveDuration(e.JobStats.RunDuration)
		m.Histogram("keyworker_job_queue_wait_seconds", "How long River jobs waited, ready to run, for a worker, by job kind.", nil,
			"kind", e.Job.Kind).ObserveDuration(e.JobStats.QueueWaitDuration)
		if e.Kind != river.EventKindJobCompleted {
			continue
		}
		var size int
		switch e.Job.Kind {
		case jobs.KindCreateKeys:
			var a jobs.CreateKeysArgs
			if json.Unmarshal(e.Job.EncodedArgs, &a) != nil {
				continue
			}
			size = len(a.UserIDs)
		case jobs.KindDeliverNotices, jobs.KindDeliverLifecycleNotices:
			// Both kinds' args have key_ids.
			var a jobs.DeliverNoticesArgs
			if json.Unmarshal(e.Job.EncodedArgs, &a) != nil {
				continue
			}
			size = len(a.KeyIDs)
		default:
			continue
		}
		m.Histogram("keyworker_job_batch_size", "Users per completed create-keys job and keys per completed deliver-notices job, by job kind.", batchSizeBuckets,
			"kind", e.Job.Kind).Observe(float64(size))
	}
}

// metricsQueryTimeout bounds the database queries of one scrape; past it
// they are cancelled (on the server too) and the gauges keep their last
// values.
const metricsQueryTimeout = 3 * time.Second

// dbStats are the series a scrape reads from the database.
type dbStats struct {
	depth map[string]float64 // nil when the query failed
	lag   *int64
	// retained is the WAL the slot keeps on the server's disk (from its
	// restart_lsn).
	retained *int64
	age      *float64
	// oldestAvailable is the wait in seconds of the oldest available job.
	oldestAvailable float64
	// outbox is listen mode's outbox depth.
	outbox *int64
}

// statsCache holds the last dbStats for a while, so scrapes cost the
// database at most one round of queries per TTL whatever their rate, and
// concurrent scrapes wait for the one round in flight instead of starting
// their own. A failed round is kept too: a slow database is not asked again
// by every waiting scrape.
type statsCache struct {
	mu sync.Mutex
	at time.Time
	v  dbStats
}

func (c *statsCache) get(ctx context.Context, ttl time.Duration, query func(context.Context) dbStats) dbStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < ttl {
		return c.v
	}
	// Not the scrape's own context: other scrapes share the answer.
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), metricsQueryTimeout)
	defer cancel()
	c.v, c.at = query(qctx), time.Now()
	return c.v
}

// queryStats reads the queue depth by state and the oldest available job's
// wait (one scan of river_job) and, in logical mode, the slot's lag and the
// checkpoint's age.
func (d *Daemon) queryStats(ctx context.Context) dbStats {
	var out dbStats
	q := newQueries(d.cfg.Schema)
	rows, err := d.pool.Query(ctx, q.queueStats)
	if err == nil {
		depth := map[string]float64{}
		for rows.Next() {
			var s string
			var n int64
			var oldest float64
			if err = rows.Scan(&s, &n, &oldest); err != nil {
				break
			}
			depth[s] = float64(n)
			if s == "available" {
				out.oldestAvailable = oldest
			}
		}
		rows.Close()
		if err = cmp.Or(err, rows.Err()); err == nil {
			out.depth = depth
		}
	}
	if err != nil {
		d.log.Warn("reading the queue depth for /metrics failed; its gauges keep their last values", "component", "metrics", "error", err)
	}
	if d.Capture().Mode == ModeLogical {
		slot := d.SourceStatus().Slot
		_ = d.pool.QueryRow(ctx, q.slotLag, slot).Scan(&out.lag, &out.retained)
		_ = d.pool.QueryRow(ctx, q.checkpointAge, slot).Scan(&out.age)
	} else {
		_ = d.pool.QueryRow(ctx, q.outboxCount).Scan(&out.outbox)
	}
	return out
}
