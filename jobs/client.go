package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/keyworker/keyworker/users"
)

// stopAndCancelTimeout bounds the wait for cancelled jobs to return once
// Stop's deadline has passed.
const stopAndCancelTimeout = 10 * time.Second

// rescueGrace is how long past JobTimeout a job may still show as running
// before River's rescuer takes it for the job of a dead process (kill -9, a
// lost machine) and schedules it again. A live process ends every attempt by
// its timeout, so the grace only covers recording the outcome and clock
// skew. (A kind with its own Timeout, the reconcile's, is rescued at that
// timeout with no grace; a reconcile that runs twice finds nothing new.) a job rescued too early runs twice, which both jobs absorb
// (one signup key per user, no second send to a sink that succeeded).
// River's default is an hour, during which a signup whose create-keys job
// was interrupted has no key and even the reconciler cannot help (the job
// still counts as running for uniqueness).
const rescueGrace = 15 * time.Second

// Client runs keyworker's River workers and periodic jobs, and enqueues
// signups for the listener (it implements listener.Enqueuer). It is safe for
// concurrent use.
type Client struct {
	*Enqueuer
	d      *deps
	rc     *river.Client[pgx.Tx]
	pool   *pgxpool.Pool
	cfg    Config
	logger *slog.Logger
}

// NewClient validates cfg and builds the River client on pool: the queues
// QueueKeys, QueueNotices and QueueMaintenance, the workers (the batched
// kinds and the per-user and per-key kinds of older versions), and the
// periodic Reconcile (every ReconcileInterval, the first one interval after
// this process becomes leader, so that it does not duplicate the reconcile
// a listen-mode source asks for when it starts), PurgeReveals (every PurgeInterval, and once when it becomes
// leader) and LifecycleNotices (every LifecycleInterval, and once when it
// becomes leader) jobs, which River runs on the leader only. Nothing runs until
// Start.
//
// pool must be a direct connection (River uses LISTEN/NOTIFY). Errors name
// the Config field at fault.
func NewClient(pool *pgxpool.Pool, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("configuring jobs: %w", err)
	}
	logger := cfg.Logger.With("component", "jobs")
	quiet, err := quietInserter(pool, cfg.Schema)
	if err != nil {
		return nil, err
	}
	d := newDeps(pool, cfg, logger, quiet)

	workers := river.NewWorkers()
	river.AddWorker(workers, &createKeysWorker{d: d})
	river.AddWorker(workers, &deliverNoticesWorker{d: d})
	river.AddWorker(workers, &deliverLifecycleNoticesWorker{d: d})
	river.AddWorker(workers, &createKeyWorker{d: d})
	river.AddWorker(workers, &deliverNoticeWorker{d: d})
	river.AddWorker(workers, &reconcileWorker{d: d})
	river.AddWorker(workers, &purgeRevealsWorker{d: d})
	river.AddWorker(workers, &lifecycleNoticesWorker{d: d})

	retention := cfg.CompletedJobRetention
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Schema: cfg.Schema,
		Queues: map[string]river.QueueConfig{
			QueueKeys:        {MaxWorkers: cfg.KeyWorkers},
			QueueNotices:     {MaxWorkers: cfg.NoticeWorkers},
			QueueMaintenance: {MaxWorkers: cfg.MaintenanceWorkers},
		},
		Workers:                     workers,
		PeriodicJobs:                periodicJobs(cfg),
		CompletedJobRetentionPeriod: retention,
		CancelledJobRetentionPeriod: retention,
		JobTimeout:                  cfg.JobTimeout,
		RescueStuckJobsAfter:        cfg.JobTimeout + rescueGrace,
		MaxAttempts:                 cfg.CreateKeyMaxAttempts,
		RetryPolicy:                 cfg.RetryPolicy,
		FetchPollInterval:           cfg.FetchPollInterval,
		FetchCooldown:               cfg.FetchCooldown,
		Logger:                      cfg.Logger.With("component", "river"),
	})
	if err != nil {
		return nil, fmt.Errorf("configuring River: %w", err)
	}
	return &Client{
		Enqueuer: newEnqueuer(rc, cfg.CreateKeyMaxAttempts, cfg.Schema),
		d:        d,
		rc:       rc,
		pool:     pool,
		cfg:      cfg,
		logger:   logger,
	}, nil
}

