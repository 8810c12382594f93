package keystore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
)

var asUser = keystore.Audit{Actor: keystore.ActorUser, Detail: map[string]any{"via": "test"}}

// userCreate runs UserKeys.CreateTx in its own transaction and commits it.
func (f *fixture) userCreate(t *testing.T, u keystore.UserKeys, nk keystore.NewKey, maxLive int) (keystore.Created, string, error) {
	t.Helper()
	var c keystore.Created
	var plain string
	err := pgx.BeginFunc(context.Background(), f.db, func(tx pgx.Tx) error {
		var err error
		c, plain, err = u.CreateTx(context.Background(), tx, nk, maxLive, asUser)
		return err
	})
	return c, plain, err
}

// userRotate runs UserKeys.RotateTx in its own transaction and commits it.
func (f *fixture) userRotate(t *testing.T, u keystore.UserKeys, keyID string, overlap time.Duration, maxLive int) (keystore.Created, string, error) {
	t.Helper()
	var c keystore.Created
	var plain string
	err := pgx.BeginFunc(context.Background(), f.db, func(tx pgx.Tx) error {
		var err error
		c, plain, err = u.RotateTx(context.Background(), tx, keyID, overlap, maxLive, asUser)
		return err
	})
	return c, plain, err
}

func (f *fixture) mustUserCreate(t *testing.T, u keystore.UserKeys, maxLive int) (keystore.Created, string) {
	t.Helper()
	c, plain, err := f.userCreate(t, u, keystore.NewKey{Name: "mine"}, maxLive)
	if err != nil {
		t.Fatalf("UserKeys.CreateTx: %v", err)
	}
	return c, plain
}

