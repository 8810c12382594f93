package listener

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/internal/pgerr"
	"github.com/keyworker/keyworker/users"
)

// Names of listen mode's database objects.
const (
	// TriggerName is the statement-level AFTER INSERT trigger listen mode
	// puts on the users table.
	TriggerName = "keyworker_notify_signup"
	// TriggerFunction is the trigger's function, in keyworker's schema.
	TriggerFunction = "notify_signup"
	// transitionTable names the trigger's table of inserted rows.
	transitionTable = "keyworker_new_users"
)

// Listen reads signups from an outbox table that a trigger on the users
// table fills in each signup's transaction, woken by NOTIFY and polling
// every PollInterval. Signups made while it is down wait in the outbox.
// On start, and when asked (Reconcile), it enqueues a Reconcile job for
// signups the outbox never saw. Its methods are safe for concurrent use.
type Listen struct {
	cfg Config
	log *slog.Logger
	st  tracker

	lc lifecycle
	// pool, installedAt and drain are set by Start before the background
	// work starts, and only read after.
	pool        *pgxpool.Pool
	installedAt time.Time
	drain       *outboxDrain
	// reconcileReq carries the reason for the next Reconcile job.
	reconcileReq chan string
}

// NewListen checks cfg and returns a source that has not started.
func NewListen(cfg Config) (*Listen, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	l := &Listen{
		cfg:          cfg,
		log:          cfg.Logger.With("component", "listener", "mode", "listen", "channel", cfg.Channel),
		reconcileReq: make(chan string, 1),
	}
	l.st.s = Status{Mode: "listen", Role: RoleIdle, Channel: cfg.Channel}
	l.lc = lifecycle{what: "listen listener", st: &l.st}
	return l, nil
}

// Start runs the preflight (not a transaction pooler, the users table,
// keyworker's schema and outbox, privileges), installs the trigger
// function and, when this role may, the trigger, drops logical mode's slot
// if nobody streams from it, then listens and drains the outbox in a
// background goroutine until Stop is called or ctx ends. It returns a
// *PreflightError (matching one of the Err* sentinels) when a precondition
// fails; ErrNoTrigger carries the statement the table's owner must run. A
// Stop while Start runs cancels it: Start then returns an error.
func (l *Listen) Start(ctx context.Context) error {
	ctx, err := l.lc.begin(ctx)
	if err != nil {
		return err
	}
	if err := l.prepare(ctx); err != nil {
		return l.lc.abort(err)
	}
	if err := l.lc.launch(l.listenLoop); err != nil {
		return err
	}
	l.log.Info("listen listener started", "table", l.cfg.Table.String(), "since", l.installedAt)
	return nil
}

// prepare is Start's work before listening: the preflight, the trigger
// and dropping logical mode's idle slot. It runs without any lock held.
func (l *Listen) prepare(ctx context.Context) error {
	if p := classifyPooler(l.cfg.ConnString); p.kind == transactionPooler {
		return poolerError(p, ModeListen, nil)
	}
	pool, err := l.lc.openPool(ctx, l.cfg)
	if err != nil {
		return err
	}
	l.pool = pool
	if err := l.preflight(ctx); err != nil {
		return err
	}
	dropIdleSlot(ctx, l.pool, l.cfg.SlotName, l.log)
	l.drain = newOutboxDrain(l.pool, l.cfg, l.handedOff)
	signalReason(l.reconcileReq, "listen mode started")
	return nil
}

// Stop stops listening and draining and closes the connections. It is
// idempotent and safe to call before Start and while Start runs.
func (l *Listen) Stop() { l.lc.stop() }

// Run is Start, then waiting for ctx to end, then Stop. It returns Start's
// error, or nil.
func (l *Listen) Run(ctx context.Context) error { return runSource(ctx, l) }

// Status returns a snapshot. It is cheap and safe to call at any time.
func (l *Listen) Status() Status { return l.st.snapshot() }

// Reconcile asks for a Reconcile job after the next drain of the outbox
// (within PollInterval): a reconcile finds the users without a key that
// the outbox never carried.
func (l *Listen) Reconcile() { signalReason(l.reconcileReq, "requested") }

// signalReason sends reason on c unless a reason is already waiting.
func signalReason(c chan string, reason string) {
	select {
	case c <- reason:
	default:
	}
}

