package jobs

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/keyworker/keyworker/keystore"
	"github.com/keyworker/keyworker/notify"
	"github.com/keyworker/keyworker/users"
)

// Defaults of Config.
const (
	// DefaultSchema is Config.Schema's default: River's tables live there too.
	DefaultSchema = "keyworker"
	// DefaultEmailColumn is Config.EmailColumn's default.
	DefaultEmailColumn = "email"
	// DefaultKeyWorkers is Config.KeyWorkers's default.
	DefaultKeyWorkers = 10
	// DefaultNoticeWorkers is Config.NoticeWorkers's default.
	DefaultNoticeWorkers = 10
	// DefaultMaintenanceWorkers is Config.MaintenanceWorkers's default.
	DefaultMaintenanceWorkers = 2
	// DefaultCreateKeyMaxAttempts is Config.CreateKeyMaxAttempts's default.
	DefaultCreateKeyMaxAttempts = 25
	// DefaultNoticeMaxAttempts is Config.NoticeMaxAttempts's default.
	DefaultNoticeMaxAttempts = 12
	// DefaultJobTimeout is Config.JobTimeout's default.
	DefaultJobTimeout = time.Minute
	// MinJobTimeout and MaxJobTimeout bound Config.JobTimeout.
	MinJobTimeout = time.Second
	MaxJobTimeout = time.Hour
	// DefaultCompletedJobRetention is Config.CompletedJobRetention's default.
	DefaultCompletedJobRetention = 7 * 24 * time.Hour
	// DefaultFetchCooldown is Config.FetchCooldown's default. River's own
	// (100ms) caps a queue at MaxWorkers jobs per 100ms, 100 keys/s with
	// 10 workers, however idle the database; a fetch costs one indexed
	// query, and happens only while jobs keep arriving.
	DefaultFetchCooldown = 2 * time.Millisecond
	// DefaultFetchPollInterval is Config.FetchPollInterval's default. River
	// notifies its fetchers of an insert at most once per FetchCooldown per
	// queue and drops the notifications in between; a job inserted just
	// after another waits for the next poll. River's own poll (1s) made
	// keys wait up to a second at a steady 500 signups/s; a poll costs one
	// indexed query per queue. Notice jobs are inserted without a
	// notification and found by this poll.
	DefaultFetchPollInterval = 50 * time.Millisecond
	// DefaultReconcileInterval is Config.ReconcileInterval's default.
	DefaultReconcileInterval = 5 * time.Minute
	// DefaultPurgeInterval is Config.PurgeInterval's default.
	DefaultPurgeInterval = time.Hour
	// DefaultLifecycleInterval is Config.LifecycleInterval's default.
	DefaultLifecycleInterval = time.Minute
	// DefaultExpiringNoticeBefore is Config.ExpiringNoticeBefore's default.
	DefaultExpiringNoticeBefore = 72 * time.Hour
	// MaxExpiringNoticeBefore is the longest Config.ExpiringNoticeBefore.
	MaxExpiringNoticeBefore = 365 * 24 * time.Hour
	// ExpiredNoticeWindow bounds api_key.expired notices: a key that expired
	// longer ago than this (while the workers were stopped, say) gets none,
	// and neither does one that expired before migration 007 was applied.
	ExpiredNoticeWindow = 7 * 24 * time.Hour
	// LifecycleBatchSize is how many notices of one type the lifecycle scan
	// enqueues per statement and transaction, with their
	// DeliverLifecycleNotices jobs; it loops until none are left.
	LifecycleBatchSize = 1000
	// PickupURLKeyID is what Config.PickupURL holds where the key's id goes.
	PickupURLKeyID = "{key_id}"
	// MaxBatchUsers is the most users one CreateKeys job holds: a listener
	// hand-off or a reconcile page of more becomes several jobs.
	MaxBatchUsers = 1000
	// ReconcilePageSize is how many users a reconcile reads and enqueues per
	// transaction, as one CreateKeys job.
	ReconcilePageSize = MaxBatchUsers
	// DefaultNoticeConcurrency is Config.NoticeConcurrency's default.
	DefaultNoticeConcurrency = 32
	// ReconcileTimeout bounds one reconcile job (the page loop over the
	// whole users table), whatever JobTimeout says.
	ReconcileTimeout = 30 * time.Minute
)

var identRe = regexp.MustCompile(`^[a-z_][a-z0-9_$]{0,62}$`)

