package listener

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/internal/pgerr"
)

// Logical reads signups from a logical replication slot (pgoutput) and hands
// them off to the Enqueuer. See the package documentation for the flow and
// the exactly-once argument. Its methods are safe for concurrent use.
type Logical struct {
	cfg   Config
	log   *slog.Logger
	ckSQL checkpointSQL
	st    tracker

	lc lifecycle
	// pool and facts are set by Start before the background work starts,
	// and only read after.
	pool  *pgxpool.Pool
	facts serverFacts

	// afterCommit, when set (by tests), runs after each hand-off commits
	// and before its position is published; returning true simulates a
	// crash there: nothing more is acknowledged and the source stops.
	afterCommit func(pglogrepl.LSN) bool
	// startAtSlot (tests) starts replication at the slot's confirmed
	// position instead of the checkpoint, so the server resends what the
	// checkpoint already covers.
	startAtSlot bool
}

// errCrashed ends a session that a test made crash.
var errCrashed = errors.New("simulated crash between commit and acknowledgement")

// NewLogical checks cfg and returns a source that has not started.
func NewLogical(cfg Config) (*Logical, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	l := &Logical{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "listener", "mode", "logical", "slot", cfg.SlotName),
		ckSQL: newCheckpointSQL(cfg.Schema),
	}
	l.st.s = Status{Mode: "logical", Role: RoleIdle, Slot: cfg.SlotName, Publication: cfg.PublicationName}
	l.lc = lifecycle{what: "logical listener", st: &l.st}
	return l, nil
}

// Start runs the preflight (server settings, privileges, the users table,
// the publication, the slot, a replication handshake), creating the
// publication and the slot when they are missing and this role may, then
// streams in background goroutines until Stop is called or ctx ends. It
// returns a *PreflightError (matching one of the Err* sentinels) when a
// precondition fails. Errors after Start are retried with backoff and
// reported through Status. A Stop while Start runs cancels it: Start then
// returns an error.
func (l *Logical) Start(ctx context.Context) error {
	ctx, err := l.lc.begin(ctx)
	if err != nil {
		return err
	}
	start, err := l.prepare(ctx)
	if err != nil {
		return l.lc.abort(err)
	}
	if err := l.lc.launch(l.run); err != nil {
		return err
	}
	l.log.Info("logical listener started", "publication", l.cfg.PublicationName, "table", l.cfg.Table.String(), "checkpoint", start.checkpoint.String())
	return nil
}

// prepare is Start's work before streaming: the preflight, the slot and
// retiring listen mode's outbox. It runs without any lock held.
func (l *Logical) prepare(ctx context.Context) (slotStart, error) {
	if err := CheckDirect(l.cfg.ConnString, ModeLogical); err != nil {
		return slotStart{}, err
	}
	pool, err := l.lc.openPool(ctx, l.cfg)
	if err != nil {
		return slotStart{}, err
	}
	l.pool = pool
	if err := l.pool.Ping(ctx); err != nil {
		return slotStart{}, fmt.Errorf("connecting to the database: %w", err)
	}
	if err := l.preflight(ctx); err != nil {
		return slotStart{}, err
	}
	if timeout := time.Duration(l.facts.walSenderTimeout) * time.Millisecond; timeout > 0 && l.cfg.StatusInterval > timeout/3 {
		// The server drops a client silent for wal_sender_timeout.
		l.cfg.StatusInterval = max(timeout/3, MinStatusInterval)
	}
	start, err := l.ensureSlot(ctx)
	if err != nil {
		return slotStart{}, err
	}
	l.st.update(func(s *Status) { s.Checkpoint = start.checkpoint; s.Confirmed = start.confirmed })
	// The slot exists: every signup from here on reaches the stream, so
	// listen mode's outbox (if an earlier run used it) can be emptied.
	if err := retireOutbox(ctx, l.pool, l.cfg, l.log); err != nil {
		return slotStart{}, err
	}
	return start, nil
}

