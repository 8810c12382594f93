// Package daemon wires keyworker's parts into the process `worker run`
// starts: the database pool, the migrations, the River client and its
// workers, the signup source (logical replication or LISTEN/NOTIFY), the
// notice senders, and the HTTP server with the reveal endpoint, the River UI,
// metrics and health. It owns the order of start-up and shutdown and nothing
// else; every part is configured by its own package.
package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"golang.org/x/sync/errgroup"
	"riverqueue.com/riverui"

	"github.com/keyworker/keyworker/accesstoken"
	"github.com/keyworker/keyworker/jobs"
	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
	"github.com/keyworker/keyworker/listener"
	"github.com/keyworker/keyworker/metrics"
	"github.com/keyworker/keyworker/notify"
	"github.com/keyworker/keyworker/server"
	kwsql "github.com/keyworker/keyworker/sql"
	"github.com/keyworker/keyworker/users"
)

// Modes of reading signups. ModeAuto runs logical mode when its
// preflight passes (a usable publication exists or this role may make one,
// REPLICATION, wal_level=logical, a direct connection, a free slot) and
// listen mode when it fails for want of one of those; other preflight
// failures stop the start as in logical mode. Capture says which and why.
const (
	ModeAuto    = "auto"
	ModeLogical = listener.ModeLogical
	ModeListen  = listener.ModeListen
)

// Defaults and bounds of Config. Where a component owns a setting, its
// default is the component's constant, repeated here so that Config's
// documentation can name it.
const (
	// DefaultMode is Config.Mode's default.
	DefaultMode = ModeAuto
	// DefaultSchema is Config.Schema's default.
	DefaultSchema = kwsql.DefaultSchema
	// DefaultTable is Config.Table's default, with users.Table's default
	// column names.
	DefaultTable = users.DefaultTable
	// DefaultSlotName is Config.SlotName's default.
	DefaultSlotName = listener.DefaultSlotName
	// DefaultPublicationName is Config.PublicationName's default.
	DefaultPublicationName = listener.DefaultPublicationName
	// DefaultPollInterval is Config.PollInterval's default.
	DefaultPollInterval = listener.DefaultPollInterval
	// DefaultKeyPrefix is Config.KeyPrefix's default.
	DefaultKeyPrefix = keys.DefaultPrefix
	// DefaultRevealTTL is Config.RevealTTL's default.
	DefaultRevealTTL = keystore.DefaultRevealTTL
	// DefaultHTTPAddr is Config.HTTP.Addr's default.
	DefaultHTTPAddr = server.DefaultAddr
	// DefaultEmailColumn is Config.EmailColumn's default.
	DefaultEmailColumn = jobs.DefaultEmailColumn
	// DefaultExpiringNoticeBefore is Config.ExpiringNoticeBefore's default.
	DefaultExpiringNoticeBefore = jobs.DefaultExpiringNoticeBefore
	// DefaultLifecycleInterval is Config.LifecycleInterval's default.
	DefaultLifecycleInterval = jobs.DefaultLifecycleInterval
	// DefaultReconcileInterval is Config.ReconcileInterval's default.
	DefaultReconcileInterval = jobs.DefaultReconcileInterval
	// DefaultJobRetention is Config.JobRetention's default.
	DefaultJobRetention = jobs.DefaultCompletedJobRetention
	// DefaultKeyWorkers is Config.KeyWorkers's default.
	DefaultKeyWorkers = jobs.DefaultKeyWorkers
	// DefaultNoticeWorkers is Config.NoticeWorkers's default.
	DefaultNoticeWorkers = jobs.DefaultNoticeWorkers
	// DefaultNoticeConcurrency is Config.NoticeConcurrency's default.
	DefaultNoticeConcurrency = jobs.DefaultNoticeConcurrency
	// DefaultJobTimeout is Config.JobTimeout's default.
	DefaultJobTimeout = jobs.DefaultJobTimeout
	// DefaultFetchPollInterval is Config.FetchPollInterval's default.
	DefaultFetchPollInterval = jobs.DefaultFetchPollInterval
	// DefaultFetchCooldown is Config.FetchCooldown's default.
	DefaultFetchCooldown = jobs.DefaultFetchCooldown
	// DefaultShutdownTimeout is Config.ShutdownTimeout's default.
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultMetricsCacheTTL is how long a scrape's database readings (queue
	// depth by state, slot lag, checkpoint age) serve later scrapes.
	DefaultMetricsCacheTTL = 5 * time.Second
	// DefaultBatchMaxWait is Config.BatchMaxWait's default, four times the
	// listener's own (5ms). Every hand-off costs a transaction, a
	// create-keys job and a notice job (River's fetches and completions,
	// about ten round trips), whatever its size, and a steady stream fills
	// a batch only as fast as it comes: at 500 signups/s, 5ms batches held 3
	// to 12 users, and their fixed costs kept a 2-core machine running the
	// database and the worker about 95% busy, so that keys waited p99
	// 170-900ms in queues for the CPU. 20ms batches (about 10 users there)
	// cut the worker's database CPU by 40% and its own by 20%, and key p99
	// to 80-100ms. A signup alone waits the full 20ms.
	DefaultBatchMaxWait = 20 * time.Millisecond
	// DefaultMaxKeysPerUser is Config.MaxKeysPerUser's default.
	DefaultMaxKeysPerUser = 10
	// MaxMaxKeysPerUser bounds Config.MaxKeysPerUser.
	MaxMaxKeysPerUser = 100_000
)

