package keystore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/internal/pgerr"
	"github.com/keyworker/keyworker/keys"
)

// CreateTx makes a key in the caller's transaction and seals its secret into
// key_reveals for a one-time pick-up (Reveal) until RevealTTL passes. It
// records a 'created' event in the same transaction. nk.Source defaults to
// SourceSignup.
//
// A user has at most one signup key: when one exists (made before, or by a
// concurrent transaction that committed first), CreateTx makes nothing and
// returns the existing key's metadata with Existing set. The plaintext never
// leaves CreateTx except sealed.
//
// Errors wrap ErrInvalid (malformed nk or a), ErrUserNotFound (no such user),
// or the database error; an error leaves tx aborted.
func (s *Store) CreateTx(ctx context.Context, tx pgx.Tx, nk NewKey, a Audit) (Created, error) {
	nk.Source = cmp.Or(nk.Source, SourceSignup)
	now := s.Now()
	c, k, err := s.insert(ctx, tx, nk, a, now)
	if err != nil || c.Existing {
		return c, err
	}
	box, err := s.sealer.Seal(k.ID, c.UserID, []byte(k.Plaintext()))
	if err != nil {
		return Created{}, fmt.Errorf("creating key %s: %w", k.ID, err)
	}
	c.RevealExpiresAt = now.Add(s.ttl)
	if _, err := tx.Exec(ctx, s.q.insertReveal, k.ID, nk.UserID, box, now, c.RevealExpiresAt); err != nil {
		return Created{}, fmt.Errorf("creating key %s: storing the sealed secret: %w", k.ID, err)
	}
	if err := s.writeEvent(ctx, tx, now, createdEvent(c), a); err != nil {
		return Created{}, fmt.Errorf("creating key %s: %w", k.ID, err)
	}
	return c, nil
}

// CreateWithPlaintext makes a key (nk.Source defaults to, and must be,
// SourceManual) in its own transaction on db, records a 'created' event, and
// returns the plaintext, for the operator's terminal only: nothing is
// sealed, so the key cannot be revealed later. Errors are as CreateTx's.
func (s *Store) CreateWithPlaintext(ctx context.Context, db Beginner, nk NewKey, a Audit) (Created, string, error) {
	nk.Source = cmp.Or(nk.Source, SourceManual)
	if nk.Source != SourceManual {
		return Created{}, "", invalid("CreateWithPlaintext makes manual keys only, got source %q", nk.Source)
	}
	var c Created
	var plaintext string
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var err error
		c, plaintext, err = s.createPlain(ctx, tx, nk, a, s.Now())
		return err
	})
	if err != nil {
		return Created{}, "", err
	}
	return c, plaintext, nil
}

// createPlain inserts a key that is not sealed and its 'created' event, and
// returns the plaintext.
func (s *Store) createPlain(ctx context.Context, tx Querier, nk NewKey, a Audit, now time.Time) (Created, string, error) {
	c, k, err := s.insert(ctx, tx, nk, a, now)
	if err != nil {
		return Created{}, "", err
	}
	if err := s.writeEvent(ctx, tx, now, createdEvent(c), a); err != nil {
		return Created{}, "", fmt.Errorf("creating key %s: %w", k.ID, err)
	}
	return c, k.Plaintext(), nil
}

// Rotate replaces key keyID: in one transaction it makes a manual key for the
// same user with the same name (and, when the old key expires, the same
// lifetime from now), schedules the old key's revocation at now+overlap or
// its expiry, whichever is first (an earlier scheduled revocation stays), and
// records 'created' for the new key and 'rotated' for the old one. It
// returns the new key and its plaintext, for the operator's terminal only.
//
// Errors wrap ErrNotFound, ErrRevoked (the old key is already revoked) or
// ErrInvalid (negative overlap).
func (s *Store) Rotate(ctx context.Context, db Beginner, keyID string, overlap time.Duration, a Audit) (Created, string, error) {
	var c Created
	var plaintext string
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var err error
		c, plaintext, err = s.RotateTx(ctx, tx, keyID, overlap, a)
		return err
	})
	if err != nil {
		return Created{}, "", err
	}
	return c, plaintext, nil
}

// RotateTx is Rotate in the caller's transaction (any user's key, no limit:
// the operator's scope); an error leaves tx aborted.
func (s *Store) RotateTx(ctx context.Context, tx pgx.Tx, keyID string, overlap time.Duration, a Audit) (Created, string, error) {
	return s.rotateTx(ctx, tx, keyID, overlap, rotation{source: SourceManual}, a)
}

