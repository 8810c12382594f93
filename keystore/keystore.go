package keystore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyworker/keyworker/keys"
)

// Defaults of Config.
const (
	// DefaultSchema is Config.Schema's default.
	DefaultSchema = "keyworker"
	// DefaultRevealTTL is Config.RevealTTL's default: how long a new key
	// waits to be picked up.
	DefaultRevealTTL = 7 * 24 * time.Hour
	// DefaultName is the name of a key made without one.
	DefaultName = "default"

	minRevealTTL = time.Minute
	maxRevealTTL = 90 * 24 * time.Hour
	maxNameLen   = 200
)

// Sources of a key (api_keys.source).
const (
	// SourceSignup is the one key a user gets on signup; at most one per user.
	SourceSignup = "signup"
	// SourceManual is a key an operator made (or an operator's rotation
	// made).
	SourceManual = "manual"
	// SourceUser is a key its owner made (or rotated) through the HTTP API:
	// UserKeys.CreateTx and UserKeys.RotateTx.
	SourceUser = "user"
)

// Actors of an audit event (key_events.actor).
const (
	ActorWorker   = "worker"
	ActorOperator = "operator"
	ActorUser     = "user"
)

var (
	identRe = regexp.MustCompile(`^[a-z_][a-z0-9_$]{0,62}$`)
	uuidRe  = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	keyIDRe = regexp.MustCompile(`^[0-9A-Za-z]{27}$`)
)

// Config configures a Store.
type Config struct {
	// Schema holds api_keys, key_events and key_reveals. Defaults to
	// DefaultSchema ("keyworker").
	Schema string

	// Prefix is the prefix of new keys (existing keys keep theirs and stay
	// verifiable). Defaults to keys.DefaultPrefix ("sk").
	Prefix string

	// Sealer seals secrets waiting for pick-up and opens them on reveal.
	// Required.
	Sealer *keys.Sealer

	// RevealTTL is how long a new key waits to be picked up, between 1m and
	// 90 days. Defaults to DefaultRevealTTL (7 days).
	RevealTTL time.Duration

	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	c.Schema = cmp.Or(c.Schema, DefaultSchema)
	c.Prefix = cmp.Or(c.Prefix, keys.DefaultPrefix)
	c.RevealTTL = cmp.Or(c.RevealTTL, DefaultRevealTTL)
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c Config) validate() error {
	if !identRe.MatchString(c.Schema) {
		return fmt.Errorf("Schema %q is invalid: use a lowercase SQL identifier, e.g. %q", c.Schema, DefaultSchema)
	}
	if err := keys.ValidatePrefix(c.Prefix); err != nil {
		return fmt.Errorf("Prefix: %w", err)
	}
	if c.Sealer == nil {
		return errors.New("Sealer is required (keys.NewSealer with the sealing key)")
	}
	if c.RevealTTL < minRevealTTL || c.RevealTTL > maxRevealTTL {
		return fmt.Errorf("RevealTTL must be between %s and %s, got %s", minRevealTTL, maxRevealTTL, c.RevealTTL)
	}
	return nil
}

// Store keeps API keys in PostgreSQL. It is safe for concurrent use.
type Store struct {
	schema string
	prefix string
	sealer *keys.Sealer
	ttl    time.Duration
	now    func() time.Time
	q      queries
}

// New validates cfg and returns a Store. Its errors name the field at fault.
func New(cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("configuring key store: %w", err)
	}
	return &Store{
		schema: cfg.Schema,
		prefix: cfg.Prefix,
		sealer: cfg.Sealer,
		ttl:    cfg.RevealTTL,
		now:    cfg.Now,
		q:      newQueries(cfg.Schema),
	}, nil
}

// Schema returns the schema the Store works in.
func (s *Store) Schema() string { return s.schema }

// Prefix returns the prefix of new keys.
func (s *Store) Prefix() string { return s.prefix }

// RevealTTL returns how long a new key waits to be picked up.
func (s *Store) RevealTTL() time.Duration { return s.ttl }

// Now returns the Store's clock reading, at PostgreSQL's microsecond
// precision, in UTC.
func (s *Store) Now() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// Querier runs statements: *pgxpool.Pool, *pgx.Conn and pgx.Tx satisfy it.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Beginner starts transactions: *pgxpool.Pool, *pgx.Conn and pgx.Tx (a
// savepoint) satisfy it.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// NewKey describes a key to make.
type NewKey struct {
	// UserID is the owner's uuid. Required.
	UserID string
	// Name labels the key, 1 to 200 characters. Defaults to DefaultName.
	Name string
	// Source is SourceSignup, SourceManual or SourceUser. CreateTx defaults
	// it to SourceSignup, CreateWithPlaintext to SourceManual; UserKeys sets
	// SourceUser.
	Source string
	// ExpiresAt, when set, is when the key stops working; it must be in the
	// future.
	ExpiresAt *time.Time
	// RotatedFrom is the id of the key this one replaces, if any.
	RotatedFrom string
}

