package listener

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

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

// Listen reads signups from NOTIFY, sent by a trigger on the users table,
// and, as the guarantee, from catch-up scans of the users table on every
// (re)connect and every CatchUpInterval. Its methods are safe for
// concurrent use.
type Listen struct {
	cfg Config
	log *slog.Logger
	st  tracker

	mu          sync.Mutex
	started     bool
	stopped     bool
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	pool        *pgxpool.Pool
	ownPool     bool
	installedAt time.Time
	catchUpReq  chan struct{}
}

// NewListen checks cfg and returns a source that has not started.
func NewListen(cfg Config) (*Listen, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	l := &Listen{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "listener", "mode", "listen", "channel", cfg.Channel),
		catchUpReq: make(chan struct{}, 1),
	}
	l.st.s = Status{Mode: "listen", Role: RoleIdle, Channel: cfg.Channel}
	return l, nil
}

// Start runs the preflight (not a pooler, the users table, keyworker's
// schema, privileges), installs the trigger function and, when this role
// may, the trigger, then listens and catches up in background goroutines
// until Stop is called or ctx ends. It returns a *PreflightError (matching
// one of the Err* sentinels) when a precondition fails; ErrNoTrigger
// carries the statement the table's owner must run.
func (l *Listen) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started || l.stopped {
		return errors.New("starting the listen listener: it was already started or stopped")
	}
	if reason := poolerReason(l.cfg.ConnString); reason != "" {
		return poolerError(reason, nil)
	}
	l.pool = l.cfg.Pool
	if l.pool == nil {
		pool, err := pgxpool.New(ctx, l.cfg.ConnString)
		if err != nil {
			return fmt.Errorf("opening a pool: %w", err)
		}
		l.pool, l.ownPool = pool, true
	}
	if err := l.preflight(ctx); err != nil {
		if l.ownPool {
			l.pool.Close()
		}
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	l.cancel = cancel
	l.started = true
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		l.listenLoop(runCtx)
	}()
	go func() {
		defer l.wg.Done()
		l.catchUpLoop(runCtx)
	}()
	go func() {
		<-runCtx.Done()
		l.wg.Wait()
		l.st.setRole(RoleStopped)
	}()
	l.log.Info("listen listener started", "table", l.cfg.Table.String(), "since", l.installedAt)
	return nil
}

// Stop stops listening and catching up and closes the connections. It is
// idempotent and safe to call before Start.
func (l *Listen) Stop() {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return
	}
	l.stopped = true
	started := l.started
	l.mu.Unlock()
	if started {
		l.cancel()
		l.wg.Wait()
		if l.ownPool {
			l.pool.Close()
		}
	}
	l.st.update(func(s *Status) { s.Role = RoleStopped })
}

// Run is Start, then waiting for ctx to end, then Stop. It returns Start's
// error, or nil.
func (l *Listen) Run(ctx context.Context) error {
	if err := l.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	l.Stop()
	return nil
}

// Status returns a snapshot. It is cheap and safe to call at any time.
func (l *Listen) Status() Status { return l.st.snapshot() }

