package listener

import (
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
)

// Role is what a source is doing.
type Role string

// Roles.
const (
	// RoleIdle: not started yet.
	RoleIdle Role = "idle"
	// RoleStreaming: logical mode holds the slot and streams.
	RoleStreaming Role = "streaming"
	// RoleStandby: another replica holds the slot; this one waits to take
	// it over.
	RoleStandby Role = "standby"
	// RoleListening: listen mode is connected and listening.
	RoleListening Role = "listening"
	// RoleReconnecting: the connection was lost (or never made) and is being
	// retried with backoff.
	RoleReconnecting Role = "reconnecting"
	// RoleStopped: Stop was called, or the context given to Start ended.
	RoleStopped Role = "stopped"
)

// Status is a snapshot of a source for health checks, metrics and
// `worker status`. Counters count since Start.
type Status struct {
	// Mode is "logical" or "listen".
	Mode string
	Role Role
	// Slot and Publication are logical mode's; Channel is listen mode's.
	Slot, Publication, Channel string
	// Checkpoint is the end LSN of the last replication transaction whose
	// signups are committed as jobs (logical mode).
	Checkpoint pglogrepl.LSN
	// Confirmed is the position last confirmed to the server (logical
	// mode). It may pass Checkpoint when the users table is quiet.
	Confirmed pglogrepl.LSN
	// Signups counts signups handed to the Enqueuer; Enqueued how many of
	// them it reported as new.
	Signups, Enqueued uint64
	// Filtered counts anonymous signups left out.
	Filtered uint64
	// Replays counts replication transactions skipped because the
	// checkpoint already covered them.
	Replays uint64
	// Batches counts committed hand-off transactions.
	Batches uint64
	// LastSignupAt is the source commit time of the last signup handed off.
	LastSignupAt time.Time
	// LastBatch describes the last committed hand-off.
	LastBatch Batch
	// Reconnects counts connections lost and made again.
	Reconnects uint64
	// SlotsCreated counts replication slots this process created (first
	// start, or a lost slot recreated); Reconciles the reconciles it
	// enqueued.
	SlotsCreated, Reconciles uint64
	// Drains counts listen mode's completed looks into the outbox (each
	// empties it, a hand-off transaction per BatchMaxRows signups);
	// LastDrainAt is when the last one finished.
	Drains      uint64
	LastDrainAt time.Time
	// LastError is the last error met, and when; empty when none.
	LastError   string
	LastErrorAt time.Time
}

// Batch describes one committed hand-off transaction.
type Batch struct {
	// Transactions is the number of replication transactions in it (logical
	// mode), or 0.
	Transactions int
	// Signups handed to the Enqueuer; Enqueued how many it reported new.
	Signups, Enqueued int
	// LSN is the checkpoint it moved to (logical mode).
	LSN pglogrepl.LSN
	// Duration is the hand-off transaction's time, BEGIN to COMMIT.
	Duration time.Duration
	// CommittedAt is when the hand-off committed.
	CommittedAt time.Time
	// SourceCommits holds the commit time of each replication transaction
	// in the batch, in order (logical mode): CommittedAt minus one of them is
	// that signup's commit-to-job latency.
	SourceCommits []time.Time
}

// tracker holds a Status behind a mutex.
type tracker struct {
	mu sync.Mutex
	s  Status
}

func (t *tracker) snapshot() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.s
	s.LastBatch.SourceCommits = nil
	return s
}

func (t *tracker) update(f func(*Status)) {
	t.mu.Lock()
	f(&t.s)
	t.mu.Unlock()
}

func (t *tracker) setRole(r Role) {
	t.update(func(s *Status) {
		if s.Role != RoleStopped {
			s.Role = r
		}
	})
}

func (t *tracker) role() Role {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.s.Role
}

func (t *tracker) fail(err error) {
	now := time.Now()
	t.update(func(s *Status) {
		s.LastError = err.Error()
		s.LastErrorAt = now
	})
}