// rotation is whose key a rotation may replace and what it makes.
type rotation struct {
	// owner, when not "", is the only user whose key may be rotated;
	// another's is ErrNotFound.
	owner string
	// source is the new key's source.
	source string
	// maxLive, when > 0 (and owner is set), is the live-key limit.
	maxLive int
}

func (s *Store) rotateTx(ctx context.Context, tx pgx.Tx, keyID string, overlap time.Duration, r rotation, a Audit) (Created, string, error) {
	if err := checkKeyID(keyID); err != nil {
		return Created{}, "", fmt.Errorf("rotating key: %w", err)
	}
	if overlap < 0 {
		return Created{}, "", invalid("rotation overlap must not be negative, got %s", overlap)
	}
	now := s.Now()
	if r.owner != "" {
		if err := s.lockUser(ctx, tx, r.owner); err != nil {
			return Created{}, "", fmt.Errorf("rotating key %s: %w", keyID, err)
		}
	}
	old, err := scanInfo(tx.QueryRow(ctx, s.q.lockForRotate, keyID, nullable(r.owner)))
	if errors.Is(err, pgx.ErrNoRows) {
		return Created{}, "", fmt.Errorf("rotating key %s: %w", keyID, ErrNotFound)
	}
	if err != nil {
		return Created{}, "", fmt.Errorf("rotating key %s: %w", keyID, err)
	}
	if old.RevokedAt != nil && !old.RevokedAt.After(now) {
		return Created{}, "", fmt.Errorf("rotating key %s: %w", keyID, ErrRevoked)
	}
	if old.RevokedAt != nil && r.owner != "" {
		return Created{}, "", fmt.Errorf("rotating key %s: %w at %s", keyID, ErrRevocationScheduled, old.RevokedAt.UTC().Format(time.RFC3339))
	}
	if r.owner != "" && r.maxLive > 0 {
		// The new key replaces the old one: refused when the user's other
		// live keys fill the limit. At the limit with a live old key, that
		// allows the rotation (limit+1 live keys during the overlap); with
		// an expired old key, it does not (the new key would stay one over).
		live, others, err := s.countLive(ctx, tx, r.owner, keyID, now)
		if err != nil {
			return Created{}, "", fmt.Errorf("rotating key %s: %w", keyID, err)
		}
		if others >= r.maxLive {
			return Created{}, "", limitReached(live, r.maxLive)
		}
	}
	nk := NewKey{UserID: old.UserID, Name: old.Name, Source: r.source, RotatedFrom: old.ID}
	if old.ExpiresAt != nil {
		lifetime := old.ExpiresAt.Sub(old.CreatedAt)
		if lifetime < time.Minute {
			lifetime = time.Minute
		}
		exp := now.Add(lifetime)
		nk.ExpiresAt = &exp
	}
	c, plaintext, err := s.createPlain(ctx, tx, nk, a, now)
	if err != nil {
		return Created{}, "", fmt.Errorf("rotating key %s: %w", keyID, err)
	}
	revokeAt := now.Add(overlap)
	if old.ExpiresAt != nil && old.ExpiresAt.Before(revokeAt) {
		revokeAt = *old.ExpiresAt
	}
	var revokedAt time.Time
	if err := tx.QueryRow(ctx, s.q.scheduleRevoke, keyID, revokeAt).Scan(&revokedAt); err != nil {
		return Created{}, "", fmt.Errorf("rotating key %s: scheduling its revocation: %w", keyID, err)
	}
	if err := s.writeEvent(ctx, tx, now, eventOf("rotated", old.ID, old.UserID, map[string]any{
		"new_key_id": c.ID,
		"revoked_at": revokedAt.UTC(),
		"overlap":    overlap.String(),
	}), a); err != nil {
		return Created{}, "", fmt.Errorf("rotating key %s: %w", keyID, err)
	}
	return c, plaintext, nil
}

