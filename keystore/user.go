package keystore

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/keys"
)

// UserKeys are the operations an end user has on their own keys (the HTTP
// API's). Every one is limited to the user's keys: a key id of someone
// else's key answers the same error, wrapping ErrNotFound, as an id no key
// has, so nothing tells whether another user's key exists. A malformed user
// id is ErrInvalid. Each change writes its key_events row with the Audit the
// caller passes (Actor ActorUser for the API). UserKeys is a value: copy it
// freely; it is safe for concurrent use.
type UserKeys struct {
	s      *Store
	userID string
}

// User returns the operations on userID's own keys.
func (s *Store) User(userID string) UserKeys {
	return UserKeys{s: s, userID: strings.ToLower(userID)}
}

// UserID returns the user whose keys these are.
func (u UserKeys) UserID() string { return u.userID }

// MaxUserList is how many keys UserKeys.List returns at most: the newest.
// Revoked keys stay listed (their history), and a user making and revoking
// keys within the API's rate limits would otherwise grow every answer
// without bound.
const MaxUserList = 1000

// List returns the metadata of the user's newest MaxUserList keys, newest
// first.
func (u UserKeys) List(ctx context.Context, db Querier) ([]Info, error) {
	// Checked here: Store.List of "" lists everyone's keys.
	if err := checkUserID(u.userID); err != nil {
		return nil, err
	}
	return u.s.List(ctx, db, u.userID, MaxUserList)
}

// Get returns the metadata of the user's key keyID, or an error wrapping
// ErrNotFound (no such key, or not theirs).
func (u UserKeys) Get(ctx context.Context, db Querier, keyID string) (Info, error) {
	if err := checkUserID(u.userID); err != nil {
		return Info{}, err
	}
	i, err := u.s.lookup(ctx, db, keyID, u.userID)
	if err != nil {
		return Info{}, fmt.Errorf("getting key %s: %w", keyID, err)
	}
	return i, nil
}

// CreateTx makes a SourceUser key for the user in tx, records a 'created'
// event, and returns the key and its plaintext, once: nothing is sealed, so
// it cannot be revealed later. nk.UserID is ignored (the key is the
// UserKeys' user's); nk.Source must be "" or SourceUser, and nk.RotatedFrom
// empty (RotateTx sets it).
//
// With maxLive > 0 it first takes a transaction-scoped advisory lock of the
// user's, so that concurrent calls for the same user run one after another
// until their transactions end, and counts the user's live keys (not revoked
// at now, not expired at now; a scheduled revocation and a disabled key
// still count): when they are maxLive or more it makes nothing and returns
// an error wrapping ErrLimitReached. The count must see what committed while
// the lock was awaited, so tx must be READ COMMITTED: in REPEATABLE READ or
// SERIALIZABLE the snapshot is taken by the lock's own statement, before it
// waits, and CreateTx refuses such a transaction with an error. maxLive <= 0
// means no limit (and no lock).
//
// Other errors wrap ErrInvalid (malformed nk or a) or ErrUserNotFound; an
// error leaves tx aborted.
func (u UserKeys) CreateTx(ctx context.Context, tx pgx.Tx, nk NewKey, maxLive int, a Audit) (Created, string, error) {
	if nk.Source != "" && nk.Source != SourceUser {
		return Created{}, "", invalid("a user's own key has source %q, got %q", SourceUser, nk.Source)
	}
	if nk.RotatedFrom != "" {
		return Created{}, "", invalid("a new key names the key it replaces only through rotation")
	}
	nk.UserID, nk.Source = u.userID, SourceUser
	now := u.s.Now()
	if err := u.s.checkNewKey(&nk, now); err != nil {
		return Created{}, "", err
	}
	if maxLive > 0 {
		if err := u.s.lockUser(ctx, tx, u.userID); err != nil {
			return Created{}, "", fmt.Errorf("creating key for user %s: %w", u.userID, err)
		}
		live, _, err := u.s.countLive(ctx, tx, u.userID, "", now)
		if err != nil {
			return Created{}, "", fmt.Errorf("creating key for user %s: %w", u.userID, err)
		}
		if live >= maxLive {
			return Created{}, "", limitReached(live, maxLive)
		}
	}
	return u.s.createPlain(ctx, tx, nk, a, now)
}

