package listener

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/users"
)

// Defaults for Config.
const (
	DefaultSchema              = "keyworker"
	DefaultSlotName            = "keyworker"
	DefaultPublicationName     = "keyworker_signups"
	DefaultBatchMaxRows        = 1000
	DefaultBatchMaxWait        = 5 * time.Millisecond
	DefaultStatusInterval      = 10 * time.Second
	DefaultBackoffMin          = 250 * time.Millisecond
	DefaultBackoffMax          = 30 * time.Second
	DefaultStandbyPollInterval = time.Second
	DefaultConnectTimeout      = 10 * time.Second
	DefaultHandOffTimeout      = 30 * time.Second
	DefaultChannel             = "keyworker_signup"
	DefaultPollInterval        = time.Second
)

// Bounds checked by validation.
const (
	MaxBatchMaxRows   = 100_000
	MinBatchMaxWait   = time.Millisecond
	MaxBatchMaxWait   = 10 * time.Second
	MinStatusInterval = 100 * time.Millisecond
	// MaxStatusInterval is the longest gap between two status messages to
	// the server. Issue 3 asks for one at least every 10 s.
	MaxStatusInterval = 10 * time.Second
	MinPollInterval   = 10 * time.Millisecond
	MaxPollInterval   = time.Hour
)

// Config configures both sources: Logical (NewLogical) and Listen
// (NewListen). Fields marked "listen mode" are ignored by Logical, and the
// replication fields by Listen. Only ConnString and Enqueuer are required.
type Config struct {
	// ConnString is the connection to the database (a URL or keyword/value
	// string): direct in logical mode, which opens its replication
	// connection from it with replication=database added; direct or through
	// a session pooler in listen mode, whose LISTEN needs a session of its
	// own. Never a transaction pooler. Required.
	ConnString string

	// Pool runs the hand-off transactions (listen mode's outbox drains
	// among them), the preflight queries and the reconcile requests. A pool
	// passed in is never closed. Defaults to a pool opened from ConnString
	// by Start and closed by Stop (or when Start fails).
	Pool *pgxpool.Pool

	// Enqueuer turns signups into jobs inside the hand-off transaction.
	// Required.
	Enqueuer Enqueuer

	// Schema is keyworker's own schema: the replication checkpoint, the
	// installation time, api_keys and listen mode's trigger function live
	// there. Defaults to DefaultSchema.
	Schema string

	// Table is the users table and its columns. Empty fields take the
	// defaults of users.Table.WithDefaults. Defaults to auth.users.
	Table users.Table

	// IncludeAnonymous makes anonymous users (the table's anonymous column is
	// true) signups too. When false they are filtered out, and the reconciler
	// finds them once they become permanent. Defaults to false.
	IncludeAnonymous bool

	// SlotName is the permanent logical replication slot. Slot names are
	// cluster-wide: two keyworker installations on one server need two names.
	// Defaults to DefaultSlotName.
	SlotName string

	// PublicationName is the publication on Table. Defaults to
	// DefaultPublicationName.
	PublicationName string

	// BatchMaxRows is the row count at which a batch of replication
	// transactions is handed off without waiting for more. One replication
	// transaction is never split, so a batch can exceed it by one
	// transaction's rows. Defaults to DefaultBatchMaxRows.
	BatchMaxRows int

	// BatchMaxWait is how long the first signup of a batch waits for more
	// before the batch is handed off. It bounds the latency batching adds.
	// Defaults to DefaultBatchMaxWait.
	BatchMaxWait time.Duration

	// StatusInterval is the longest gap between two status messages to the
	// server; at most MaxStatusInterval. Defaults to DefaultStatusInterval.
	StatusInterval time.Duration

	// BackoffMin and BackoffMax bound the exponential backoff between
	// reconnection attempts and failed hand-offs. Default to DefaultBackoffMin
	// and DefaultBackoffMax.
	BackoffMin, BackoffMax time.Duration

	// StandbyPollInterval is how often a standby (another replica holds the
	// slot) checks whether the slot has been released. Defaults to
	// DefaultStandbyPollInterval.
	StandbyPollInterval time.Duration

	// ConnectTimeout bounds opening the replication or LISTEN connection.
	// Defaults to DefaultConnectTimeout.
	ConnectTimeout time.Duration

	// HandOffTimeout bounds one hand-off transaction; a hand-off that runs
	// out of time is rolled back and retried. Defaults to
	// DefaultHandOffTimeout.
	HandOffTimeout time.Duration

	// Channel is listen mode's NOTIFY channel. Defaults to DefaultChannel.
	Channel string

	// PollInterval is how often listen mode looks in the outbox when no
	// notification woke it. Notifications are wake-ups only (a signup skips
	// notifying while another transaction in flight notifies), so this
	// bounds how long a signup whose wake-up went to an earlier drain can
	// wait. Defaults to DefaultPollInterval.
	PollInterval time.Duration

	// Logger receives the sources' logs, with a component attribute.
	// Defaults to discarding.
	Logger *slog.Logger

	// OnBatch, when set, is called after every hand-off commits, from the
	// goroutine that committed it. It must return quickly; it is meant for
	// metrics. Defaults to nil.
	OnBatch func(Batch)
}

