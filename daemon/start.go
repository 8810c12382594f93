package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"riverqueue.com/riverui"

	"github.com/keyworker/keyworker/jobs"
	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
	"github.com/keyworker/keyworker/listener"
	"github.com/keyworker/keyworker/server"
	kwsql "github.com/keyworker/keyworker/sql"
)

// The steps of Start, in its order. Each sets the Daemon fields later
// steps and Stop use; none stops what an earlier one started (Start's
// caller does, through Stop).

// connectTimeout bounds the first ping of the database.
const connectTimeout = 15 * time.Second

// poolMaxConnsKey is the connection string setting of the pool's size
// (pgxpool's); without it, the pool is sized by poolSize.
const poolMaxConnsKey = "pool_max_conns"

// connect opens the pool (it lives as long as runCtx) and pings the
// database within connectTimeout of ctx.
func (d *Daemon) connect(ctx, runCtx context.Context) error {
	poolCfg, err := poolConfig(d.cfg.DatabaseURL, d.cfg.KeyWorkers, d.cfg.NoticeWorkers)
	if err != nil {
		return err
	}
	if w := listener.CheckTLS(d.cfg.DatabaseURL); w != "" {
		d.log.Warn(w, "component", "daemon")
	}
	d.pool, err = pgxpool.NewWithConfig(runCtx, poolCfg)
	if err != nil {
		return fmt.Errorf("connecting to the database: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, connectTimeout)
	err = d.pool.Ping(pingCtx)
	cancel()
	if err != nil {
		cc := poolCfg.ConnConfig
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return fmt.Errorf("connecting to the database at %s@%s:%d/%s timed out after %s: %w", cc.User, cc.Host, cc.Port, cc.Database, connectTimeout, err)
		}
		return fmt.Errorf("connecting to the database at %s@%s:%d/%s: %w", cc.User, cc.Host, cc.Port, cc.Database, err)
	}
	return nil
}

// poolConfig parses connString (a URL or keyword/value pairs) and, unless
// it sets pool_max_conns, sizes the pool for the workers (poolSize).
func poolConfig(connString string, keyWorkers, noticeWorkers int) (*pgxpool.Config, error) {
	poolCfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("DatabaseURL is malformed: %w", err)
	}
	// pgxpool consumes pool_max_conns and fills MaxConns with its own
	// default when the setting is absent, so ask pgconn's parser, which
	// leaves the settings it does not know among the runtime parameters.
	// connString parsed above, so it parses here too.
	if cc, err := pgconn.ParseConfig(connString); err == nil {
		if _, set := cc.RuntimeParams[poolMaxConnsKey]; !set {
			poolCfg.MaxConns = poolSize(keyWorkers, noticeWorkers)
		}
	}
	return poolCfg, nil
}

// poolSize is the connection pool's size when DatabaseURL does not set
// pool_max_conns: a connection for each key worker (each holds one for its
// transaction), half as many for notice workers (they hold one only to record
// the outcome, not while a sink answers), and a few for River's producers,
// leader election and the listener's hand-off.
func poolSize(keyWorkers, noticeWorkers int) int32 {
	keyWorkers = cmp.Or(keyWorkers, jobs.DefaultKeyWorkers)
	noticeWorkers = cmp.Or(noticeWorkers, jobs.DefaultNoticeWorkers)
	return int32(keyWorkers + (noticeWorkers+1)/2 + 4)
}

// prepareSchema applies the missing migrations or, with SkipMigrate,
// refuses a schema that lacks some.
func (d *Daemon) prepareSchema(ctx context.Context) error {
	cfg := d.cfg
	if cfg.SkipMigrate {
		v, err := kwsql.Version(ctx, d.pool, cfg.Schema)
		if err != nil {
			return err
		}
		if v < kwsql.LatestVersion() {
			return fmt.Errorf("schema %s is at migration %d, this worker needs %d: run `worker migrate`", cfg.Schema, v, kwsql.LatestVersion())
		}
		return nil
	}
	res, err := kwsql.Migrate(ctx, d.pool, kwsql.Config{Schema: cfg.Schema, UsersTable: cfg.Table.String(), UsersIDColumn: cfg.Table.IDColumn, Logger: d.log})
	if err != nil {
		return fmt.Errorf("migrating schema %s: %w", cfg.Schema, err)
	}
	if len(res.Applied) > 0 || len(res.RiverApplied) > 0 {
		d.log.Info("schema migrated", "component", "daemon", "schema", cfg.Schema, "applied", res.Applied, "river", res.RiverApplied)
	}
	return nil
}