// Stop stops streaming: the hand-off in flight finishes (within
// HandOffTimeout), the last committed position is acknowledged to the
// server, and the connections close. It is idempotent and safe to call
// before Start and while Start runs.
func (l *Logical) Stop() { l.lc.stop() }

// Run is Start, then waiting for ctx to end, then Stop. It returns Start's
// error, or nil.
func (l *Logical) Run(ctx context.Context) error { return runSource(ctx, l) }

// Status returns a snapshot. It is cheap and safe to call at any time.
func (l *Logical) Status() Status { return l.st.snapshot() }

// run keeps a session going until ctx ends.
func (l *Logical) run(ctx context.Context) {
	bo := newBackoff(l.cfg.BackoffMin, l.cfg.BackoffMax)
	standby := false
	for {
		res, err := l.session(ctx)
		if ctx.Err() != nil || errors.Is(err, errCrashed) {
			return
		}
		if res.streamed {
			standby = false
			l.st.update(func(s *Status) { s.Reconnects++ })
		}
		if res.progressed {
			// Backoff grows only while sessions fail without getting work
			// done.
			bo.reset()
		}
		if pgerr.Code(err) == pgerrcode.ObjectInUse {
			l.st.setRole(RoleStandby)
			if !standby {
				l.log.Info("another replica holds the replication slot: waiting as a standby to take it over", "error", err)
				standby = true
			}
			if err := l.waitSlotFree(ctx); err != nil && ctx.Err() == nil {
				l.st.fail(err)
				l.log.Warn("checking whether the replication slot is free", "error", err)
				_ = sleep(ctx, bo.next())
			}
			continue
		}
		l.st.setRole(RoleReconnecting)
		l.st.fail(err)
		wait := bo.next()
		var pf *PreflightError
		if errors.As(err, &pf) {
			l.log.Error("replication cannot continue until this is fixed; retrying", "error", err, "retry_in", wait)
		} else {
			l.log.Warn("replication interrupted; reconnecting", "error", err, "retry_in", wait)
		}
		if sleep(ctx, wait) != nil {
			return
		}
	}
}

// sessionResult says how far a session got.
type sessionResult struct {
	// streamed: START_REPLICATION succeeded.
	streamed bool
	// progressed: at least one hand-off committed.
	progressed bool
}

// session sets up one replication connection and streams on it until it
// fails or ctx ends.
func (l *Logical) session(ctx context.Context) (sessionResult, error) {
	start, err := l.ensureSlot(ctx)
	if err != nil {
		return sessionResult{}, err
	}
	if err := l.ensurePublication(ctx); err != nil {
		return sessionResult{}, err
	}
	conn, err := l.connectReplication(ctx)
	if err != nil {
		return sessionResult{}, err
	}
	defer closeConn(conn)
	opts := pglogrepl.StartReplicationOptions{PluginArgs: []string{
		"proto_version '1'",
		"publication_names '" + l.cfg.PublicationName + "'",
	}}
	// Our checkpoint, never IDENTIFY_SYSTEM's position: the server starts at
	// the later of it and the slot's confirmed position.
	from := start.checkpoint
	if l.startAtSlot {
		from = 0
	}
	if err := pglogrepl.StartReplication(ctx, conn, l.cfg.SlotName, from, opts); err != nil {
		return sessionResult{}, fmt.Errorf("starting replication on slot %s at %s: %w", l.cfg.SlotName, start.checkpoint, err)
	}
	wasStandby := l.st.role() == RoleStandby
	l.st.setRole(RoleStreaming)
	if wasStandby {
		l.log.Info("took over the replication slot", "checkpoint", start.checkpoint.String())
	}
	l.log.Debug("streaming", "checkpoint", start.checkpoint.String(), "confirmed", start.confirmed.String())
	s := newStream(l, conn, start)
	err = s.run(ctx)
	return sessionResult{streamed: true, progressed: s.progressed.Load()}, err
}