// Config is everything `worker run` needs. Component settings are passed
// through to their packages, which fill their own defaults; the defaults
// below are theirs. Errors from New name the field at fault, prefixed with
// the component's field for a component's own settings ("Tokens: JWTSecret
// must be at least 32 bytes, got 5"), so that a program reading the
// settings from elsewhere can translate the names for its users.
type Config struct {
	// DatabaseURL is a direct connection string, or (listen mode) one
	// through a session pooler. Required.
	DatabaseURL string
	// Mode is ModeAuto, ModeLogical or ModeListen. Defaults to DefaultMode
	// (auto).
	Mode string
	// Schema is keyworker's schema. Defaults to DefaultSchema ("keyworker").
	Schema string
	// Table is the users table. Defaults to DefaultTable (auth.users) with
	// users.Table's default columns.
	Table users.Table
	// IncludeAnonymous gives anonymous users keys too. Defaults to false.
	IncludeAnonymous bool
	// SkipMigrate makes Start check that the schema is at the latest
	// migration instead of applying the missing ones (`worker migrate`
	// applies them). Defaults to false: Start migrates.
	SkipMigrate bool

	// SlotName and PublicationName are logical mode's replication slot and
	// publication. Default to DefaultSlotName ("keyworker") and
	// DefaultPublicationName ("keyworker_signups").
	SlotName, PublicationName string
	// BatchMaxWait bounds how long a signup waits for others to share its
	// hand-off transaction. Defaults to DefaultBatchMaxWait (20ms).
	BatchMaxWait time.Duration
	// PollInterval is how often listen mode looks in its outbox without a
	// notification. Defaults to DefaultPollInterval (1s).
	PollInterval time.Duration

	// KeyPrefix prefixes new keys: see keys.ValidatePrefix. Defaults to
	// DefaultKeyPrefix ("sk").
	KeyPrefix string
	// KeyTTL is how long signup keys live; 0 means they do not expire.
	// Defaults to 0.
	KeyTTL time.Duration
	// RevealTTL is how long a key waits for its pick-up. Defaults to
	// DefaultRevealTTL (7 days).
	RevealTTL time.Duration
	// SealingKey is the 32-byte AES key sealing waiting secrets. Required.
	// Its fingerprint is recorded in the database on first use, and Start
	// refuses another key (see keystore.Store.CheckSealingKey).
	SealingKey []byte
	// PreviousSealingKey, during a rotation, is the key SealingKey replaces:
	// it still opens the secrets sealed under it, and when the database
	// recorded it, Start moves the record to SealingKey. Optional.
	PreviousSealingKey []byte

	// Tokens verifies users' access tokens for reveal and the keys API.
	// When neither JWTSecret nor JWKSURL is set, both answer 503. Its
	// defaults are accesstoken.Config's.
	Tokens accesstoken.Config

	// MaxKeysPerUser is how many live keys (not revoked, not expired;
	// disabled ones count) a user may hold through the keys API; a rotation
	// at the limit may add one for its overlap. Negative means no limit; at
	// most MaxMaxKeysPerUser. Defaults to DefaultMaxKeysPerUser (10).
	MaxKeysPerUser int

	// HTTP configures the HTTP server; its function fields (Dashboard,
	// Metrics, Ready, VerifyToken, Reveal, Keys, ...) and PublicURL are set
	// by the daemon. HTTP.Addr defaults to DefaultHTTPAddr
	// (127.0.0.1:8080); the rest of its defaults are server.Config's.
	HTTP server.Config
	// PublicURL is the base URL users reach the reveal endpoint at, for
	// notices. Defaults to http://<the address the HTTP server bound>
	// (https with TLS), so port 0 gives the port actually chosen.
	PublicURL string

	// Webhook and SMTP, when their URL is set, are notice sinks; NotifyLog
	// adds the log sink. Their defaults are notify's. Defaults to no sink.
	Webhook   notify.WebhookConfig
	SMTP      notify.SMTPConfig
	NotifyLog bool
	// PickupURL is the app's page where a user picks a signup key up, a
	// template with "{key_id}"; see jobs.Config.PickupURL. Optional.
	PickupURL string
	// ExpiringNoticeBefore is how long before a key expires its expiring
	// notice is sent; negative means none. Defaults to
	// DefaultExpiringNoticeBefore (72h). LifecycleInterval is how often
	// expiring and expired keys are looked for. Defaults to
	// DefaultLifecycleInterval (1m). See jobs.Config.
	ExpiringNoticeBefore, LifecycleInterval time.Duration
	// EmailColumn is read for email notices. Defaults to
	// DefaultEmailColumn ("email").
	EmailColumn string

	// ReconcileInterval is how often the leader runs a reconcile. Defaults
	// to DefaultReconcileInterval (5m). JobRetention is how long completed
	// jobs are kept. Defaults to DefaultJobRetention (7 days). See
	// jobs.Config.
	ReconcileInterval, JobRetention time.Duration
	// KeyWorkers and NoticeWorkers are how many create-keys and notice
	// jobs (batches) run at once, NoticeConcurrency how many sends one
	// notice job makes at once. Default to DefaultKeyWorkers (10),
	// DefaultNoticeWorkers (10) and DefaultNoticeConcurrency (32). The
	// connection pool grows to fit the workers unless DatabaseURL sets
	// pool_max_conns.
	KeyWorkers, NoticeWorkers, NoticeConcurrency int
	// JobTimeout bounds one job attempt, between jobs.MinJobTimeout (1s)
	// and jobs.MaxJobTimeout (1h), and longer than the webhook's timeout
	// when there is a webhook. Defaults to DefaultJobTimeout (1m).
	JobTimeout time.Duration
	// RetryPolicy, FetchPollInterval and FetchCooldown tune River: when a
	// failed job runs again, and how often it looks for jobs. They default
	// to River's retry policy, DefaultFetchPollInterval (50ms) and
	// DefaultFetchCooldown (2ms); see jobs.Config.
	RetryPolicy                      river.ClientRetryPolicy
	FetchPollInterval, FetchCooldown time.Duration
	// ShutdownTimeout bounds draining running jobs on Stop. Defaults to
	// DefaultShutdownTimeout (30s).
	ShutdownTimeout time.Duration
	// MetricsCacheTTL is how long /metrics reuses its database readings, so
	// a scrape costs the database at most one count of river_job per TTL
	// however often and however many scrapers ask. Between 1ms and 1m.
	// Defaults to DefaultMetricsCacheTTL (5s).
	MetricsCacheTTL time.Duration

	// Logger receives the daemon's and its components' logs. Defaults to
	// discarding.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	c.Mode = cmp.Or(c.Mode, DefaultMode)
	c.Schema = cmp.Or(c.Schema, DefaultSchema)
	c.Table = c.Table.WithDefaults()
	c.HTTP.Addr = cmp.Or(c.HTTP.Addr, DefaultHTTPAddr)
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, DefaultShutdownTimeout)
	c.MetricsCacheTTL = cmp.Or(c.MetricsCacheTTL, DefaultMetricsCacheTTL)
	c.BatchMaxWait = cmp.Or(c.BatchMaxWait, DefaultBatchMaxWait)
	c.MaxKeysPerUser = cmp.Or(c.MaxKeysPerUser, DefaultMaxKeysPerUser)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// validate checks every setting that can be checked without connecting,