// openStore makes the key store with the sealing keys and checks them
// against the database's record.
func (d *Daemon) openStore(ctx context.Context) error {
	cfg := d.cfg
	var previous [][]byte
	if cfg.PreviousSealingKey != nil {
		previous = append(previous, cfg.PreviousSealingKey)
	}
	sealer, err := keys.NewSealer(cfg.SealingKey, previous...)
	if err != nil {
		return fmt.Errorf("SealingKey: %w", err)
	}
	d.store, err = keystore.New(keystore.Config{Schema: cfg.Schema, Prefix: cfg.KeyPrefix, Sealer: sealer, RevealTTL: cfg.RevealTTL})
	if err != nil {
		return err
	}
	return d.checkSealingKey(ctx)
}

// checkSealingKey records the sealing key's fingerprint on first use, moves
// it on rotation, and refuses a key the database's waiting secrets are not
// sealed under.
func (d *Daemon) checkSealingKey(ctx context.Context) error {
	chk, err := d.store.CheckSealingKey(ctx, d.pool)
	if errors.Is(err, keystore.ErrSealingKeyMismatch) {
		return fmt.Errorf("refusing to start with this SealingKey: %w (PreviousSealingKey), then run `worker keys reseal`", err)
	}
	if err != nil {
		return err
	}
	switch {
	case chk.Recorded:
		d.log.Info("sealing key fingerprint recorded: every replica must use this sealing key", "component", "daemon", "fingerprint", chk.Fingerprint)
	case chk.RotatedFrom != "":
		d.log.Warn("sealing key rotated: new keys are sealed under the new key; restart every replica with SealingKey set to it and PreviousSealingKey to the old one, then run `worker keys reseal` and drop the previous key",
			"component", "daemon", "fingerprint", chk.Fingerprint, "previous_fingerprint", chk.RotatedFrom)
	default:
		d.log.Debug("sealing key matches the database's", "component", "daemon", "fingerprint", chk.Fingerprint)
	}
	return nil
}

// prepareTokens fetches the JWKS once, so that a wrong URL shows at start
// (reveal fetches again when it needs the keys), or says that key pick-up
// is off.
func (d *Daemon) prepareTokens(ctx context.Context) {
	if d.tokens == nil {
		d.log.Warn("key pick-up is disabled: set Tokens.JWTSecret or Tokens.JWKSURL", "component", "daemon")
		return
	}
	if d.cfg.Tokens.JWKSURL != "" {
		if err := d.tokens.RefreshKeys(ctx); err != nil {
			d.log.Warn("fetching the JWKS failed; reveal will retry", "component", "daemon", "error", err)
		}
	}
}

// startHTTP builds the HTTP server around the daemon's handlers, binds it
// and supervises it.
func (d *Daemon) startHTTP(runCtx context.Context) error {
	d.registerMetrics()
	hcfg := d.cfg.HTTP
	hcfg.Dashboard = http.HandlerFunc(d.serveDashboard)
	hcfg.Metrics = d.metrics.Handler()
	hcfg.PublicURL = d.cfg.PublicURL
	hcfg.Ready = d.ready
	hcfg.Logger = d.log
	hcfg.OnReveal = func(outcome string) {
		d.metrics.Counter("keyworker_reveals_total", "Reveal requests by outcome.", "outcome", outcome).Inc()
	}
	if d.tokens != nil {
		hcfg.VerifyToken = d.verifyToken
		hcfg.Reveal = d.reveal
	}
	// Verify needs only the service tokens; the rest of the keys API also
	// needs VerifyToken, and answers 503 keys_disabled without it.
	hcfg.Keys = keyService{d}
	var err error
	if len(hcfg.VerifyTokens) == 0 {
		// Its 503 tells the client only that it is off.
		d.log.Info("checking keys over HTTP is off (POST /v1/keys/verify answers 503 verify_disabled): set HTTP.VerifyTokens to the service tokens your backends send", "component", "daemon")
	}
	if d.http, err = server.New(hcfg); err != nil {
		return err
	}
	if err := d.http.Start(runCtx); err != nil {
		return err
	}
	d.supervise("HTTP server", d.http.Done(), d.http.Err)
	return nil
}