// Audit says who acts, for the key_events row a change writes.
type Audit struct {
	// JobID and Attempt identify the River job and attempt; zero when not
	// in a job.
	JobID   int64
	Attempt int
	// Actor is ActorWorker, ActorOperator or ActorUser. Defaults to
	// ActorWorker.
	Actor string
	// Detail is merged into the event's JSON detail (the Store's own keys
	// win). It must never hold a secret, an email address or a token.
	Detail map[string]any
}

// Created describes a key CreateTx, CreateWithPlaintext or Rotate made (or,
// with Existing, found).
type Created struct {
	ID, UserID, Name, Prefix, Last4, Source string
	CreatedAt                               time.Time
	ExpiresAt                               *time.Time
	// RevealExpiresAt is when the sealed secret stops waiting for pick-up;
	// zero when there is none (manual keys, or an existing key whose secret
	// was picked up or purged).
	RevealExpiresAt time.Time
	// RotatedFrom is the id of the key this one replaced, if any.
	RotatedFrom string
	// Existing reports that the user already had a signup key: nothing new
	// was made, no event written, and the fields describe the existing key.
	Existing bool
}

// Info is a key's metadata: everything but the hash and salt.
type Info struct {
	ID        string    `json:"id"`
	UserID    string    `json:"user_id"`
	Name      string    `json:"name"`
	Prefix    string    `json:"prefix"`
	Last4     string    `json:"last4"`
	Source    string    `json:"source"`
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is when the key stops working, if ever.
	ExpiresAt *time.Time `json:"expires_at"`
	// RevokedAt is when the key was or will be revoked; a future time is a
	// scheduled revocation (rotation overlap) and the key still works until
	// then.
	RevokedAt *time.Time `json:"revoked_at"`
	// LastUsedAt is when the key was last verified, at minute resolution.
	LastUsedAt *time.Time `json:"last_used_at"`
	// RotatedFrom is the id of the key this one replaced, if any.
	RotatedFrom string `json:"rotated_from,omitempty"`
	// DisabledAt is when the key's owner disabled it; nil while it is
	// enabled. Disabling is reversible (UserKeys.SetDisabled).
	DisabledAt *time.Time `json:"disabled_at"`
}

// Status is the key's state at now, regardless of any secret, in this
// order, as verify_api_key answers: StatusRevoked from RevokedAt on, else
// StatusExpired from ExpiresAt on, else StatusDisabled while DisabledAt is
// set, else StatusValid.
func (i Info) Status(now time.Time) keys.Status {
	switch {
	case i.RevokedAt != nil && !now.Before(*i.RevokedAt):
		return keys.StatusRevoked
	case i.ExpiresAt != nil && !now.Before(*i.ExpiresAt):
		return keys.StatusExpired
	case i.DisabledAt != nil:
		return keys.StatusDisabled
	}
	return keys.StatusValid
}

// String identifies the key without its secret, as keys.Key does.
func (i Info) String() string { return i.Prefix + "_" + i.ID + "_…" + i.Last4 }

func (a Audit) actor() (string, error) {
	switch a.Actor {
	case "":
		return ActorWorker, nil
	case ActorWorker, ActorOperator, ActorUser:
		return a.Actor, nil
	}
	return "", invalid("audit actor %q is not one of worker, operator, user", a.Actor)
}

// event is one key_events row to write.
type event struct {
	name, keyID, userID string
	detail              map[string]any
}

// params returns the arguments of insertEvent: occurred_at, event, key_id,
// user_id, job_id, attempt, actor, detail.
func (s *Store) eventArgs(now time.Time, e event, a Audit) ([]any, error) {
	actor, err := a.actor()
	if err != nil {
		return nil, err
	}
	detail := map[string]any{}
	maps.Copy(detail, a.Detail)
	maps.Copy(detail, e.detail)
	b, err := json.Marshal(detail)
	if err != nil {
		return nil, fmt.Errorf("encoding the detail of audit event %s: %w", e.name, err)
	}
	return []any{now, e.name, nullable(e.keyID), nullable(e.userID), nullableInt64(a.JobID), nullableInt64(int64(a.Attempt)), actor, string(b)}, nil
}

func (s *Store) writeEvent(ctx context.Context, db Querier, now time.Time, e event, a Audit) error {
	args, err := s.eventArgs(now, e, a)
	if err != nil {
		return err
	}
	if _, err := db.Exec(ctx, s.q.insertEvent, args...); err != nil {
		return fmt.Errorf("recording audit event %s: %w", e.name, err)
	}
	return nil
}

// EventTx writes one audit event (key_events row) with db, which may be the
// caller's transaction: event is a lowercase name such as "skipped" or
// "notified" (1 to 40 of a-z and _); keyID and userID may be empty. a.Detail
// is stored as the event's detail; it must not hold a secret or an email
// address.
func (s *Store) EventTx(ctx context.Context, db Querier, event, keyID, userID string, a Audit) error {
	if !eventRe.MatchString(event) {
		return invalid("event name %q must be 1 to 40 of a-z and _", event)
	}
	if userID != "" && !uuidRe.MatchString(userID) {
		return invalid("user id is not a uuid")
	}
	return s.writeEvent(ctx, db, s.Now(), eventOf(event, keyID, userID, nil), a)
}