// each by the component that owns it. Errors name the Config field; a
// component's errors are prefixed with its field ("HTTP: ", "Tokens: ", ...).
func (c Config) validate() error {
	if c.DatabaseURL == "" {
		return errors.New("DatabaseURL is required: set it to your database's direct connection string, e.g. postgres://postgres:<password>@db.<ref>.supabase.co:5432/postgres")
	}
	if c.Mode != ModeAuto && c.Mode != ModeLogical && c.Mode != ModeListen {
		return fmt.Errorf("Mode must be auto, logical or listen, got %q", c.Mode)
	}
	mode := c.Mode
	if mode == ModeAuto {
		mode = ModeListen // what a session pooler leaves auto mode
	}
	if err := listener.CheckDirect(c.DatabaseURL, mode); err != nil {
		return err
	}
	if err := c.Table.Validate(); err != nil {
		return fmt.Errorf("Table: %w", err)
	}
	if c.KeyPrefix != "" {
		if err := keys.ValidatePrefix(c.KeyPrefix); err != nil {
			return fmt.Errorf("KeyPrefix: %w", err)
		}
	}
	if len(c.SealingKey) != keys.SealingKeySize {
		return fmt.Errorf("SealingKey must be %d bytes (make them with openssl rand -base64 32), got %d", keys.SealingKeySize, len(c.SealingKey))
	}
	if c.PreviousSealingKey != nil {
		if _, err := keys.NewSealer(c.SealingKey, c.PreviousSealingKey); err != nil {
			return fmt.Errorf("PreviousSealingKey: %w", err)
		}
	}
	if c.KeyTTL < 0 {
		return fmt.Errorf("KeyTTL must not be negative, got %s", c.KeyTTL)
	}
	if c.MaxKeysPerUser > MaxMaxKeysPerUser {
		return fmt.Errorf("MaxKeysPerUser must be at most %d, got %d", MaxMaxKeysPerUser, c.MaxKeysPerUser)
	}
	if c.JobTimeout != 0 && (c.JobTimeout < jobs.MinJobTimeout || c.JobTimeout > jobs.MaxJobTimeout) {
		return fmt.Errorf("JobTimeout must be between %s and %s, got %s", jobs.MinJobTimeout, jobs.MaxJobTimeout, c.JobTimeout)
	}
	if c.MetricsCacheTTL < time.Millisecond || c.MetricsCacheTTL > time.Minute {
		return fmt.Errorf("MetricsCacheTTL must be between 1ms and 1m, got %s", c.MetricsCacheTTL)
	}
	// The notice sinks and the token verifier check their own settings;
	// New builds them again.
	if c.Webhook.URL != "" || c.Webhook.Secret != "" {
		if hook := cmp.Or(c.Webhook.Timeout, notify.DefaultWebhookTimeout); c.JobTimeout != 0 && c.JobTimeout <= hook {
			return fmt.Errorf("JobTimeout must be longer than the webhook's timeout (%s), or every slow delivery is cut short, got %s", hook, c.JobTimeout)
		}
		if _, err := notify.NewWebhook(c.Webhook); err != nil {
			return fmt.Errorf("Webhook: %w", err)
		}
	}
	if c.SMTP.URL != "" {
		if _, err := notify.NewEmail(c.SMTP); err != nil {
			return fmt.Errorf("SMTP: %w", err)
		}
	}
	if c.Tokens.JWTSecret != nil || c.Tokens.JWKSURL != "" {
		if _, err := accesstoken.New(c.Tokens); err != nil {
			return fmt.Errorf("Tokens: %w", err)
		}
	}
	// The HTTP settings (the dashboard's exposure, trusted proxies, limits,
	// the metrics address), as Start will build the server: New only
	// checks them.
	hcfg := c.HTTP
	hcfg.PublicURL = c.PublicURL
	hcfg.Dashboard, hcfg.Metrics = http.NotFoundHandler(), http.NotFoundHandler()
	if _, err := server.New(hcfg); err != nil {
		return fmt.Errorf("HTTP: %w", err)
	}
	return nil
}