// CatchUp asks for a catch-up scan now (it runs in the background). It is
// what a reconcile request looks like in listen mode.
func (l *Listen) CatchUp() { signal(l.catchUpReq) }

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
	var canRead bool
	var user, owner string
	if err := l.pool.QueryRow(ctx, `SELECT has_table_privilege(to_regclass($1), 'SELECT'), current_user::text,
		pg_get_userbyid(c.relowner)::text FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1)`, t.Ident()).Scan(&canRead, &user, &owner); err != nil {
		return fmt.Errorf("checking privileges on %s: %w", t, err)
	}
	if !canRead {
		q, err := quoteIdents(ctx, l.pool, t.Schema, t.Name, user)
		if err != nil {
			return err
		}
		return &PreflightError{Kind: ErrNoPrivilege,
			Detail:     fmt.Sprintf("role %s may not read %s, which the catch-up scan does", user, t),
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

// functionBody is the trigger function: one pg_notify per inserted
// permanent user, and nothing that can fail a signup. It runs once per
// INSERT statement, not per row, so a bulk insert pays for one exception
// block (a subtransaction), not one per row.
func (l *Listen) functionBody() string {
	t := l.cfg.Table
	where := ""
	if t.Anonymous() != "" && !l.cfg.IncludeAnonymous {
		where = " WHERE NOT coalesce(n." + users.Col(t.Anonymous()) + ", false)"
	}
	return `
DECLARE
	r record;
BEGIN
	FOR r IN SELECT n.` + users.Col(t.IDColumn) + `::text AS id FROM ` + transitionTable + ` n` + where + ` LOOP
		PERFORM pg_catalog.pg_notify('` + l.cfg.Channel + `', r.id);
	END LOOP;
	RETURN NULL;
EXCEPTION WHEN others THEN
	-- A signup must never fail because of keyworker: the catch-up scan
	-- finds what this missed.
	RETURN NULL;
END
`
}

func (l *Listen) ensureTrigger(ctx context.Context, user, owner string) error {
	t := l.cfg.Table
	fn := pgx.Identifier{l.cfg.Schema, TriggerFunction}.Sanitize()
	body := l.functionBody()
	var current *string
	if err := l.pool.QueryRow(ctx, `SELECT p.prosrc FROM pg_catalog.pg_proc p WHERE p.oid = to_regprocedure($1)`, fn+"()").Scan(&current); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("looking up %s: %w", fn, err)
	}
	if current == nil || *current != body {
		_, err := l.pool.Exec(ctx, `CREATE OR REPLACE FUNCTION `+fn+`() RETURNS trigger
			LANGUAGE plpgsql SET search_path = '' AS $kw$`+body+`$kw$`)
		if err != nil {
			if sqlState(err) == pgerrcode.InsufficientPrivilege {
				return &PreflightError{Kind: ErrNoPrivilege, Detail: fmt.Sprintf("role %s may not create or replace %s", user, fn),
					Fix: "run the worker as the role that ran `worker migrate` (it owns the schema)", Cause: err}
			}
			return fmt.Errorf("creating %s: %w", fn, err)
		}
	}
	var fnOK bool
	var enabled string
	err := l.pool.QueryRow(ctx, `SELECT tg.tgfoid = to_regprocedure($3)::oid, tg.tgenabled::text FROM pg_catalog.pg_trigger tg
		WHERE tg.tgrelid = to_regclass($1) AND tg.tgname = $2`, t.Ident(), TriggerName, fn+"()").Scan(&fnOK, &enabled)
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
	create := fmt.Sprintf("CREATE TRIGGER %s AFTER INSERT ON %s REFERENCING NEW TABLE AS %s FOR EACH STATEMENT EXECUTE FUNCTION %s.%s();",
		q[2], table, transitionTable, q[4], q[5])
	_, err = l.pool.Exec(ctx, strings.TrimSuffix(create, ";"))
	switch {
	case err == nil:
		l.log.Info("signup trigger created", "table", t.String(), "trigger", TriggerName)
		return nil
	case sqlState(err) == pgerrcode.DuplicateObject:
		return l.ensureTrigger(ctx, user, owner)
	case sqlState(err) != pgerrcode.InsufficientPrivilege:
		return fmt.Errorf("creating trigger %s on %s: %w", TriggerName, t, err)
	}
	// The owner creates the trigger; it needs to reach our function for
	// that (not when it fires). Granting it is all this role can do.
	qo, qerr := quoteIdents(ctx, l.pool, owner)
	if qerr != nil {
		return qerr
	}
	if _, gerr := l.pool.Exec(ctx, `GRANT USAGE ON SCHEMA `+pgx.Identifier{l.cfg.Schema}.Sanitize()+` TO `+qo[0]+`;
		GRANT EXECUTE ON FUNCTION `+fn+`() TO `+qo[0]); gerr != nil {
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
	var pending []string
	cfg.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) {
		if n.Channel == l.cfg.Channel {
			pending = append(pending, n.Payload)
		}
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, fmt.Errorf("connecting to listen: %w", err)
	}
	defer closeConn(conn)
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{l.cfg.Channel}.Sanitize()).ReadAll(); err != nil {
		return false, fmt.Errorf("listening on %s: %w", l.cfg.Channel, err)
	}
	l.st.setRole(RoleListening)
	// Listening first, then scanning: a signup committed before LISTEN took
	// effect is found by the scan, one after it is notified.
	l.CatchUp()
	for {
		if len(pending) == 0 {
			if err := conn.WaitForNotification(ctx); err != nil {
				return true, fmt.Errorf("waiting for notifications: %w", err)
			}
		}
		// Wait a little for more, to enqueue them together.
		deadline := time.Now().Add(l.cfg.BatchMaxWait)
		for len(pending) < l.cfg.BatchMaxRows {
			wctx, cancel := context.WithDeadline(ctx, deadline)
			err := conn.WaitForNotification(wctx)
			cancel()
			if err == nil {
				continue
			}
			if pgconn.Timeout(err) {
				break
			}
			return true, fmt.Errorf("waiting for notifications: %w", err)
		}
		n := min(len(pending), l.cfg.BatchMaxRows)
		batch := pending[:n:n]
		pending = pending[n:]
		if err := l.enqueueNotified(ctx, batch); err != nil {
			// Notifications are hints: the catch-up scan finds these users.
			l.st.fail(err)
			l.log.Warn("enqueuing notified signups failed; a catch-up scan will find them", "error", err, "signups", len(batch))
			l.CatchUp()
		}
	}
}