var eventRe = regexp.MustCompile(`^[a-z_]{1,40}$`)

func eventOf(name, keyID, userID string, detail map[string]any) event {
	return event{name: name, keyID: keyID, userID: userID, detail: detail}
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullableInt64(n int64) any {
	if n == 0 {
		return nil
	}
	return n
}

// checkKeyID rejects ids that cannot be a KSUID before they reach SQL.
func checkKeyID(id string) error {
	if !keyIDRe.MatchString(id) {
		return fmt.Errorf("%w: key id must be 27 base62 characters", ErrNotFound)
	}
	return nil
}

func checkUserID(id string) error {
	if !uuidRe.MatchString(id) {
		return invalid("user id %q is not a uuid", truncate(id, 40))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// Get returns the metadata of the key keyID, or an error wrapping ErrNotFound.
func (s *Store) Get(ctx context.Context, db Querier, keyID string) (Info, error) {
	i, err := s.lookup(ctx, db, keyID, "")
	if err != nil {
		return Info{}, fmt.Errorf("getting key %s: %w", keyID, err)
	}
	return i, nil
}

// lookup reads key keyID, of owner only when owner is not "": ErrNotFound
// (unwrapped) when there is no such key, or it is someone else's.
func (s *Store) lookup(ctx context.Context, db Querier, keyID, owner string) (Info, error) {
	if !keyIDRe.MatchString(keyID) {
		return Info{}, ErrNotFound
	}
	i, err := scanInfo(db.QueryRow(ctx, s.q.info, keyID, nullable(owner)))
	if errors.Is(err, pgx.ErrNoRows) {
		return Info{}, ErrNotFound
	}
	return i, err
}

// List returns the metadata of userID's keys, or of every key when userID is
// "", newest first, at most limit of them (no limit when limit <= 0).
func (s *Store) List(ctx context.Context, db Querier, userID string, limit int) ([]Info, error) {
	if userID != "" {
		if err := checkUserID(userID); err != nil {
			return nil, err
		}
	}
	var lim any
	if limit > 0 {
		lim = limit
	}
	rows, err := db.Query(ctx, s.q.list, userID, lim)
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Info, error) { return scanInfo(r) })
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", err)
	}
	return out, nil
}

// PendingReveal returns when the sealed secret of key keyID stops waiting
// for pick-up, and false when none is waiting (picked up, purged, or never
// sealed).
func (s *Store) PendingReveal(ctx context.Context, db Querier, keyID string) (time.Time, bool, error) {
	var at time.Time
	err := db.QueryRow(ctx, s.q.pendingReveal, keyID).Scan(&at)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("reading pending reveal of key %s: %w", keyID, err)
	}
	return at.UTC(), true, nil
}

// Revoke revokes key keyID at `at` (now when zero; a later time schedules
// the revocation, and the key works until then) and records a 'revoked'
// event in the same statement. A secret still waiting for pick-up is deleted
// when the revocation is not in the future. It returns false when the key was
// already revoked at or before `at`, and an error wrapping ErrNotFound when
// there is no such key.
func (s *Store) Revoke(ctx context.Context, db Querier, keyID string, at time.Time, a Audit) (bool, error) {
	_, changed, err := s.revoke(ctx, db, keyID, "", at, a)
	return changed, err
}

// revoke is Revoke of owner's key (any key when owner is ""), returning the
// key as it is after.
func (s *Store) revoke(ctx context.Context, db Querier, keyID, owner string, at time.Time, a Audit) (Info, bool, error) {
	if err := checkKeyID(keyID); err != nil {
		return Info{}, false, fmt.Errorf("revoking key: %w", err)
	}
	now := s.Now()
	if at.IsZero() {
		at = now
	}
	at = at.UTC().Truncate(time.Microsecond)
	args, err := s.eventArgs(now, eventOf("revoked", keyID, "", nil), a)
	if err != nil {
		return Info{}, false, err
	}
	// args: now, event, key, user, job, attempt, actor, detail
	i, err := scanInfo(db.QueryRow(ctx, s.q.revoke, keyID, at, now, args[4], args[5], args[6], args[7], nullable(owner)))
	if err == nil {
		return i, true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Info{}, false, fmt.Errorf("revoking key %s: %w", keyID, err)
	}
	// Nothing changed: no such key (of owner's), or revoked already.
	if i, err = s.lookup(ctx, db, keyID, owner); err != nil {
		return Info{}, false, fmt.Errorf("revoking key %s: %w", keyID, err)
	}
	return i, false, nil
}

// PurgeExpiredReveals deletes every sealed secret whose pick-up window has
// passed and records a 'reveal_expired' event for each, in one statement. It
// returns how many it deleted.
func (s *Store) PurgeExpiredReveals(ctx context.Context, db Querier) (int, error) {
	tag, err := db.Exec(ctx, s.q.purge, s.Now())
	if err != nil {
		return 0, fmt.Errorf("purging expired reveals: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