func periodicJobs(cfg Config) []*river.PeriodicJob {
	return []*river.PeriodicJob{
		river.NewPeriodicJob(river.PeriodicInterval(cfg.ReconcileInterval),
			func() (river.JobArgs, *river.InsertOpts) { return ReconcileArgs{Reason: "periodic"}, nil },
			&river.PeriodicJobOpts{ID: KindReconcile}),
		river.NewPeriodicJob(river.PeriodicInterval(cfg.PurgeInterval),
			func() (river.JobArgs, *river.InsertOpts) { return PurgeRevealsArgs{}, nil },
			&river.PeriodicJobOpts{ID: KindPurgeReveals, RunOnStart: true}),
		river.NewPeriodicJob(river.PeriodicInterval(cfg.LifecycleInterval),
			func() (river.JobArgs, *river.InsertOpts) { return LifecycleNoticesArgs{}, nil },
			&river.PeriodicJobOpts{ID: KindLifecycleNotices, RunOnStart: true}),
	}
}

// River returns the River client, for River UI and for tests. Do not Start
// or Stop it directly.
func (c *Client) River() *river.Client[pgx.Tx] { return c.rc }

// Start checks that the database is reachable, River's tables exist in
// Schema and the users table has the configured columns, then starts
// working jobs. ctx bounds only these checks: the client runs until Stop,
// so that cancelling a signal context does not cancel jobs in flight (call
// Stop to drain them).
func (c *Client) Start(ctx context.Context) error {
	if err := c.pool.Ping(ctx); err != nil {
		return fmt.Errorf("starting jobs: connecting to the database: %w", err)
	}
	var ok bool
	if err := c.pool.QueryRow(ctx, qTableExists,
		pgx.Identifier{c.cfg.Schema, "river_job"}.Sanitize()).Scan(&ok); err != nil {
		return fmt.Errorf("starting jobs: looking for River's tables: %w", err)
	}
	if !ok {
		return fmt.Errorf("starting jobs: River's tables are missing from schema %s: run `worker migrate`", c.cfg.Schema)
	}
	if err := c.cfg.Table.Check(ctx, c.pool); err != nil {
		return fmt.Errorf("starting jobs: %w", err)
	}
	if c.cfg.EmailColumn != "" {
		if err := c.pool.QueryRow(ctx, qColumnExists,
			c.cfg.Table.Schema, c.cfg.Table.Name, c.cfg.EmailColumn).Scan(&ok); err != nil {
			return fmt.Errorf("starting jobs: looking for the email column: %w", err)
		}
		if !ok {
			return fmt.Errorf("starting jobs: users table %s has no column %q: set EmailColumn to its email column, or \"-\" if it has none", c.cfg.Table, c.cfg.EmailColumn)
		}
	}
	if err := c.rc.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("starting River: %w", err)
	}
	c.logger.InfoContext(ctx, "jobs started", "schema", c.cfg.Schema, "users_table", c.cfg.Table.String(),
		"senders", senderNames(c.cfg), "reconcile_interval", c.cfg.ReconcileInterval.String())
	return nil
}

// Stop stops fetching jobs and waits for running ones to finish until ctx is
// done; then it cancels the ones still running (they return to the queue and
// run again later) and waits up to 10s for them to return. It is idempotent
// and safe before Start.
func (c *Client) Stop(ctx context.Context) error {
	err := c.rc.Stop(ctx)
	if err == nil {
		return nil
	}
	if ctx.Err() == nil {
		return fmt.Errorf("stopping River: %w", err)
	}
	c.logger.WarnContext(ctx, "jobs still running at the stop deadline; cancelling them, they will run again")
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopAndCancelTimeout)
	defer cancel()
	if err := c.rc.StopAndCancel(cctx); err != nil {
		return fmt.Errorf("stopping River: cancelled jobs did not return within %s: %w", stopAndCancelTimeout, err)
	}
	return nil
}

func senderNames(cfg Config) string {
	names := make([]string, len(cfg.Senders))
	for i, s := range cfg.Senders {
		names[i] = s.Name()
	}
	return strings.Join(names, ",")
}

// Enqueuer inserts CreateKeys and Reconcile jobs in the caller's
// transaction. It implements listener.Enqueuer and is safe for concurrent
// use. A Client embeds one; NewEnqueuer makes one that works no jobs, for
// processes that only enqueue.
type Enqueuer struct {
	rc         *river.Client[pgx.Tx]
	createOpts river.InsertOpts
	qPending   string // which of some users are in a pending CreateKeys job
}