// Daemon is a running keyworker. Start it once; Stop is idempotent.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics.Registry
	// keysCreated is keyworker_keys_created_total, set by registerMetrics.
	keysCreated atomic.Pointer[metrics.Counter]
	dbStats     statsCache

	pool    *pgxpool.Pool
	store   *keystore.Store
	jobs    *jobs.Client
	http    *server.Server
	tokens  *accesstoken.Verifier
	senders []notify.Sender
	// ui is set once River UI runs; the HTTP server starts before it.
	ui atomic.Pointer[riverui.Handler]
	// running is set when Start has brought every part up.
	running atomic.Bool

	// parts runs a goroutine per long-lived part Start brought up that can
	// end on its own (see supervise), and the job event watcher. partsCtx
	// ends with the first part's failure as its cause, or when Stop has
	// waited for them all. stopping is closed when Stop begins: a part
	// ending after it was stopped, not failed.
	parts    *errgroup.Group
	partsCtx context.Context
	stopping chan struct{}

	mu      sync.Mutex
	started bool
	stopped bool
	source  source  // set under mu: the HTTP server reads it
	capture Capture // set under mu with source
	cancel  context.CancelFunc
}

// source is a signup source: listener.Logical or listener.Listen.
type source interface {
	Start(ctx context.Context) error
	Stop()
	Status() listener.Status
}