func (l *Listen) enqueueNotified(ctx context.Context, payloads []string) error {
	signups := make([]Signup, 0, len(payloads))
	for _, p := range payloads {
		var id pgtype.UUID
		if err := id.Scan(p); err != nil || !id.Valid {
			l.log.Warn("ignoring a notification that is not a user id", "payload_len", len(p))
			continue
		}
		signups = append(signups, Signup{UserID: id.String()})
	}
	if len(signups) == 0 {
		return nil
	}
	return l.enqueue(ctx, signups, nil)
}

// enqueue hands signups to the Enqueuer in one transaction.
func (l *Listen) enqueue(ctx context.Context, signups []Signup, lastAt *time.Time) error {
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.HandOffTimeout)
	defer cancel()
	started := time.Now()
	var n int
	err := pgx.BeginFunc(hctx, l.pool, func(tx pgx.Tx) error {
		var err error
		n, err = l.cfg.Enqueuer.EnqueueSignupsTx(hctx, tx, signups)
		return err
	})
	if err != nil {
		return fmt.Errorf("enqueuing %d signups: %w", len(signups), err)
	}
	now := time.Now()
	b := Batch{Signups: len(signups), Enqueued: n, Duration: now.Sub(started), CommittedAt: now}
	l.st.update(func(s *Status) {
		s.Signups += uint64(len(signups))
		s.Enqueued += uint64(n)
		s.Batches++
		s.LastBatch = b
		if lastAt != nil {
			s.LastSignupAt = *lastAt
		} else {
			s.LastSignupAt = now
		}
	})
	if l.cfg.OnBatch != nil {
		l.cfg.OnBatch(b)
	}
	return nil
}

func (l *Listen) catchUpLoop(ctx context.Context) {
	ticker := time.NewTicker(l.cfg.CatchUpInterval)
	defer ticker.Stop()
	bo := newBackoff(l.cfg.BackoffMin, l.cfg.BackoffMax)
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.catchUpReq:
		case <-ticker.C:
		}
		for {
			err := l.catchUp(ctx)
			if err == nil || ctx.Err() != nil {
				bo.reset()
				break
			}
			l.st.fail(err)
			wait := bo.next()
			l.log.Warn("catch-up scan failed; retrying", "error", err, "retry_in", wait)
			if sleep(ctx, wait) != nil {
				return
			}
		}
	}
}

// catchUp enqueues every eligible user created since installation that
// has no signup key, a page at a time.
func (l *Listen) catchUp(ctx context.Context) error {
	elig := users.Eligibility{Since: l.installedAt, IncludeAnonymous: l.cfg.IncludeAnonymous}
	after, found := "", 0
	for {
		page, err := l.cfg.Table.FindMissing(ctx, l.pool, l.cfg.Schema, elig, after, l.cfg.CatchUpPageSize)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		signups := make([]Signup, len(page))
		var lastAt *time.Time
		for i, m := range page {
			signups[i] = Signup{UserID: m.UserID}
			if m.CreatedAt != nil {
				signups[i].CreatedAt = *m.CreatedAt
				if lastAt == nil || m.CreatedAt.After(*lastAt) {
					lastAt = m.CreatedAt
				}
			}
		}
		if err := l.enqueue(ctx, signups, lastAt); err != nil {
			return err
		}
		found += len(page)
		after = page[len(page)-1].UserID
		if len(page) < l.cfg.CatchUpPageSize {
			break
		}
	}
	now := time.Now()
	l.st.update(func(s *Status) { s.CatchUps++; s.LastCatchUpAt = now })
	if found > 0 {
		l.log.Info("catch-up scan enqueued signups no notification delivered", "signups", found)
	}
	return nil
}