// actors returns event:actor for key's events, oldest first.
func (f *fixture) actors(t *testing.T, keyID string) []string {
	t.Helper()
	rows, err := f.db.Query(context.Background(), `SELECT event || ':' || actor FROM keyworker.key_events WHERE key_id = $1 ORDER BY id`, keyID)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// expire makes key keyID expired a second ago.
func (f *fixture) expire(t *testing.T, keyID string) {
	t.Helper()
	if _, err := f.db.Exec(context.Background(), `UPDATE keyworker.api_keys SET expires_at = now() - interval '1 second' WHERE id = $1`, keyID); err != nil {
		t.Fatal(err)
	}
}

func TestUserCreatesListsAndGetsOwnKeys(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	alice, bob := f.newUser(t), f.newUser(t)
	signup := f.createSignup(t, alice)
	f.createSignup(t, bob)
	// Upper case: the user's id is compared as a uuid.
	u := f.store.User(strings.ToUpper(alice))

	exp := time.Now().Add(48 * time.Hour)
	c, plain, err := f.userCreate(t, u, keystore.NewKey{UserID: bob, Name: "laptop", ExpiresAt: &exp}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.UserID != alice || c.Source != keystore.SourceUser || c.Name != "laptop" || c.ExpiresAt == nil || !c.RevealExpiresAt.IsZero() || c.Existing {
		t.Fatalf("Created = %+v; want alice's user key named laptop (nk.UserID ignored), nothing sealed", c)
	}
	if n := count(t, f.db, `SELECT count(*) FROM keyworker.key_reveals WHERE key_id = $1`, c.ID); n != 0 {
		t.Fatal("a user's key was sealed for pick-up")
	}
	v, err := f.store.Verify(ctx, f.db, plain)
	if err != nil || v.Status != keys.StatusValid || v.UserID != alice || v.KeyID != c.ID {
		t.Fatalf("Verify(the new key) = %+v, %v", v, err)
	}
	if got := f.actors(t, c.ID); !slices.Equal(got, []string{"created:user"}) {
		t.Fatalf("events %v, want created by user", got)
	}

	list, err := u.List(ctx, f.db)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != c.ID || list[1].ID != signup.ID {
		t.Fatalf("List = %v, want alice's %s then %s (newest first), none of bob's", list, c.ID, signup.ID)
	}
	got, err := u.Get(ctx, f.db, c.ID)
	if err != nil || got.ID != c.ID || got.Source != "user" || got.DisabledAt != nil || got.Status(time.Now()) != keys.StatusValid {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	js, _ := json.Marshal(got)
	if !strings.Contains(string(js), `"disabled_at":null`) {
		t.Fatalf("Info JSON %s lacks disabled_at", js)
	}

	for _, nk := range []keystore.NewKey{
		{Name: strings.Repeat("n", 201)},
		{ExpiresAt: new(time.Now().Add(-time.Minute))},
		{Source: keystore.SourceManual},
		{RotatedFrom: signup.ID},
	} {
		if _, _, err := f.userCreate(t, u, nk, 5); !errors.Is(err, keystore.ErrInvalid) {
			t.Errorf("CreateTx(%+v) = %v, want ErrInvalid", nk, err)
		}
	}
	for _, bad := range []keystore.UserKeys{f.store.User(""), f.store.User("nope")} {
		if _, err := bad.List(ctx, f.db); !errors.Is(err, keystore.ErrInvalid) {
			t.Errorf("List of user %q = %v, want ErrInvalid (never everyone's keys)", bad.UserID(), err)
		}
		if _, _, err := f.userCreate(t, bad, keystore.NewKey{}, 0); !errors.Is(err, keystore.ErrInvalid) {
			t.Errorf("CreateTx of user %q = %v, want ErrInvalid", bad.UserID(), err)
		}
	}
	gone := f.store.User("00000000-0000-4000-8000-999999999998")
	if _, _, err := f.userCreate(t, gone, keystore.NewKey{}, 5); !errors.Is(err, keystore.ErrUserNotFound) {
		t.Errorf("CreateTx for a user who does not exist = %v, want ErrUserNotFound", err)
	}
}

// TestSomeoneElsesKeyIsNotFound: every owner-scoped operation on another
// user's key answers what it answers for an id no key has, word for word,
// and changes nothing.
func TestSomeoneElsesKeyIsNotFound(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	alice, bob := f.newUser(t), f.newUser(t)
	bobKey, _ := f.mustUserCreate(t, f.store.User(bob), 0)
	missing := "0" + bobKey.ID[1:]
	if _, err := f.store.Get(ctx, f.db, missing); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("the missing id %s exists: %v", missing, err)
	}
	u := f.store.User(alice)
	ops := map[string]func(keyID string) error{
		"Get": func(id string) error { _, err := u.Get(ctx, f.db, id); return err },
		"RotateTx": func(id string) error {
			_, _, err := f.userRotate(t, u, id, time.Hour, 0)
			return err
		},
		"RotateTx with a limit": func(id string) error {
			_, _, err := f.userRotate(t, u, id, time.Hour, 1)
			return err
		},
		"SetDisabled(true)":  func(id string) error { _, _, err := u.SetDisabled(ctx, f.db, id, true, asUser); return err },
		"SetDisabled(false)": func(id string) error { _, _, err := u.SetDisabled(ctx, f.db, id, false, asUser); return err },
		"Revoke":             func(id string) error { _, _, err := u.Revoke(ctx, f.db, id, asUser); return err },
	}
	for name, op := range ops {
		theirs, none := op(bobKey.ID), op(missing)
		if !errors.Is(theirs, keystore.ErrNotFound) {
			t.Errorf("%s of bob's key by alice = %v, want ErrNotFound", name, theirs)
			continue
		}
		if !errors.Is(none, keystore.ErrNotFound) {
			t.Errorf("%s of a missing key = %v, want ErrNotFound", name, none)
			continue
		}
		if a, b := strings.ReplaceAll(theirs.Error(), bobKey.ID, "ID"), strings.ReplaceAll(none.Error(), missing, "ID"); a != b {
			t.Errorf("%s: bob's key answers %q, a missing key %q: the difference tells that bob's exists", name, a, b)
		}
	}
	info, err := f.store.Get(ctx, f.db, bobKey.ID)
	if err != nil || info.RevokedAt != nil || info.DisabledAt != nil {
		t.Fatalf("bob's key after alice's attempts: %+v, %v", info, err)
	}
	if got := f.actors(t, bobKey.ID); !slices.Equal(got, []string{"created:user"}) {
		t.Fatalf("bob's key's events %v, want only its creation", got)
	}
	if n := count(t, f.db, `SELECT count(*) FROM keyworker.api_keys WHERE user_id = $1`, alice); n != 0 {
		t.Fatalf("alice's attempts made %d keys", n)
	}
}

// TestLiveKeyLimitUnderConcurrency starts many CreateTx for one user at once
// (a connection each): exactly maxLive succeed, the rest are refused with
// ErrLimitReached, and another user is not held up by the limit.
func TestLiveKeyLimitUnderConcurrency(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	// A pool as large as the callers, so all of them are in flight at once.
	const n, maxLive = 12, 3
	cfg := f.db.Config().Copy()
	cfg.MaxConns = n + 2
	db, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	user := f.newUser(t)
	u := f.store.User(user)

	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			errs <- pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
				_, _, err := u.CreateTx(ctx, tx, keystore.NewKey{}, maxLive, asUser)
				return err
			})
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	made, refused := 0, 0
	for err := range errs {
		switch {
		case err == nil:
			made++
		case errors.Is(err, keystore.ErrLimitReached):
			refused++
			if want := "user has 3 live keys, the limit is 3: revoke one first"; !strings.Contains(err.Error(), want) {
				t.Errorf("limit error %q does not say %q", err, want)
			}
		default:
			t.Errorf("CreateTx: %v", err)
		}
	}
	if made != maxLive || refused != n-maxLive {
		t.Fatalf("%d made and %d refused of %d concurrent CreateTx, want exactly %d made", made, refused, n, maxLive)
	}
	if got := count(t, f.db, `SELECT count(*) FROM keyworker.api_keys WHERE user_id = $1`, user); got != maxLive {
		t.Fatalf("%d keys stored, want %d", got, maxLive)
	}
}