// New checks cfg (every setting that can be checked without connecting:
// the HTTP server's, the notice senders', the token verifier's); nothing
// connects until Start.
func New(cfg Config) (*Daemon, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: cfg.Logger, metrics: metrics.New(), stopping: make(chan struct{})}
	d.parts, d.partsCtx = errgroup.WithContext(context.Background())
	var err error
	if d.senders, err = d.buildSenders(); err != nil {
		return nil, err
	}
	if cfg.Tokens.JWTSecret != nil || cfg.Tokens.JWKSURL != "" {
		if d.tokens, err = accesstoken.New(cfg.Tokens); err != nil {
			return nil, fmt.Errorf("Tokens: %w", err)
		}
	}
	return d, nil
}

// Start brings the parts up in order and fails fast: the database, the
// migrations, the key store, the HTTP server, the River client's setup, the
// signup source (its preflight), River, then River UI. On error everything
// started is stopped again. ctx bounds the start-up checks only; the parts
// run until Stop.
func (d *Daemon) Start(ctx context.Context) (err error) {
	d.mu.Lock()
	if d.started || d.stopped {
		d.mu.Unlock()
		return errors.New("starting daemon: it was already started")
	}
	d.started = true
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.cancel = cancel
	d.mu.Unlock()
	defer func() {
		if err != nil {
			d.Stop()
		}
	}()

	if err := d.connect(ctx, runCtx); err != nil {
		return err
	}
	if err := d.prepareSchema(ctx); err != nil {
		return err
	}
	if err := d.cfg.Table.Check(ctx, d.pool); err != nil {
		return err
	}
	if err := d.openStore(ctx); err != nil {
		return err
	}
	d.prepareTokens(ctx)
	// The HTTP server binds before the parts that need its address (the
	// notices carry the reveal URL, which with port 0 is known only now).
	// Until the rest is up, /readyz answers 503 and the dashboard 503.
	if err := d.startHTTP(runCtx); err != nil {
		return err
	}
	publicURL := d.publicURL()
	if err := d.newJobs(publicURL); err != nil {
		return err
	}
	// The source's preflight runs before River starts, so a setup error
	// (no publication, no REPLICATION, ...) stops the process before any
	// job runs. The source may enqueue at once: River inserts jobs without
	// a running client, and its workers pick them up when it starts.
	capture, err := d.startIntake(runCtx)
	if err != nil {
		return err
	}
	if err := d.startRiver(runCtx); err != nil {
		return err
	}
	if err := d.startUI(runCtx); err != nil {
		return err
	}

	d.running.Store(true)
	d.log.Info("keyworker running", "component", "daemon", "mode", capture.Mode, "schema", d.cfg.Schema, "users_table", d.cfg.Table.String(), "http", d.http.Addr(), "public_url", publicURL)
	return nil
}