var (
	identRe = regexp.MustCompile(`^[a-z_][a-z0-9_$]{0,62}$`)
	slotRe  = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)
)

// withDefaults returns a copy of c with every unset field at its default.
func (c Config) withDefaults() Config {
	set := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	setD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	set(&c.Schema, DefaultSchema)
	set(&c.SlotName, DefaultSlotName)
	set(&c.PublicationName, DefaultPublicationName)
	set(&c.Channel, DefaultChannel)
	c.Table = c.Table.WithDefaults()
	c.BatchMaxRows = cmp.Or(c.BatchMaxRows, DefaultBatchMaxRows)
	setD(&c.BatchMaxWait, DefaultBatchMaxWait)
	setD(&c.StatusInterval, DefaultStatusInterval)
	setD(&c.BackoffMin, DefaultBackoffMin)
	setD(&c.BackoffMax, DefaultBackoffMax)
	setD(&c.StandbyPollInterval, DefaultStandbyPollInterval)
	setD(&c.ConnectTimeout, DefaultConnectTimeout)
	setD(&c.HandOffTimeout, DefaultHandOffTimeout)
	setD(&c.PollInterval, DefaultPollInterval)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// validate reports the first setting that is wrong, naming the field and
// its bound. It expects a config that went through withDefaults.
func (c Config) validate() error {
	if c.ConnString == "" {
		return errors.New("ConnString is required: a direct connection to the database")
	}
	if _, err := pgconn.ParseConfig(c.ConnString); err != nil {
		return fmt.Errorf("ConnString is invalid: %w", err)
	}
	if c.Enqueuer == nil {
		return errors.New("Enqueuer is required")
	}
	if !identRe.MatchString(c.Schema) {
		return fmt.Errorf("Schema must be a lowercase SQL identifier, got %q", c.Schema)
	}
	if err := c.Table.Validate(); err != nil {
		return fmt.Errorf("Table: %w", err)
	}
	if !slotRe.MatchString(c.SlotName) {
		return fmt.Errorf("SlotName must be 1 to 63 lowercase letters, digits or underscores, got %q", c.SlotName)
	}
	if !identRe.MatchString(c.PublicationName) {
		return fmt.Errorf("PublicationName must be a lowercase SQL identifier, got %q", c.PublicationName)
	}
	if !identRe.MatchString(c.Channel) {
		return fmt.Errorf("Channel must be a lowercase SQL identifier, got %q", c.Channel)
	}
	type bound struct {
		name      string
		v, lo, hi time.Duration
	}
	for _, b := range []bound{
		{"BatchMaxWait", c.BatchMaxWait, MinBatchMaxWait, MaxBatchMaxWait},
		{"StatusInterval", c.StatusInterval, MinStatusInterval, MaxStatusInterval},
		{"BackoffMin", c.BackoffMin, time.Millisecond, time.Minute},
		{"BackoffMax", c.BackoffMax, c.BackoffMin, time.Hour},
		{"StandbyPollInterval", c.StandbyPollInterval, 10 * time.Millisecond, time.Minute},
		{"ConnectTimeout", c.ConnectTimeout, 100 * time.Millisecond, 5 * time.Minute},
		{"HandOffTimeout", c.HandOffTimeout, 100 * time.Millisecond, time.Hour},
		{"PollInterval", c.PollInterval, MinPollInterval, MaxPollInterval},
	} {
		if b.v < b.lo || b.v > b.hi {
			return fmt.Errorf("%s must be between %s and %s, got %s", b.name, b.lo, b.hi, b.v)
		}
	}
	if c.BatchMaxRows < 1 || c.BatchMaxRows > MaxBatchMaxRows {
		return fmt.Errorf("BatchMaxRows must be between 1 and %d, got %d", MaxBatchMaxRows, c.BatchMaxRows)
	}
	return nil
}