// TestCreateWaitsForTheUsersOtherCreate: the advisory lock, not luck, makes
// the count right: a second CreateTx for the same user waits until the
// first one's transaction ends, and one for another user does not.
func TestCreateWaitsForTheUsersOtherCreate(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user, other := f.newUser(t), f.newUser(t)
	tx1, err := f.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx1.Rollback(ctx)
	if _, _, err := f.store.User(user).CreateTx(ctx, tx1, keystore.NewKey{}, 1, asUser); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.userCreate(t, f.store.User(other), keystore.NewKey{}, 1); err != nil {
		t.Fatalf("another user's CreateTx while the first is open: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := f.userCreate(t, f.store.User(user), keystore.NewKey{}, 1)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("the second CreateTx for the same user did not wait for the first: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, keystore.ErrLimitReached) {
		t.Fatalf("the second CreateTx after the first committed = %v, want ErrLimitReached", err)
	}
}

// TestWhatCountsAsLive: revoked (now) and expired keys do not count; a
// scheduled revocation and a disabled key do; maxLive <= 0 is no limit.
func TestWhatCountsAsLive(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	u := f.store.User(user)
	a, _ := f.mustUserCreate(t, u, 2)
	b, _ := f.mustUserCreate(t, u, 2)
	if _, _, err := f.userCreate(t, u, keystore.NewKey{}, 2); !errors.Is(err, keystore.ErrLimitReached) {
		t.Fatalf("a third key under a limit of 2 = %v", err)
	}
	if _, _, err := u.SetDisabled(ctx, f.db, a.ID, true, asUser); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.userCreate(t, u, keystore.NewKey{}, 2); !errors.Is(err, keystore.ErrLimitReached) {
		t.Fatalf("with one key disabled, a third = %v; a disabled key counts", err)
	}
	if _, err := f.store.Revoke(ctx, f.db, b.ID, time.Now().Add(time.Hour), keystore.Audit{Actor: keystore.ActorOperator}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.userCreate(t, u, keystore.NewKey{}, 2); !errors.Is(err, keystore.ErrLimitReached) {
		t.Fatalf("with one key's revocation scheduled, a third = %v; it still counts", err)
	}
	if _, _, err := u.Revoke(ctx, f.db, b.ID, asUser); err != nil {
		t.Fatal(err)
	}
	c, _ := f.mustUserCreate(t, u, 2)
	f.expire(t, c.ID)
	f.mustUserCreate(t, u, 2)
	for _, unlimited := range []int{0, -1} {
		f.mustUserCreate(t, u, unlimited)
	}
}

func TestUserRotationAndTheLimit(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	u := f.store.User(user)
	const maxLive = 2
	exp := time.Now().Add(10 * 24 * time.Hour)
	a, aPlain, err := f.userCreate(t, u, keystore.NewKey{Name: "ci", ExpiresAt: &exp}, maxLive)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := f.mustUserCreate(t, u, maxLive)
	if _, _, err := u.SetDisabled(ctx, f.db, a.ID, true, asUser); err != nil {
		t.Fatal(err)
	}

	// At the limit, one rotation is allowed: the old key lives on for the
	// overlap, so maxLive+1 are live.
	c, plain, err := f.userRotate(t, u, a.ID, time.Hour, maxLive)
	if err != nil {
		t.Fatalf("rotating at the limit: %v", err)
	}
	if c.Source != keystore.SourceUser || c.RotatedFrom != a.ID || c.Name != "ci" || c.UserID != user || c.ExpiresAt == nil {
		t.Fatalf("rotated key = %+v", c)
	}
	if life := c.ExpiresAt.Sub(c.CreatedAt); life < 10*24*time.Hour-time.Minute || life > 10*24*time.Hour+time.Minute {
		t.Fatalf("the new key lives %s, want the old key's lifetime (10 days)", life)
	}
	if v, err := f.store.Verify(ctx, f.db, plain); err != nil || v.Status != keys.StatusValid {
		t.Fatalf("the new key of a disabled key's rotation: %v, %v; it starts enabled", v.Status, err)
	}
	if v, _ := f.store.Verify(ctx, f.db, aPlain); v.Status != keys.StatusDisabled {
		t.Fatalf("the old, disabled key during the overlap: %v, want disabled", v.Status)
	}
	old, _ := u.Get(ctx, f.db, a.ID)
	if old.RevokedAt == nil || old.RevokedAt.Sub(time.Now()) < 59*time.Minute || old.DisabledAt == nil {
		t.Fatalf("old key after rotation: revoked_at %v, disabled_at %v; want in an hour, still disabled", old.RevokedAt, old.DisabledAt)
	}
	if got := f.actors(t, a.ID); !slices.Equal(got, []string{"created:user", "disabled:user", "rotated:user"}) {
		t.Fatalf("old key events %v", got)
	}
	if got := f.actors(t, c.ID); !slices.Equal(got, []string{"created:user"}) {
		t.Fatalf("new key events %v", got)
	}

	// The old key is being replaced: its successor is the one to rotate.
	if _, _, err := f.userRotate(t, u, a.ID, time.Hour, 0); !errors.Is(err, keystore.ErrRevocationScheduled) {
		t.Errorf("rotating a rotated key = %v, want ErrRevocationScheduled", err)
	}
	// During the overlap nothing more: neither the new key nor the other.
	for _, id := range []string{c.ID, b.ID} {
		_, _, err := f.userRotate(t, u, id, time.Hour, maxLive)
		if !errors.Is(err, keystore.ErrLimitReached) || !strings.Contains(err.Error(), "user has 3 live keys, the limit is 2") {
			t.Errorf("rotating %s during the overlap at the limit = %v, want ErrLimitReached saying 3 of 2", id, err)
		}
	}
	if _, _, err := f.userCreate(t, u, keystore.NewKey{}, maxLive); !errors.Is(err, keystore.ErrLimitReached) {
		t.Errorf("creating during the overlap = %v, want ErrLimitReached", err)
	}
	// Without an overlap the old key goes at once: the count stays.
	if _, _, err := f.userRotate(t, u, b.ID, 0, 0); err != nil {
		t.Fatalf("rotating without a limit: %v", err)
	}
	if _, _, err := f.userRotate(t, u, b.ID, 0, 0); !errors.Is(err, keystore.ErrRevoked) {
		t.Errorf("rotating a revoked key = %v, want ErrRevoked", err)
	}
	if _, _, err := f.userRotate(t, u, c.ID, -time.Second, 0); !errors.Is(err, keystore.ErrInvalid) {
		t.Errorf("a negative overlap = %v, want ErrInvalid", err)
	}

	// An expired key is not rotated past the limit: its new key would stay
	// one over.
	other := f.newUser(t)
	v := f.store.User(other)
	x, _ := f.mustUserCreate(t, v, maxLive)
	f.mustUserCreate(t, v, maxLive)
	f.expire(t, x.ID)
	f.mustUserCreate(t, v, maxLive)
	if _, _, err := f.userRotate(t, v, x.ID, time.Hour, maxLive); !errors.Is(err, keystore.ErrLimitReached) {
		t.Errorf("rotating an expired key with the limit's worth of live others = %v, want ErrLimitReached", err)
	}
}

// TestOperatorRotateTxHasNoLimitAndKeepsManual: Store.RotateTx, the
// operator's scope, rotates any user's key, makes a manual key, and knows
// no limit.
func TestOperatorRotateTxHasNoLimitAndKeepsManual(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	k, _ := f.mustUserCreate(t, f.store.User(user), 1)
	var c keystore.Created
	if err := pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error {
		var err error
		c, _, err = f.store.RotateTx(ctx, tx, k.ID, time.Hour, keystore.Audit{Actor: keystore.ActorOperator})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if c.Source != keystore.SourceManual || c.RotatedFrom != k.ID || c.UserID != user {
		t.Fatalf("operator rotation = %+v", c)
	}
	if got := f.actors(t, k.ID); !slices.Equal(got, []string{"created:user", "rotated:operator"}) {
		t.Fatalf("events %v", got)
	}
}

func TestDisableEnableRevokeAreIdempotent(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	u := f.store.User(user)
	k, plain := f.mustUserCreate(t, u, 0)

	info, changed, err := u.SetDisabled(ctx, f.db, k.ID, true, asUser)
	if err != nil || !changed || info.DisabledAt == nil || info.Status(time.Now()) != keys.StatusDisabled {
		t.Fatalf("disabling = %+v, %v, %v", info, changed, err)
	}
	first := *info.DisabledAt
	if info, changed, err = u.SetDisabled(ctx, f.db, k.ID, true, asUser); err != nil || changed || info.DisabledAt == nil || !info.DisabledAt.Equal(first) {
		t.Fatalf("disabling again = %+v, %v, %v; want unchanged, disabled since the first time", info, changed, err)
	}
	var at time.Time
	if err := f.db.QueryRow(ctx, `SELECT (detail->>'disabled_at')::timestamptz FROM keyworker.key_events WHERE key_id = $1 AND event = 'disabled'`, k.ID).Scan(&at); err != nil || !at.Equal(first) {
		t.Fatalf("disabled event's disabled_at = %v, %v; want %v", at, err, first)
	}
	for _, verify := range []func() (string, string, string){
		func() (string, string, string) {
			v, err := f.store.Verify(ctx, f.db, plain)
			if err != nil {
				t.Fatal(err)
			}
			return v.Status.String(), v.UserID, v.KeyID
		},
		func() (string, string, string) { return f.sqlVerify(t, &plain) },
	} {
		if st, uid, kid := verify(); st != "disabled" || uid != user || kid != k.ID {
			t.Fatalf("verifying a disabled key = %s, %s, %s; want disabled with its ids", st, uid, kid)
		}
	}
	if n := count(t, f.db, `SELECT count(*) FROM keyworker.api_keys WHERE id = $1 AND last_used_at IS NOT NULL`, k.ID); n != 0 {
		t.Fatal("verifying a disabled key recorded a use")
	}

	if info, changed, err = u.SetDisabled(ctx, f.db, k.ID, false, asUser); err != nil || !changed || info.DisabledAt != nil || info.Status(time.Now()) != keys.StatusValid {
		t.Fatalf("enabling = %+v, %v, %v", info, changed, err)
	}
	if _, changed, err = u.SetDisabled(ctx, f.db, k.ID, false, asUser); err != nil || changed {
		t.Fatalf("enabling again = %v, %v; want unchanged", changed, err)
	}
	if v, _ := f.store.Verify(ctx, f.db, plain); v.Status != keys.StatusValid {
		t.Fatalf("an enabled key verifies as %v", v.Status)
	}

	// A disabled key is revoked as any other; a revoked one is neither
	// disabled nor enabled again.
	if _, _, err := u.SetDisabled(ctx, f.db, k.ID, true, asUser); err != nil {
		t.Fatal(err)
	}
	before := f.store.Now()
	info, changed, err = u.Revoke(ctx, f.db, k.ID, asUser)
	if err != nil || !changed || info.RevokedAt == nil || info.RevokedAt.Before(before) || info.Status(time.Now()) != keys.StatusRevoked {
		t.Fatalf("revoking = %+v, %v, %v", info, changed, err)
	}
	if info, changed, err = u.Revoke(ctx, f.db, k.ID, asUser); err != nil || changed || info.RevokedAt == nil {
		t.Fatalf("revoking again = %+v, %v, %v; want unchanged", info, changed, err)
	}
	for _, disabled := range []bool{true, false} {
		if _, _, err := u.SetDisabled(ctx, f.db, k.ID, disabled, asUser); !errors.Is(err, keystore.ErrRevoked) {
			t.Errorf("SetDisabled(%v) of a revoked key = %v, want ErrRevoked", disabled, err)
		}
	}
	if st, _, _ := f.sqlVerify(t, &plain); st != "revoked" {
		t.Fatalf("a revoked disabled key verifies in SQL as %s", st)
	}
	want := []string{"created:user", "disabled:user", "enabled:user", "disabled:user", "revoked:user"}
	if got := f.actors(t, k.ID); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v (no event for a call that changed nothing)", got, want)
	}
}

// TestUserRevokeDeletesTheWaitingSecretAndBringsAScheduledRevocationForward.
func TestUserRevokeDeletesTheWaitingSecretAndBringsAScheduledRevocationForward(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	u := f.store.User(user)
	signup := f.createSignup(t, user)
	if _, changed, err := u.Revoke(ctx, f.db, signup.ID, asUser); err != nil || !changed {
		t.Fatalf("revoking the signup key = %v, %v", changed, err)
	}
	if _, pending, _ := f.store.PendingReveal(ctx, f.db, signup.ID); pending {
		t.Fatal("the revoked signup key's sealed secret still waits")
	}
	k, _ := f.mustUserCreate(t, u, 0)
	if _, err := f.store.Revoke(ctx, f.db, k.ID, time.Now().Add(time.Hour), keystore.Audit{}); err != nil {
		t.Fatal(err)
	}
	info, changed, err := u.Revoke(ctx, f.db, k.ID, asUser)
	if err != nil || !changed || info.RevokedAt == nil || info.RevokedAt.After(time.Now().Add(time.Second)) {
		t.Fatalf("revoking a key whose revocation is scheduled = %+v, %v, %v; want revoked now", info, changed, err)
	}
}

// TestVerifyAgreesOnDisabledKeysInEveryCombination checks the order revoked,
// expired, disabled, valid in Go (Store.Verify and Info.Status) and SQL, with
// the same ids.
func TestVerifyAgreesOnDisabledKeysInEveryCombination(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	u := f.store.User(user)
	for _, c := range []struct {
		name                       string
		disabled, revoked, expired bool
		scheduled                  bool
		want                       keys.Status
	}{
		{"enabled", false, false, false, false, keys.StatusValid},
		{"disabled", true, false, false, false, keys.StatusDisabled},
		{"disabled, revocation scheduled", true, false, false, true, keys.StatusDisabled},
		{"disabled and expired", true, false, true, false, keys.StatusExpired},
		{"disabled and revoked", true, true, false, false, keys.StatusRevoked},
		{"disabled, revoked and expired", true, true, true, false, keys.StatusRevoked},
	} {
		t.Run(c.name, func(t *testing.T) {
			k, plain := f.mustUserCreate(t, u, 0)
			if c.disabled {
				if _, _, err := u.SetDisabled(ctx, f.db, k.ID, true, asUser); err != nil {
					t.Fatal(err)
				}
			}
			if c.expired {
				f.expire(t, k.ID)
			}
			if c.revoked || c.scheduled {
				at := time.Now().Add(-time.Second)
				if c.scheduled {
					at = time.Now().Add(time.Hour)
				}
				if _, err := f.store.Revoke(ctx, f.db, k.ID, at, keystore.Audit{}); err != nil {
					t.Fatal(err)
				}
			}
			v, err := f.store.Verify(ctx, f.db, plain)
			if err != nil {
				t.Fatal(err)
			}
			st, uid, kid := f.sqlVerify(t, &plain)
			if v.Status != c.want || st != c.want.String() {
				t.Errorf("Store.Verify = %v, verify_api_key = %s; want %v", v.Status, st, c.want)
			}
			if v.UserID != uid || v.KeyID != kid || uid != user || kid != k.ID {
				t.Errorf("ids: Go %s %s, SQL %s %s; want %s %s", v.UserID, v.KeyID, uid, kid, user, k.ID)
			}
			info, _ := u.Get(ctx, f.db, k.ID)
			if got := info.Status(time.Now()); got != c.want {
				t.Errorf("Info.Status = %v, want %v", got, c.want)
			}
		})
	}
}

// TestUserKeysNeverStoreOrSayThePlaintext runs every operation and then
// scans every table for each plaintext and secret made, and the errors for
// any of them.
func TestUserKeysNeverStoreOrSayThePlaintext(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	u := f.store.User(user)
	var needles []string
	add := func(plain string) {
		t.Helper()
		p, err := keys.Parse(plain)
		if err != nil {
			t.Fatal(err)
		}
		needles = append(needles, plain, p.Secret())
	}
	a, aPlain := f.mustUserCreate(t, u, 3)
	add(aPlain)
	b, bPlain := f.mustUserCreate(t, u, 3)
	add(bPlain)
	c, cPlain, err := f.userRotate(t, u, a.ID, time.Hour, 3)
	if err != nil {
		t.Fatal(err)
	}
	add(cPlain)
	var errs []error
	_, _, err = f.userCreate(t, u, keystore.NewKey{}, 3)
	errs = append(errs, err)
	_, _, err = f.userRotate(t, u, b.ID, time.Hour, 2)
	errs = append(errs, err)
	if _, _, err := u.SetDisabled(ctx, f.db, c.ID, true, asUser); err != nil {
		t.Fatal(err)
	}
	if _, _, err := u.Revoke(ctx, f.db, b.ID, asUser); err != nil {
		t.Fatal(err)
	}
	_, _, err = u.SetDisabled(ctx, f.db, b.ID, true, asUser)
	errs = append(errs, err)
	for _, tok := range []string{aPlain, bPlain, cPlain} {
		if _, err := f.store.Verify(ctx, f.db, tok); err != nil {
			t.Fatal(err)
		}
		f.sqlVerify(t, &tok)
	}

	hits, err := testenv.ScanForSecrets(ctx, f.db, needles)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 0 {
		t.Fatalf("a plaintext or secret is stored in %v", hits)
	}
	for _, e := range errs {
		if e == nil {
			t.Fatal("an operation the test expects to fail succeeded")
		}
		for _, n := range needles {
			if strings.Contains(e.Error(), n) || strings.Contains(fmt.Sprintf("%+v", e), n) {
				t.Fatalf("error %q holds a key", e)
			}
		}
	}
}

// TestLimitRefusesTransactionsThatCannotSeeTheWait: in REPEATABLE READ or
// SERIALIZABLE, the lock's own statement takes the snapshot before it
// waits, so a count after it misses a key committed during the wait and the
// limit would not hold (a second CreateTx that waited in one made a key
// past the limit before this refusal). CreateTx and RotateTx refuse such a
// transaction rather than count wrong.
func TestLimitRefusesTransactionsThatCannotSeeTheWait(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	u := f.store.User(user)
	k, _ := f.mustUserCreate(t, u, 0)
	for _, iso := range []pgx.TxIsoLevel{pgx.RepeatableRead, pgx.Serializable} {
		err := pgx.BeginTxFunc(ctx, f.db, pgx.TxOptions{IsoLevel: iso}, func(tx pgx.Tx) error {
			_, _, err := u.CreateTx(ctx, tx, keystore.NewKey{}, 5, asUser)
			return err
		})
		if err == nil || errors.Is(err, keystore.ErrLimitReached) || !strings.Contains(err.Error(), "read committed") {
			t.Errorf("CreateTx in %s = %v, want a refusal naming read committed", iso, err)
		}
		err = pgx.BeginTxFunc(ctx, f.db, pgx.TxOptions{IsoLevel: iso}, func(tx pgx.Tx) error {
			_, _, err := u.RotateTx(ctx, tx, k.ID, time.Hour, 5, asUser)
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "read committed") {
			t.Errorf("RotateTx in %s = %v, want a refusal naming read committed", iso, err)
		}
	}
	if n := count(t, f.db, `SELECT count(*) FROM keyworker.api_keys WHERE user_id = $1`, user); n != 1 {
		t.Fatalf("%d keys after the refused calls, want 1", n)
	}

}