// supervise watches a part Start brought up that can end on its own: ended
// is closed when it ends, and why says why (nil when Stop ended it). The
// first failure ends partsCtx with it as the cause; none is dropped, since
// errgroup keeps the first and Done stays closed.
//
// The signup source and River UI are not supervised: they do not end on
// their own. The source retries every error after its start with backoff
// and reports it through Status (and /readyz); River UI's services end with
// runCtx.
func (d *Daemon) supervise(name string, ended <-chan struct{}, why func() error) {
	d.parts.Go(func() error {
		select {
		case <-ended:
		case <-d.stopping:
			return nil
		}
		select {
		case <-d.stopping:
			return nil // Stop ended it
		default:
		}
		if err := why(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return fmt.Errorf("%s stopped on its own", name)
	})
}

// serveDashboard serves River UI once it runs.
func (d *Daemon) serveDashboard(w http.ResponseWriter, r *http.Request) {
	ui := d.ui.Load()
	if ui == nil {
		http.Error(w, "keyworker is starting: the dashboard is not ready yet", http.StatusServiceUnavailable)
		return
	}
	ui.ServeHTTP(w, r)
}

// Done is closed when a part fails on its own (the HTTP listener dies, for
// example), and when Stop has stopped every part; Err then says which. The
// caller Stops the daemon after a failure. It is safe for concurrent use
// and before Start.
func (d *Daemon) Done() <-chan struct{} { return d.partsCtx.Done() }

// Err is the first part's failure once Done is closed, or nil: before
// then, and when Stop ended the daemon without one.
func (d *Daemon) Err() error {
	if d.partsCtx.Err() == nil {
		return nil
	}
	// errgroup cancels partsCtx with the first error a part returned, or
	// with nothing (the bare context.Canceled) once Wait returns without
	// one. A part's error is always wrapped (supervise), never that value.
	if cause := context.Cause(d.partsCtx); cause != context.Canceled { //nolint:errorlint // identity: see above
		return cause
	}
	return nil
}

// Run starts the daemon, waits for ctx to end or a part to fail, and stops
// it. A cancelled ctx is a clean exit (nil); a failed part is Run's error.
func (d *Daemon) Run(ctx context.Context) error {
	if err := d.Start(ctx); err != nil {
		return err
	}
	var err error
	select {
	case <-ctx.Done():
		d.log.Info("shutting down", "component", "daemon", "timeout", d.cfg.ShutdownTimeout)
	case <-d.Done():
		if err = d.Err(); err != nil {
			d.log.Error("a part failed; shutting down", "component", "daemon", "error", err)
		}
	}
	d.Stop()
	return err
}

// Stop shuts down in order: intake first (the signup source sends its last
// acknowledgement), then River drains running jobs within ShutdownTimeout,
// then the HTTP server, then the parts' context (River UI), then the pool.
// It is idempotent and safe before Start.
func (d *Daemon) Stop() {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return
	}
	d.stopped = true
	close(d.stopping)
	src := d.source
	d.mu.Unlock()
	if src != nil {
		src.Stop()
	}
	if d.jobs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout)
		if err := d.jobs.Stop(ctx); err != nil {
			d.log.Warn("stopping River", "component", "daemon", "error", err)
		}
		cancel()
	}
	if d.http != nil {
		d.http.Stop()
	}
	if d.cancel != nil {
		d.cancel()
	}
	// Every watcher returns now (stopping is closed, runCtx cancelled); a
	// failure one saw stays in Err.
	_ = d.parts.Wait()
	if d.pool != nil {
		d.pool.Close()
	}
	if d.running.Load() {
		d.log.Info("stopped", "component", "daemon")
	}
}

// Addr is the HTTP server's bound address.
func (d *Daemon) Addr() string {
	if d.http == nil {
		return ""
	}
	return d.http.Addr()
}

// MetricsAddr is the metrics listener's bound address, or "" when /metrics
// is served on Addr.
func (d *Daemon) MetricsAddr() string {
	if d.http == nil {
		return ""
	}
	return d.http.MetricsAddr()
}

// Pool is the daemon's database pool (nil before Start).
func (d *Daemon) Pool() *pgxpool.Pool { return d.pool }

// Store is the key store (nil before Start).
func (d *Daemon) Store() *keystore.Store { return d.store }