// EnqueuerConfig configures NewEnqueuer.
type EnqueuerConfig struct {
	// Schema holds River's tables. Defaults to DefaultSchema.
	Schema string
	// CreateKeyMaxAttempts is Config.CreateKeyMaxAttempts. Defaults to
	// DefaultCreateKeyMaxAttempts.
	CreateKeyMaxAttempts int
}

// NewEnqueuer returns an Enqueuer on an insert-only River client (no
// workers) over pool.
func NewEnqueuer(pool *pgxpool.Pool, cfg EnqueuerConfig) (*Enqueuer, error) {
	cfg.Schema = orDefault(cfg.Schema, DefaultSchema)
	cfg.CreateKeyMaxAttempts = orDefault(cfg.CreateKeyMaxAttempts, DefaultCreateKeyMaxAttempts)
	if err := checkEnqueuerConfig(cfg.Schema, cfg.CreateKeyMaxAttempts); err != nil {
		return nil, fmt.Errorf("configuring enqueuer: %w", err)
	}
	rc, err := insertOnlyClient(pool, cfg.Schema)
	if err != nil {
		return nil, err
	}
	return newEnqueuer(rc, cfg.CreateKeyMaxAttempts, cfg.Schema), nil
}

// checkEnqueuerConfig checks what NewEnqueuer and Reconcile take: the
// schema and the create-keys jobs' max attempts, already defaulted.
func checkEnqueuerConfig(schema string, createKeyMaxAttempts int) error {
	if !identRe.MatchString(schema) {
		return fmt.Errorf("Schema %q is invalid: use a lowercase SQL identifier", schema)
	}
	if createKeyMaxAttempts < 1 || createKeyMaxAttempts > 100 {
		return fmt.Errorf("CreateKeyMaxAttempts must be between 1 and 100, got %d", createKeyMaxAttempts)
	}
	return nil
}

// quietNotifyCooldown is the quiet inserter's FetchCooldown: River sends an
// insert notification for a queue at most once per FetchCooldown of the
// inserting client, so this one notifies at most once an hour.
const quietNotifyCooldown = time.Hour

// quietInserter returns an insert-only River client on pool whose inserts
// (almost) never notify: batches insert their DeliverNotices job through it.
// A notification costs the batch a round trip (pg_notify) and, at commit,
// PostgreSQL's notify lock, which every notifying transaction in the
// database takes in turn and holds until its commit is done: the listener's
// hand-offs (whose notification the keys queue needs at once) and, in listen
// mode, every signup. Notices can wait for the notice queue's next poll
// (Config.FetchPollInterval, 50ms by default), which then fetches the notice
// jobs of several batches at once.
func quietInserter(pool *pgxpool.Pool, schema string) (*river.Client[pgx.Tx], error) {
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Schema:            schema,
		FetchCooldown:     quietNotifyCooldown,
		FetchPollInterval: quietNotifyCooldown,
		Logger:            slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, fmt.Errorf("configuring River: %w", err)
	}
	return rc, nil
}

func insertOnlyClient(pool *pgxpool.Pool, schema string) (*river.Client[pgx.Tx], error) {
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Schema: schema, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, fmt.Errorf("configuring River: %w", err)
	}
	return rc, nil
}

func newEnqueuer(rc *river.Client[pgx.Tx], createMaxAttempts int, schema string) *Enqueuer {
	opts := CreateKeysArgs{}.InsertOpts()
	opts.MaxAttempts = createMaxAttempts
	return &Enqueuer{rc: rc, createOpts: opts, qPending: pendingQuery(schema)}
}

// EnqueueSignupsTx inserts CreateKeys jobs for the distinct users in
// signups, in tx, at most MaxBatchUsers users per job, and returns how many
// users it handed to new jobs (a user repeated in signups counts once). It
// filters nothing (the listener does).
func (e *Enqueuer) EnqueueSignupsTx(ctx context.Context, tx pgx.Tx, signups []users.Signup) (int, error) {
	ids := make([]string, 0, len(signups))
	for _, s := range signups {
		ids = append(ids, s.UserID)
	}
	n, _, err := e.enqueueUsersTx(ctx, tx, ids, "signup")
	return n, err
}