func (l *Listen) preflight(ctx context.Context) error {
	if err := l.pool.Ping(ctx); err != nil {
		return fmt.Errorf("connecting to the database: %w", err)
	}
	t := l.cfg.Table
	if err := t.Check(ctx, l.pool); err != nil {
		return fmt.Errorf("checking the users table: %w", err)
	}
	if err := checkMigrated(ctx, l.pool, l.cfg.Schema, "installation", "SELECT"); err != nil {
		return err
	}
	if err := checkMigrated(ctx, l.pool, l.cfg.Schema, "api_keys", "SELECT"); err != nil {
		return err
	}
	if err := checkMigrated(ctx, l.pool, l.cfg.Schema, OutboxTable, "SELECT, INSERT, DELETE"); err != nil {
		return err
	}
	var canRead bool
	var user, owner string
	if err := l.pool.QueryRow(ctx, tablePrivilegeSQL, t.Ident()).Scan(&canRead, &user, &owner); err != nil {
		return fmt.Errorf("checking privileges on %s: %w", t, err)
	}
	if !canRead {
		q, err := quoteIdents(ctx, l.pool, t.Schema, t.Name, user)
		if err != nil {
			return err
		}
		return &PreflightError{Kind: ErrNoPrivilege,
			Detail:     fmt.Sprintf("role %s may not read %s, which the reconcile does", user, t),
			Fix:        fmt.Sprintf("have %s (the table's owner) run", owner),
			Statements: []string{fmt.Sprintf("GRANT SELECT ON %s.%s TO %s;", q[0], q[1], q[2])}}
	}
	at, err := users.InstalledAt(ctx, l.pool, l.cfg.Schema)
	if err != nil {
		return err
	}
	l.installedAt = at
	return l.ensureTrigger(ctx, user, owner)
}

func (l *Listen) ensureTrigger(ctx context.Context, user, owner string) error {
	t := l.cfg.Table
	fn := pgx.Identifier{l.cfg.Schema, TriggerFunction}.Sanitize()
	body := l.functionBody()
	if err := replaceFunction(ctx, l.pool, fn, body); err != nil {
		if pgerr.Code(err) == pgerrcode.InsufficientPrivilege {
			return &PreflightError{Kind: ErrNoPrivilege, Detail: fmt.Sprintf("role %s may not create or replace %s", user, fn),
				Fix: "run the worker as the role that ran `worker migrate` (it owns the schema)", Cause: err}
		}
		return err
	}
	var fnOK bool
	var enabled string
	err := l.pool.QueryRow(ctx, triggerSQL, t.Ident(), TriggerName, fn+"()").Scan(&fnOK, &enabled)
	q, qerr := quoteIdents(ctx, l.pool, t.Schema, t.Name, TriggerName, user, l.cfg.Schema, TriggerFunction)
	if qerr != nil {
		return qerr
	}
	table := q[0] + "." + q[1]
	switch {
	case err == nil && fnOK && enabled != "D":
		return nil
	case err == nil && !fnOK:
		return &PreflightError{Kind: ErrNoTrigger, Detail: fmt.Sprintf("a trigger named %s on %s calls another function", TriggerName, t),
			Fix: fmt.Sprintf("have %s drop it, then start again", owner), Statements: []string{fmt.Sprintf("DROP TRIGGER %s ON %s;", q[2], table)}}
	case err == nil:
		return &PreflightError{Kind: ErrNoTrigger, Detail: fmt.Sprintf("trigger %s on %s is disabled", TriggerName, t),
			Fix: fmt.Sprintf("have %s enable it", owner), Statements: []string{fmt.Sprintf("ALTER TABLE %s ENABLE TRIGGER %s;", table, q[2])}}
	case !errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("looking up trigger %s: %w", TriggerName, err)
	}
	create := createTriggerSQL(q[2], table, q[4], q[5])
	_, err = l.pool.Exec(ctx, strings.TrimSuffix(create, ";"))
	switch {
	case err == nil:
		l.log.Info("signup trigger created", "table", t.String(), "trigger", TriggerName)
		return nil
	case pgerr.Code(err) == pgerrcode.DuplicateObject:
		return l.ensureTrigger(ctx, user, owner)
	case pgerr.Code(err) != pgerrcode.InsufficientPrivilege:
		return fmt.Errorf("creating trigger %s on %s: %w", TriggerName, t, err)
	}
	// The owner creates the trigger; it needs to reach our function for
	// that (not when it fires). Granting it is all this role can do.
	qo, qerr := quoteIdents(ctx, l.pool, owner)
	if qerr != nil {
		return qerr
	}
	if _, gerr := l.pool.Exec(ctx, grantTriggerFunctionSQL(l.cfg.Schema, fn, qo[0])); gerr != nil {
		l.log.Warn("granting the table owner access to the trigger function", "owner", owner, "error", gerr)
	}
	return &PreflightError{Kind: ErrNoTrigger,
		Detail: fmt.Sprintf("trigger %s on %s does not exist and role %s may not create it", TriggerName, t, user),
		Fix: fmt.Sprintf("have %s (the table's owner) run the first statement once, e.g. with psql connected as %s; or have it run the second, and keyworker creates the trigger itself",
			owner, owner),
		Statements: []string{create, fmt.Sprintf("GRANT TRIGGER ON %s TO %s;", table, q[3])},
		Cause:      err}
}

func (l *Listen) listenLoop(ctx context.Context) {
	bo := newBackoff(l.cfg.BackoffMin, l.cfg.BackoffMax)
	for {
		connected, err := l.listenSession(ctx)
		if ctx.Err() != nil {
			return
		}
		if connected {
			bo.reset()
			l.st.update(func(s *Status) { s.Reconnects++ })
		}
		l.st.setRole(RoleReconnecting)
		l.st.fail(err)
		wait := bo.next()
		l.log.Warn("listen connection lost; reconnecting", "error", err, "retry_in", wait)
		if sleep(ctx, wait) != nil {
			return
		}
	}
}