// SourceStatus is the signup source's status (the zero Status before
// Start has made the source). It is safe for concurrent use.
func (d *Daemon) SourceStatus() listener.Status {
	d.mu.Lock()
	src := d.source
	d.mu.Unlock()
	if src == nil {
		return listener.Status{}
	}
	return src.Status()
}

// Capture is the signup source running and why it was chosen (the zero
// Capture before Start has started one). It is safe for concurrent use.
func (d *Daemon) Capture() Capture {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.capture
}

// buildSenders makes the configured notice senders (no connection yet).
func (d *Daemon) buildSenders() ([]notify.Sender, error) {
	var out []notify.Sender
	if d.cfg.Webhook.URL != "" {
		w, err := notify.NewWebhook(d.cfg.Webhook)
		if err != nil {
			return nil, fmt.Errorf("Webhook: %w", err)
		}
		out = append(out, w)
	}
	if d.cfg.SMTP.URL != "" {
		e, err := notify.NewEmail(d.cfg.SMTP)
		if err != nil {
			return nil, fmt.Errorf("SMTP: %w", err)
		}
		out = append(out, e)
	}
	if d.cfg.NotifyLog {
		out = append(out, notify.NewLog(d.log))
	}
	return out, nil
}

// verifyToken is the HTTP server's TokenFunc: it verifies the token, turns
// the verifier's errors into the server's (expired, or not judged at all),
// and leaves who may use keys to accesstoken.Policy.
func (d *Daemon) verifyToken(ctx context.Context, token string) (string, error) {
	claims, err := d.tokens.Verify(ctx, token)
	if err != nil {
		var rejected *accesstoken.Error
		switch {
		case errors.Is(err, accesstoken.ErrExpired):
			return "", fmt.Errorf("%w: %w", server.ErrTokenExpired, err)
		case errors.Is(err, accesstoken.ErrJWKSUnavailable), !errors.As(err, &rejected):
			// The key set cannot be had, or the wait for it ended: the
			// caller's token was not judged.
			return "", fmt.Errorf("%w: %w", server.ErrTokenUnverifiable, err)
		}
		return "", err
	}
	// Anonymous users get no keys unless IncludeAnonymous, so they may not
	// make any either. The refusal is logged, never answered (the client
	// gets 401 invalid_token): the hint is for the operator.
	id, err := accesstoken.Policy{IncludeAnonymous: d.cfg.IncludeAnonymous}.UserID(claims)
	if errors.Is(err, accesstoken.ErrAnonymous) {
		return "", fmt.Errorf("%w (IncludeAnonymous admits them)", err)
	}
	return id, err
}

func (d *Daemon) reveal(ctx context.Context, userID, remoteAddr string) (server.Revealed, error) {
	r, err := d.store.Reveal(ctx, d.pool, userID, keystore.Audit{Actor: "user", Detail: map[string]any{"remote_addr": remoteAddr}})
	if errors.Is(err, keystore.ErrNothingToReveal) {
		return server.Revealed{}, server.ErrNothingToReveal
	}
	if errors.Is(err, keys.ErrSealedUnderAnotherKey) {
		// The error names the box's fingerprint and this worker's; the
		// server logs it and tells the user retrying will not help.
		return server.Revealed{}, fmt.Errorf("%w: %w", server.ErrSealedUnderAnotherKey, err)
	}
	if err != nil {
		return server.Revealed{}, err
	}
	return server.Revealed{Key: r.Plaintext(), KeyID: r.KeyID, Prefix: r.Prefix, Last4: r.Last4, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt}, nil
}

// ready: the database answers and the signup source is streaming or
// standing by.
func (d *Daemon) ready(ctx context.Context) error {
	if err := d.pool.Ping(ctx); err != nil {
		return fmt.Errorf("database unreachable: %w", err)
	}
	if d.ui.Load() == nil {
		return errors.New("keyworker is starting")
	}
	st := d.SourceStatus()
	switch st.Role {
	case listener.RoleStreaming, listener.RoleStandby, listener.RoleListening:
		return nil
	}
	msg := fmt.Sprintf("signup source is %s", st.Role)
	if st.LastError != "" {
		msg += ": " + st.LastError
	}
	return errors.New(msg)
}