// RotateTx replaces the user's key keyID in tx as Store.Rotate does (a key
// with the same name, and the same lifetime from now when the old one
// expires; the old key revoked at now+overlap or at its expiry if sooner;
// 'created' and 'rotated' events), but owner-checked, and the new key has
// SourceUser and starts enabled whatever the old one is: rotating a disabled
// key is allowed, and the old key stays disabled until it is revoked.
//
// The limit, under the lock CreateTx takes (which needs tx READ COMMITTED,
// as CreateTx does, whatever maxLive): refused with an error wrapping
// ErrLimitReached when the user's live keys other than keyID are maxLive or
// more. So a rotation at exactly the limit is allowed, and at most
// maxLive+1 keys are live during an overlap; a second rotation during it is
// refused; an expired key cannot be rotated past the limit. maxLive <= 0
// means no limit.
//
// A key whose revocation is already scheduled (rotated before, in its
// overlap) is refused with ErrRevocationScheduled: its successor is the key
// to rotate, so a key is rotated (and announced as rotated) once.
//
// Errors wrap ErrNotFound (no such key of the user's), ErrRevoked (revoked
// at now), ErrRevocationScheduled, ErrLimitReached or ErrInvalid (negative
// overlap); an error leaves tx aborted.
func (u UserKeys) RotateTx(ctx context.Context, tx pgx.Tx, keyID string, overlap time.Duration, maxLive int, a Audit) (Created, string, error) {
	if err := checkUserID(u.userID); err != nil {
		return Created{}, "", err
	}
	return u.s.rotateTx(ctx, tx, keyID, overlap, rotation{owner: u.userID, source: SourceUser, maxLive: maxLive}, a)
}

// SetDisabled disables (disabled true) or enables the user's key keyID, and
// records a 'disabled' or 'enabled' event, in one statement on db. A disabled
// key verifies as StatusDisabled (in Go and in SQL) until enabled again. It
// returns the key as it is after, and changed false (and no event) when the
// key already was in that state. Errors wrap ErrNotFound (no such key of the
// user's) or ErrRevoked (revoked at now, whatever its state).
func (u UserKeys) SetDisabled(ctx context.Context, db Querier, keyID string, disabled bool, a Audit) (Info, bool, error) {
	verb, name := "enabling", "enabled"
	if disabled {
		verb, name = "disabling", "disabled"
	}
	if err := checkUserID(u.userID); err != nil {
		return Info{}, false, err
	}
	if err := checkKeyID(keyID); err != nil {
		return Info{}, false, fmt.Errorf("%s key: %w", verb, err)
	}
	now := u.s.Now()
	var detail map[string]any
	if disabled {
		detail = map[string]any{"disabled_at": now}
	}
	args, err := u.s.eventArgs(now, eventOf(name, keyID, u.userID, detail), a)
	if err != nil {
		return Info{}, false, err
	}
	// args: now, event, key, user, job, attempt, actor, detail
	i, err := scanInfo(db.QueryRow(ctx, u.s.q.setDisabled, keyID, now, disabled, u.userID, args[1], args[4], args[5], args[6], args[7]))
	if err == nil {
		return i, true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Info{}, false, fmt.Errorf("%s key %s: %w", verb, keyID, err)
	}
	// Nothing changed: no such key of the user's, revoked, or in that
	// state already.
	if i, err = u.s.lookup(ctx, db, keyID, u.userID); err != nil {
		return Info{}, false, fmt.Errorf("%s key %s: %w", verb, keyID, err)
	}
	if i.Status(now) == keys.StatusRevoked {
		return Info{}, false, fmt.Errorf("%s key %s: %w", verb, keyID, ErrRevoked)
	}
	return i, false, nil
}

// Revoke revokes the user's key keyID now, as Store.Revoke with at zero
// does (deleting a secret still waiting for pick-up, recording 'revoked'),
// and returns the key as it is after; changed is false when it was already
// revoked at or before now (a scheduled revocation is brought forward to
// now). A disabled key is revoked as any other. Errors wrap ErrNotFound (no
// such key of the user's).
func (u UserKeys) Revoke(ctx context.Context, db Querier, keyID string, a Audit) (Info, bool, error) {
	if err := checkUserID(u.userID); err != nil {
		return Info{}, false, err
	}
	return u.s.revoke(ctx, db, keyID, u.userID, time.Time{}, a)
}

// lockUser takes the transaction-scoped advisory lock that serialises the
// live-key count of userID's keys, in a READ COMMITTED transaction only: in
// any other the count after it would not see a key committed while it
// waited.
func (s *Store) lockUser(ctx context.Context, tx Querier, userID string) error {
	h := fnv.New64a()
	h.Write([]byte("keyworker.user_keys." + s.schema + "." + strings.ToLower(userID)))
	var isolation string
	if err := tx.QueryRow(ctx, s.q.lockUser, int64(h.Sum64())).Scan(&isolation); err != nil {
		return fmt.Errorf("taking the user's key lock: %w", err)
	}
	if isolation != "read committed" {
		return fmt.Errorf("taking the user's key lock: the transaction is %s, and the live-key count needs read committed: begin it with pgx.TxOptions{IsoLevel: pgx.ReadCommitted}", isolation)
	}
	return nil
}

// countLive counts userID's live keys at now, and those of them other than
// key except ("" for none).
func (s *Store) countLive(ctx context.Context, db Querier, userID, except string, now time.Time) (live, others int, err error) {
	if err := db.QueryRow(ctx, s.q.countLive, userID, now, except).Scan(&live, &others); err != nil {
		return 0, 0, fmt.Errorf("counting the user's live keys: %w", err)
	}
	return live, others, nil
}