// enqueueUsersTx inserts CreateKeys jobs for the distinct ids, sorted, in
// chunks of MaxBatchUsers, and returns how many users went into jobs and
// how many were repeats.
func (e *Enqueuer) enqueueUsersTx(ctx context.Context, tx pgx.Tx, userIDs []string, source string) (inserted, duplicates int, err error) {
	// One order everywhere (sorted by user id): batches that share users
	// then wait for each other on the unique index instead of deadlocking
	// (40P01).
	ids := make([]string, len(userIDs))
	for i, id := range userIDs {
		ids[i] = strings.ToLower(id)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	duplicates = len(userIDs) - len(ids)
	if len(ids) == 0 {
		return 0, duplicates, nil
	}
	params := make([]river.InsertManyParams, 0, (len(ids)+MaxBatchUsers-1)/MaxBatchUsers)
	for chunk := range slices.Chunk(ids, MaxBatchUsers) {
		params = append(params, river.InsertManyParams{Args: CreateKeysArgs{UserIDs: chunk, Source: source}, InsertOpts: &e.createOpts})
	}
	if _, err := e.rc.InsertManyTx(ctx, tx, params); err != nil {
		return 0, 0, fmt.Errorf("enqueuing create-keys jobs for %d users: %w", len(ids), err)
	}
	return len(ids), duplicates, nil
}

// withoutPending drops from ids the users already in a CreateKeys job that
// has yet to finish, and returns how many it dropped.
func (e *Enqueuer) withoutPending(ctx context.Context, db users.Querier, ids []string) ([]string, int, error) {
	if len(ids) == 0 {
		return ids, 0, nil
	}
	rows, err := db.Query(ctx, e.qPending, ids)
	if err != nil {
		return nil, 0, fmt.Errorf("looking for users already queued: %w", err)
	}
	pending, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, 0, fmt.Errorf("looking for users already queued: %w", err)
	}
	if len(pending) == 0 {
		return ids, 0, nil
	}
	skip := make(map[string]bool, len(pending))
	for _, id := range pending {
		skip[id] = true
	}
	out := ids[:0:0]
	for _, id := range ids {
		if !skip[id] {
			out = append(out, id)
		}
	}
	return out, len(ids) - len(out), nil
}

// EnqueueReconcileTx inserts a Reconcile job in tx, with reason recorded in
// its args, for when a signup source may have missed signups.
func (e *Enqueuer) EnqueueReconcileTx(ctx context.Context, tx pgx.Tx, reason string) error {
	if _, err := e.rc.InsertTx(ctx, tx, ReconcileArgs{Reason: reason}, nil); err != nil {
		return fmt.Errorf("enqueuing a reconcile (%s): %w", reason, err)
	}
	return nil
}

// deps is what the workers share.
type deps struct {
	cfg    Config
	pool   *pgxpool.Pool
	logger *slog.Logger
	// noticeOpts are the insert options of DeliverNotices and
	// DeliverLifecycleNotices jobs (the same queue and attempts).
	noticeOpts river.InsertOpts
	// noticeInserter inserts notice jobs without an insert notification
	// (quietInserter).
	noticeInserter *river.Client[pgx.Tx]
	qNoticeKeys    string // the keys, users and done sinks of a notice batch
	qInsertEvents  string // many key_events rows
	// qEnqueueNotices records events in key_notices (EnqueueNoticeTx);
	// qExpiring and qExpired are the lifecycle scan's.
	qEnqueueNotices, qExpiring, qExpired string
}

func newDeps(pool *pgxpool.Pool, cfg Config, logger *slog.Logger, noticeInserter *river.Client[pgx.Tx]) *deps {
	noticeOpts := DeliverNoticesArgs{}.InsertOpts()
	noticeOpts.MaxAttempts = cfg.NoticeMaxAttempts
	qKeys, qEvents := noticeQueries(cfg.Schema, cfg.Table, cfg.EmailColumn)
	qEnqueue, qExpiring, qExpired := lifecycleQueries(cfg.Schema)
	return &deps{
		qEnqueueNotices: qEnqueue,
		qExpiring:       qExpiring,
		qExpired:        qExpired,
		cfg:             cfg,
		pool:            pool,
		logger:          logger,
		noticeOpts:      noticeOpts,
		noticeInserter:  noticeInserter,
		qNoticeKeys:     qKeys,
		qInsertEvents:   qEvents,
	}
}