// Config configures a Client.
type Config struct {
	// Schema holds River's tables and keyworker's (api_keys, key_events, ...);
	// it must be Store's schema. Defaults to DefaultSchema ("keyworker").
	Schema string

	// Table is the users table. Empty fields take users.Table's defaults
	// (Supabase's auth.users).
	Table users.Table

	// Store makes and reads keys. Required.
	Store *keystore.Store

	// Senders deliver the notices (a key made and waiting to be picked up,
	// rotated, revoked, disabled, expiring, expired), each once per key and
	// event. Names must differ. Defaults to none: no notice is sent.
	Senders []notify.Sender

	// RevealURL is the public URL of POST /v1/keys/reveal, put into every
	// notice for backends (webhook payloads carry it as reveal_url); emails
	// never link it, since it takes POST only. Required when there are
	// Senders; http or https.
	RevealURL string

	// PickupURL is the application's own page where a user picks a signup
	// key up, as a URL template: PickupURLKeyID ("{key_id}") is replaced by
	// the key's id, path-escaped, e.g.
	// "https://app.example.com/keys/{key_id}/pickup". Created notices link
	// it ("pick it up here, once") and webhook payloads carry it as
	// pickup_url. Empty (the default): notices link no page and tell the
	// user to sign in to the application to pick the key up. When set it
	// must be an absolute http or https URL containing {key_id}.
	PickupURL string

	// LifecycleInterval is how often the leader enqueues the
	// api_key.expiring and api_key.expired notices that are due (once when
	// it becomes leader, then every interval), between 1s and 24h. An
	// expired notice goes out within about one interval of the expiry.
	// Defaults to DefaultLifecycleInterval (1m).
	LifecycleInterval time.Duration

	// ExpiringNoticeBefore is how long before a key expires its
	// api_key.expiring notice is sent: keys that are neither revoked (nor
	// scheduled to be before they expire) nor disabled, and that existed
	// before their expiry came this close (a key made with a shorter
	// lifetime gets no "expires soon" notice: its owner chose it). A
	// negative value sends no expiring notices; otherwise between 1m and
	// MaxExpiringNoticeBefore (365 days). Defaults to
	// DefaultExpiringNoticeBefore (72h). api_key.expired notices are sent
	// whatever this says, for keys that expired after migration 007 and
	// within ExpiredNoticeWindow, unless revoked.
	ExpiringNoticeBefore time.Duration

	// EmailColumn is the users table's email column, read when a notice is
	// sent (never stored in a job). Defaults to DefaultEmailColumn
	// ("email"); "-" means the table has none.
	EmailColumn string

	// IncludeAnonymous gives anonymous users a key too. Defaults to false.
	IncludeAnonymous bool

	// KeyTTL is the lifetime of new signup keys: 0 (the default) means they
	// do not expire; otherwise at least 1m.
	KeyTTL time.Duration

	// KeyWorkers, NoticeWorkers and MaintenanceWorkers are how many jobs run
	// at once per process in the queues QueueKeys, QueueNotices and
	// QueueMaintenance, between 1 and 1000. Default to DefaultKeyWorkers
	// (10), DefaultNoticeWorkers (10) and DefaultMaintenanceWorkers (2).
	KeyWorkers, NoticeWorkers, MaintenanceWorkers int

	// NoticeConcurrency is how many notices one notice job sends at once
	// (each key to each sender is one send), between 1 and 1000. Defaults
	// to DefaultNoticeConcurrency (32).
	NoticeConcurrency int

	// CreateKeyMaxAttempts and NoticeMaxAttempts are how many times a
	// create-key job and a notice job may fail before River discards them,
	// between 1 and 100. For notices, snoozes for a sink's Retry-After count
	// too. Default to DefaultCreateKeyMaxAttempts (25) and
	// DefaultNoticeMaxAttempts (12).
	CreateKeyMaxAttempts, NoticeMaxAttempts int

	// JobTimeout bounds one attempt of a job (reconciles get
	// ReconcileTimeout), between 1s and 1h. Defaults to DefaultJobTimeout
	// (1m).
	JobTimeout time.Duration

	// CompletedJobRetention is how long River keeps completed and cancelled
	// jobs, which are the audit trail in River UI; -1 keeps them forever, or
	// at least 1m. Defaults to DefaultCompletedJobRetention (7 days).
	// Discarded jobs keep River's default of 7 days.
	CompletedJobRetention time.Duration

	// ReconcileInterval is how often the leader runs a reconcile (a
	// Reconcile job: eligible users without a signup key go to CreateKeys
	// jobs), the first one interval after it becomes leader, between 1s and
	// 24h. Defaults to DefaultReconcileInterval
	// (5m).
	ReconcileInterval time.Duration

	// PurgeInterval is how often the leader deletes sealed secrets whose
	// pick-up window has passed, between 1s and 24h. Defaults to
	// DefaultPurgeInterval (1h).
	PurgeInterval time.Duration

	// RetryPolicy says when a failed job runs again. Defaults to River's
	// DefaultClientRetryPolicy (attempt^4 seconds, with jitter).
	RetryPolicy river.ClientRetryPolicy

	// FetchPollInterval and FetchCooldown tune how River finds new jobs
	// (it is told of most at once through LISTEN/NOTIFY; notice jobs wait
	// for the poll). Default to DefaultFetchPollInterval (50ms) and
	// DefaultFetchCooldown (2ms).
	FetchPollInterval, FetchCooldown time.Duration

	// OnEvent, when set, is called with each job outcome (keys made,
	// notices sent, failed or discarded, reconcile counts), for metrics. It
	// is called from the workers' goroutines, concurrently, after the
	// outcome is recorded: it must be safe for concurrent use and quick.
	OnEvent func(Event)

	// Logger receives the jobs' logs (component=jobs) and River's
	// (component=river). No line holds a key, a secret or an email address.
	// Defaults to discarding.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	c.Schema = cmp.Or(c.Schema, DefaultSchema)
	c.Table = c.Table.WithDefaults()
	switch c.EmailColumn {
	case "":
		c.EmailColumn = DefaultEmailColumn
	case "-":
		c.EmailColumn = ""
	}
	c.KeyWorkers = orDefault(c.KeyWorkers, DefaultKeyWorkers)
	c.NoticeWorkers = orDefault(c.NoticeWorkers, DefaultNoticeWorkers)
	c.MaintenanceWorkers = orDefault(c.MaintenanceWorkers, DefaultMaintenanceWorkers)
	c.NoticeConcurrency = orDefault(c.NoticeConcurrency, DefaultNoticeConcurrency)
	c.CreateKeyMaxAttempts = orDefault(c.CreateKeyMaxAttempts, DefaultCreateKeyMaxAttempts)
	c.NoticeMaxAttempts = orDefault(c.NoticeMaxAttempts, DefaultNoticeMaxAttempts)
	c.JobTimeout = orDefault(c.JobTimeout, DefaultJobTimeout)
	c.CompletedJobRetention = orDefault(c.CompletedJobRetention, DefaultCompletedJobRetention)
	c.ReconcileInterval = orDefault(c.ReconcileInterval, DefaultReconcileInterval)
	c.PurgeInterval = orDefault(c.PurgeInterval, DefaultPurgeInterval)
	c.LifecycleInterval = orDefault(c.LifecycleInterval, DefaultLifecycleInterval)
	c.ExpiringNoticeBefore = orDefault(c.ExpiringNoticeBefore, DefaultExpiringNoticeBefore)
	c.FetchCooldown = orDefault(c.FetchCooldown, DefaultFetchCooldown)
	c.FetchPollInterval = orDefault(c.FetchPollInterval, max(DefaultFetchPollInterval, c.FetchCooldown))
	if c.RetryPolicy == nil {
		c.RetryPolicy = &river.DefaultClientRetryPolicy{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func orDefault[T comparable](v, d T) T {
	var zero T
	if v == zero {
		return d
	}
	return v
}

func (c Config) validate() error {
	if !identRe.MatchString(c.Schema) {
		return fmt.Errorf("Schema %q is invalid: use a lowercase SQL identifier, e.g. %q", c.Schema, DefaultSchema)
	}
	if err := c.Table.Validate(); err != nil {
		return fmt.Errorf("Table: %w", err)
	}
	if c.Store == nil {
		return errors.New("Store is required")
	}
	if c.Store.Schema() != c.Schema {
		return fmt.Errorf("Store works in schema %q but Schema is %q; they must be the same", c.Store.Schema(), c.Schema)
	}
	names := map[string]bool{}
	for i, s := range c.Senders {
		if s == nil {
			return fmt.Errorf("Senders[%d] is nil", i)
		}
		if !eventNameRe.MatchString(s.Name()) {
			return fmt.Errorf("Senders[%d] has name %q; a sender name must be 1 to 40 of a-z, 0-9 and _", i, s.Name())
		}
		if names[s.Name()] {
			return fmt.Errorf("Senders has two senders named %q; names must differ", s.Name())
		}
		names[s.Name()] = true
	}
	if len(c.Senders) > 0 {
		u, err := url.Parse(c.RevealURL)
		if c.RevealURL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("RevealURL must be the absolute http or https URL of POST /v1/keys/reveal when there are Senders, got %q", c.RevealURL)
		}
	}
	if err := validatePickupURL(c.PickupURL); err != nil {
		return err
	}
	if c.EmailColumn != "" && !identRe.MatchString(c.EmailColumn) {
		return fmt.Errorf("EmailColumn %q is invalid: use a lowercase SQL identifier, or \"-\" if the users table has none", c.EmailColumn)
	}
	for _, w := range []struct {
		name string
		n    int
	}{{"KeyWorkers", c.KeyWorkers}, {"NoticeWorkers", c.NoticeWorkers}, {"MaintenanceWorkers", c.MaintenanceWorkers}, {"NoticeConcurrency", c.NoticeConcurrency}} {
		if w.n < 1 || w.n > 1000 {
			return fmt.Errorf("%s must be between 1 and 1000, got %d", w.name, w.n)
		}
	}
	for _, m := range []struct {
		name string
		n    int
	}{{"CreateKeyMaxAttempts", c.CreateKeyMaxAttempts}, {"NoticeMaxAttempts", c.NoticeMaxAttempts}} {
		if m.n < 1 || m.n > 100 {
			return fmt.Errorf("%s must be between 1 and 100, got %d", m.name, m.n)
		}
	}
	if c.KeyTTL != 0 && c.KeyTTL < time.Minute {
		return fmt.Errorf("KeyTTL must be 0 (keys do not expire) or at least 1m, got %s", c.KeyTTL)
	}
	if err := between("JobTimeout", c.JobTimeout, MinJobTimeout, MaxJobTimeout); err != nil {
		return err
	}
	if c.CompletedJobRetention != -1 && c.CompletedJobRetention < time.Minute {
		return fmt.Errorf("CompletedJobRetention must be -1 (forever) or at least 1m, got %s", c.CompletedJobRetention)
	}
	if err := between("ReconcileInterval", c.ReconcileInterval, time.Second, 24*time.Hour); err != nil {
		return err
	}
	if err := between("PurgeInterval", c.PurgeInterval, time.Second, 24*time.Hour); err != nil {
		return err
	}
	if err := between("LifecycleInterval", c.LifecycleInterval, time.Second, 24*time.Hour); err != nil {
		return err
	}
	if c.ExpiringNoticeBefore >= 0 && (c.ExpiringNoticeBefore < time.Minute || c.ExpiringNoticeBefore > MaxExpiringNoticeBefore) {
		return fmt.Errorf("ExpiringNoticeBefore must be negative (no expiring notices) or between 1m and %s, got %s", MaxExpiringNoticeBefore, c.ExpiringNoticeBefore)
	}
	if c.FetchPollInterval < 0 || c.FetchCooldown < 0 {
		return fmt.Errorf("FetchPollInterval and FetchCooldown must not be negative, got %s and %s", c.FetchPollInterval, c.FetchCooldown)
	}
	return nil
}

// validatePickupURL checks Config.PickupURL: empty, or an absolute http or
// https URL with {key_id} in it.
func validatePickupURL(tmpl string) error {
	if tmpl == "" {
		return nil
	}
	const example = "https://app.example.com/keys/{key_id}/pickup"
	if !strings.Contains(tmpl, PickupURLKeyID) {
		return fmt.Errorf("PickupURL must contain %s where the key's id goes, e.g. %q, got %q", PickupURLKeyID, example, tmpl)
	}
	u, err := url.Parse(pickupURL(tmpl, "2zVexamplekeyidexamplekeyid"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("PickupURL must be an absolute http or https URL, e.g. %q, got %q", example, tmpl)
	}
	return nil
}

// pickupURL fills PickupURL's template in for keyID.
func pickupURL(tmpl, keyID string) string {
	return strings.ReplaceAll(tmpl, PickupURLKeyID, url.PathEscape(keyID))
}

func between(name string, d, lo, hi time.Duration) error {
	if d < lo || d > hi {
		return fmt.Errorf("%s must be between %s and %s, got %s", name, lo, hi, d)
	}
	return nil
}

var eventNameRe = regexp.MustCompile(`^[a-z0-9_]{1,40}$`)