// publicURL is PublicURL, or else the address the HTTP server bound (with
// a warning when users cannot reach it).
func (d *Daemon) publicURL() string {
	if d.cfg.PublicURL != "" {
		return d.cfg.PublicURL
	}
	scheme := "http"
	if d.cfg.HTTP.TLSCertFile != "" {
		scheme = "https"
	}
	addr := d.http.Addr()
	u := scheme + "://" + addr
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			d.log.Warn("notices will link to "+u+", which users cannot reach: set PublicURL to the address users reach this server at",
				"component", "daemon")
		}
	}
	return u
}

// newJobs makes the River client and its workers; notices link to
// publicURL. Nothing runs until startRiver.
func (d *Daemon) newJobs(publicURL string) error {
	cfg := d.cfg
	var err error
	d.jobs, err = jobs.NewClient(d.pool, jobs.Config{
		Schema:                cfg.Schema,
		Table:                 cfg.Table,
		Store:                 d.store,
		Senders:               d.timedSenders(),
		RevealURL:             publicURL + "/v1/keys/reveal",
		PickupURL:             cfg.PickupURL,
		ExpiringNoticeBefore:  cfg.ExpiringNoticeBefore,
		LifecycleInterval:     cfg.LifecycleInterval,
		EmailColumn:           cfg.EmailColumn,
		IncludeAnonymous:      cfg.IncludeAnonymous,
		KeyTTL:                cfg.KeyTTL,
		ReconcileInterval:     cfg.ReconcileInterval,
		CompletedJobRetention: cfg.JobRetention,
		KeyWorkers:            cfg.KeyWorkers,
		NoticeWorkers:         cfg.NoticeWorkers,
		NoticeConcurrency:     cfg.NoticeConcurrency,
		JobTimeout:            cfg.JobTimeout,
		RetryPolicy:           cfg.RetryPolicy,
		FetchPollInterval:     cfg.FetchPollInterval,
		FetchCooldown:         cfg.FetchCooldown,
		Logger:                d.log,
		OnEvent:               d.onJobEvent,
	})
	return err
}

// startIntake starts the signup source (startSource: the configured mode,
// or auto's choice), publishes it for SourceStatus and records the choice
// for `worker status`.
func (d *Daemon) startIntake(runCtx context.Context) (Capture, error) {
	cfg := d.cfg
	src, capture, err := d.startSource(runCtx, listener.Config{
		ConnString:       cfg.DatabaseURL,
		Pool:             d.pool,
		Enqueuer:         d.jobs,
		Schema:           cfg.Schema,
		Table:            cfg.Table,
		IncludeAnonymous: cfg.IncludeAnonymous,
		SlotName:         cfg.SlotName,
		PublicationName:  cfg.PublicationName,
		BatchMaxWait:     cfg.BatchMaxWait,
		PollInterval:     cfg.PollInterval,
		Logger:           d.log,
		OnBatch:          d.onBatch,
	})
	if err != nil {
		return Capture{}, err
	}
	d.mu.Lock()
	d.source = src
	d.capture = capture
	d.mu.Unlock()
	d.log.Info("reading signups in "+capture.Mode+" mode", "component", "daemon", "capture", capture.Mode, "reason", capture.Reason, "detail", capture.Detail)
	if err := d.recordCapture(runCtx, capture); err != nil {
		// Only `worker status` reads it: not a reason to stop.
		d.log.Warn("the capture path is not recorded for `worker status`", "component", "daemon", "error", err)
	}
	return capture, nil
}

// startRiver starts working jobs, with the metrics' job event watcher, and
// supervises River.
func (d *Daemon) startRiver(runCtx context.Context) error {
	events, _ := d.jobs.River().Subscribe(jobEventKinds...)
	d.parts.Go(func() error {
		d.watchJobs(runCtx, events)
		return nil
	})
	if err := d.jobs.Start(runCtx); err != nil {
		return err // "starting jobs: ..." or "starting River: ..."
	}
	d.supervise("River", d.jobs.River().Stopped(), func() error { return nil })
	return nil
}

// startUI starts River UI's services; the dashboard serves it from then
// on. It runs until runCtx ends.
func (d *Daemon) startUI(runCtx context.Context) error {
	ui, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints: riverui.NewEndpoints(d.jobs.River(), nil),
		Logger:    d.log.With("component", "riverui"),
		Prefix:    "/riverui",
	})
	if err != nil {
		return fmt.Errorf("building the River UI: %w", err)
	}
	if err := ui.Start(runCtx); err != nil {
		return fmt.Errorf("starting the River UI: %w", err)
	}
	d.ui.Store(ui)
	return nil
}