// listenSession holds one LISTEN connection until it fails or ctx ends.
// It drains the outbox on connecting, on every notification, a few times
// shortly after a drain that found signups (see followUps), and every
// PollInterval.
func (l *Listen) listenSession(ctx context.Context) (connected bool, err error) {
	cfg, err := pgconn.ParseConfig(l.cfg.ConnString)
	if err != nil {
		return false, fmt.Errorf("parsing the connection string: %w", err)
	}
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > l.cfg.ConnectTimeout {
		cfg.ConnectTimeout = l.cfg.ConnectTimeout
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "keyworker"
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, fmt.Errorf("connecting to listen: %w", err)
	}
	defer closeConn(conn)
	if _, err := conn.Exec(ctx, listenSQL(l.cfg.Channel)).ReadAll(); err != nil {
		return false, fmt.Errorf("listening on %s: %w", l.cfg.Channel, err)
	}
	l.st.setRole(RoleListening)
	// Listening first, then draining: a signup committed before LISTEN took
	// effect is in the outbox, one after it wakes us.
	quiet := len(followUps) // drains in a row that found nothing
	for {
		took, err := l.drain.run(ctx)
		if err != nil {
			return true, err
		}
		now := time.Now()
		l.st.update(func(s *Status) { s.Drains++; s.LastDrainAt = now })
		select {
		case reason := <-l.reconcileReq:
			if err := l.reconcile(ctx, reason); err != nil {
				signalReason(l.reconcileReq, reason)
				return true, err
			}
		default:
		}
		if took > 0 {
			quiet = 0
		} else if quiet < len(followUps) {
			quiet++
		}
		wait := l.cfg.PollInterval
		if quiet < len(followUps) {
			wait = min(wait, followUps[quiet])
		}
		gather := min(max(l.cfg.BatchMaxWait, time.Duration(took)*gatherPerSignup), maxGather)
		if err := l.wait(ctx, conn, wait, gather); err != nil {
			return true, err
		}
		if ctx.Err() != nil {
			return true, ctx.Err()
		}
	}
}

// followUps are how soon the listener looks in the outbox again after a
// drain that found signups, then after each look that found none, before
// it falls back to PollInterval: for signups whose transaction skipped
// notifying (another one was) and committed after that one's drain.
var followUps = []time.Duration{20 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond}

// After a wake-up the listener gathers signups for gatherPerSignup times
// the size of the last drain (at least BatchMaxWait, at most maxGather)
// before it drains again. Below 1,000 signups/s drains stay small and the
// wait is BatchMaxWait; above it the wait grows to maxGather, and fewer,
// larger create-keys jobs cost the database about half as much per key
// (BenchmarkCreateSignupKeys: 1000 users a batch against 100), which
// leaves more of the machine to the signups.
const (
	gatherPerSignup = time.Millisecond
	maxGather       = 200 * time.Millisecond
)

// wait waits up to d for a notification (any: they are wake-ups), then,
// when one came, gather more for the signups committing with it, so they
// are handed off together. It returns nil on a notification or a timeout.
func (l *Listen) wait(ctx context.Context, conn *pgconn.PgConn, d, gather time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, d)
	err := conn.WaitForNotification(wctx)
	cancel()
	if err == nil {
		gather, cancel := context.WithTimeout(ctx, gather)
		for err == nil {
			err = conn.WaitForNotification(gather)
		}
		cancel()
	}
	if err == nil || pgconn.Timeout(err) && ctx.Err() == nil {
		return nil
	}
	return fmt.Errorf("waiting for notifications: %w", err)
}

// reconcile enqueues a Reconcile job: the last guarantee, for signups the
// outbox never saw (made before the trigger existed, or while it was
// disabled, or when its insert failed and was swallowed).
func (l *Listen) reconcile(ctx context.Context, reason string) error {
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.HandOffTimeout)
	defer cancel()
	if err := pgx.BeginFunc(hctx, l.pool, func(tx pgx.Tx) error {
		return l.cfg.Enqueuer.EnqueueReconcileTx(hctx, tx, reason)
	}); err != nil {
		return err
	}
	l.st.update(func(s *Status) { s.Reconciles++ })
	l.log.Info("reconcile enqueued", "reason", reason)
	return nil
}

// handedOff records a committed hand-off from the outbox.
func (l *Listen) handedOff(signups []users.Signup, enqueued int, took time.Duration) {
	now := time.Now()
	var last time.Time
	for _, s := range signups {
		if s.CreatedAt.After(last) {
			last = s.CreatedAt
		}
	}
	b := Batch{Signups: len(signups), Enqueued: enqueued, Duration: took, CommittedAt: now}
	l.st.update(func(s *Status) {
		s.Signups += uint64(len(signups))
		s.Enqueued += uint64(enqueued)
		s.Batches++
		s.LastBatch = b
		s.LastSignupAt = last
	})
	if l.cfg.OnBatch != nil {
		l.cfg.OnBatch(b)
	}
}