// insert validates nk, generates a key and inserts its row. For a signup key
// that already exists it returns the existing key with Existing set and a nil
// *keys.Key.
func (s *Store) insert(ctx context.Context, tx Querier, nk NewKey, a Audit, now time.Time) (Created, *keys.Key, error) {
	if err := s.checkNewKey(&nk, now); err != nil {
		return Created{}, nil, err
	}
	if _, err := a.actor(); err != nil {
		return Created{}, nil, err
	}
	k, err := keys.Generator{Now: s.now}.Generate(s.prefix)
	if err != nil {
		return Created{}, nil, fmt.Errorf("creating key: %w", err)
	}
	var id string
	err = tx.QueryRow(ctx, s.q.insertKey, k.ID, nk.UserID, nk.Name, k.Prefix, k.Hash, k.Salt, k.HashVersion,
		k.Last4, nk.Source, now, nk.ExpiresAt, nullable(nk.RotatedFrom)).Scan(&id)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// ON CONFLICT DO NOTHING: the user has a signup key already.
		var revealExp *time.Time
		i, err := scanInfo(tx.QueryRow(ctx, s.q.existingSignup, nk.UserID), &revealExp)
		if err != nil {
			return Created{}, nil, fmt.Errorf("reading the existing signup key of user %s: %w", nk.UserID, err)
		}
		c := createdFromInfo(i)
		if revealExp != nil {
			c.RevealExpiresAt = revealExp.UTC()
		}
		c.Existing = true
		return c, nil, nil
	case pgerr.Code(err) == pgerrcode.ForeignKeyViolation: // no such user
		return Created{}, nil, fmt.Errorf("creating key for user %s: %w", nk.UserID, ErrUserNotFound)
	case err != nil:
		return Created{}, nil, fmt.Errorf("creating key for user %s: %w", nk.UserID, err)
	}
	return Created{
		ID: k.ID, UserID: nk.UserID, Name: nk.Name, Prefix: k.Prefix, Last4: k.Last4, Source: nk.Source,
		CreatedAt: now, ExpiresAt: nk.ExpiresAt, RotatedFrom: nk.RotatedFrom,
	}, k, nil
}

func (s *Store) checkNewKey(nk *NewKey, now time.Time) error {
	if err := checkUserID(nk.UserID); err != nil {
		return err
	}
	nk.UserID = strings.ToLower(nk.UserID)
	nk.Name = cmp.Or(nk.Name, DefaultName)
	if n := len([]rune(nk.Name)); n > maxNameLen {
		return invalid("key name is %d characters long, the limit is %d", n, maxNameLen)
	}
	if !utf8.ValidString(nk.Name) || strings.ContainsFunc(nk.Name, unicode.IsControl) {
		return invalid("key name must be text without control characters (such as NUL, a tab or a newline)")
	}
	if nk.Source != SourceSignup && nk.Source != SourceManual && nk.Source != SourceUser {
		return invalid("key source %q is not one of signup, manual, user", nk.Source)
	}
	if nk.ExpiresAt != nil {
		exp := nk.ExpiresAt.UTC().Truncate(time.Microsecond)
		if !exp.After(now) {
			return invalid("key expiry %s is not in the future", exp.Format(time.RFC3339))
		}
		nk.ExpiresAt = &exp
	}
	if nk.RotatedFrom != "" && !keyIDRe.MatchString(nk.RotatedFrom) {
		return invalid("rotated-from key id must be 27 base62 characters")
	}
	return nil
}

// Info is the new key's metadata as Get would read it: enabled, not
// revoked, never used.
func (c Created) Info() Info {
	return Info{
		ID: c.ID, UserID: c.UserID, Name: c.Name, Prefix: c.Prefix, Last4: c.Last4, Source: c.Source,
		CreatedAt: c.CreatedAt, ExpiresAt: c.ExpiresAt, RotatedFrom: c.RotatedFrom,
	}
}

func createdFromInfo(i Info) Created {
	return Created{
		ID: i.ID, UserID: i.UserID, Name: i.Name, Prefix: i.Prefix, Last4: i.Last4, Source: i.Source,
		CreatedAt: i.CreatedAt, ExpiresAt: i.ExpiresAt, RotatedFrom: i.RotatedFrom,
	}
}

func createdEvent(c Created) event {
	d := map[string]any{"source": c.Source, "name": c.Name, "prefix": c.Prefix, "last4": c.Last4}
	if c.ExpiresAt != nil {
		d["expires_at"] = c.ExpiresAt.UTC()
	}
	if !c.RevealExpiresAt.IsZero() {
		d["reveal_expires_at"] = c.RevealExpiresAt.UTC()
	}
	if c.RotatedFrom != "" {
		d["rotated_from"] = c.RotatedFrom
	}
	return eventOf("created", c.ID, c.UserID, d)
}
