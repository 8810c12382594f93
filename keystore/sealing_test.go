package keystore_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
)

// storeWith is a Store of f's database with its own Sealer.
func (f *fixture) storeWith(t *testing.T, key []byte, previous ...[]byte) *keystore.Store {
	t.Helper()
	sealer, err := keys.NewSealer(key, previous...)
	if err != nil {
		t.Fatal(err)
	}
	s, err := keystore.New(keystore.Config{Sealer: sealer, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sealV1 makes a box as keyworker did before boxes recorded their key: the
// version byte 1, a random nonce and the ciphertext, with the version byte
// and the key id as associated data (no user id).
func sealV1(t *testing.T, key []byte, keyID, plaintext string) []byte {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		t.Fatal(err)
	}
	return aead.Seal([]byte{1}, nil, []byte(plaintext), append([]byte{1}, keyID...))
}

// waitingV1 makes a manual key for user and leaves its plaintext waiting in
// key_reveals in a version 1 box under sealingKey, as an older worker did.
func (f *fixture) waitingV1(t *testing.T, user string, sealingKey []byte) (keystore.Created, string) {
	t.Helper()
	ctx := context.Background()
	c, plaintext, err := f.store.CreateWithPlaintext(ctx, f.db, keystore.NewKey{UserID: user}, keystore.Audit{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Exec(ctx, `INSERT INTO keyworker.key_reveals (key_id, user_id, sealed, expires_at)
		VALUES ($1, $2, $3, now() + interval '1 day')`, c.ID, user, sealV1(t, sealingKey, c.ID, plaintext)); err != nil {
		t.Fatal(err)
	}
	return c, plaintext
}

// TestRevealHandsOutOnlyTheKeysOwnUser guards the pick-up query: a
// key_reveals row whose user is not the key's user (written by anything
// but keyworker) is not handed to that user, and stays.
func TestRevealHandsOutOnlyTheKeysOwnUser(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	owner, other := f.newUser(t), f.newUser(t)
	c := f.createSignup(t, owner)
	if _, err := f.db.Exec(ctx, `UPDATE keyworker.key_reveals SET user_id = $2 WHERE key_id = $1`, c.ID, other); err != nil {
		t.Fatal(err)
	}
	r, err := f.store.Reveal(ctx, f.db, other, keystore.Audit{Actor: keystore.ActorUser})
	if err == nil {
		t.Fatalf("user %s picked up %s, the key of user %s", other, r, owner)
	}
	if !errors.Is(err, keystore.ErrNothingToReveal) {
		t.Fatalf("Reveal of a row naming another user = %v, want ErrNothingToReveal", err)
	}
	if n := count(t, f.db, `SELECT count(*) FROM keyworker.key_reveals WHERE key_id = $1`, c.ID); n != 1 {
		t.Fatal("the row was deleted")
	}
}

// TestSealedBoxIsBoundToItsUser guards the associated data: a key moved to
// another user (its row and its reveal row rewritten) no longer opens.
func TestSealedBoxIsBoundToItsUser(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	owner, other := f.newUser(t), f.newUser(t)
	c := f.createSignup(t, owner)
	for _, q := range []string{
		`UPDATE keyworker.api_keys SET user_id = $2 WHERE id = $1`,
		`UPDATE keyworker.key_reveals SET user_id = $2 WHERE key_id = $1`,
	} {
		if _, err := f.db.Exec(ctx, q, c.ID, other); err != nil {
			t.Fatal(err)
		}
	}
	r, err := f.store.Reveal(ctx, f.db, other, keystore.Audit{Actor: keystore.ActorUser})
	if err == nil {
		t.Fatalf("the box sealed for user %s opened for user %s: %s", owner, other, r)
	}
	if !errors.Is(err, keys.ErrOpen) || errors.Is(err, keys.ErrSealedUnderAnotherKey) {
		t.Fatalf("Reveal = %v, want keys.ErrOpen (not another sealing key)", err)
	}
}

// TestVersion1BoxesStillReveal guards boxes sealed before fingerprints and
// user binding: they open, under the current key or a previous one.
func TestVersion1BoxesStillReveal(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	c, plaintext := f.waitingV1(t, user, f.key)
	r := f.reveal(t, user)
	if r.KeyID != c.ID || r.Plaintext() != plaintext {
		t.Fatalf("Reveal of a version 1 box = %s", r)
	}

	oldKey := randomKey(t)
	user2 := f.newUser(t)
	c2, plaintext2 := f.waitingV1(t, user2, oldKey)
	r2, err := f.storeWith(t, f.key, oldKey).Reveal(ctx, f.db, user2, keystore.Audit{})
	if err != nil || r2.KeyID != c2.ID || r2.Plaintext() != plaintext2 {
		t.Fatalf("Reveal of a version 1 box under the previous key = %v, %v", r2, err)
	}
}

// TestRevealSaysSealedUnderAnotherKey guards the error of a box no key of
// the worker opens: not a "try again" failure, and the row stays.
func TestRevealSaysSealedUnderAnotherKey(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	c := f.createSignup(t, user)
	otherKey := randomKey(t)
	_, err := f.storeWith(t, otherKey).Reveal(ctx, f.db, user, keystore.Audit{})
	if !errors.Is(err, keys.ErrSealedUnderAnotherKey) {
		t.Fatalf("Reveal under another sealing key = %v, want keys.ErrSealedUnderAnotherKey", err)
	}
	for _, fp := range []string{keys.Fingerprint(f.key), keys.Fingerprint(otherKey)} {
		if !strings.Contains(err.Error(), fp) {
			t.Errorf("error %q does not name fingerprint %s", err, fp)
		}
	}
	if n := count(t, f.db, `SELECT count(*) FROM keyworker.key_reveals WHERE key_id = $1`, c.ID); n != 1 {
		t.Fatal("a failed open deleted the sealed secret")
	}
}

func TestCheckSealingKeyRecordsRefusesAndRotates(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	fp := keys.Fingerprint(f.key)

	got, err := f.store.CheckSealingKey(ctx, f.db)
	if err != nil || !got.Recorded || got.Fingerprint != fp {
		t.Fatalf("first CheckSealingKey = %+v, %v; want %s recorded", got, err, fp)
	}
	if got, err := f.store.CheckSealingKey(ctx, f.db); err != nil || got.Recorded || got.Fingerprint != fp {
		t.Fatalf("second CheckSealingKey = %+v, %v", got, err)
	}

	// Another key is refused, naming both fingerprints and no key.
	otherKey := randomKey(t)
	_, err = f.storeWith(t, otherKey).CheckSealingKey(ctx, f.db)
	var mismatch *keystore.SealingKeyMismatchError
	if !errors.As(err, &mismatch) || !errors.Is(err, keystore.ErrSealingKeyMismatch) {
		t.Fatalf("CheckSealingKey with another key = %v, want a SealingKeyMismatchError", err)
	}
	msg := err.Error()
	for _, want := range []string{fp, keys.Fingerprint(otherKey), "previous key"} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal %q does not say %q", msg, want)
		}
	}
	for _, k := range [][]byte{f.key, otherKey} {
		if strings.Contains(msg, base64.StdEncoding.EncodeToString(k)[:12]) {
			t.Errorf("refusal %q shows a key", msg)
		}
	}
	// A previous key that is not the recorded one does not help.
	if _, err := f.storeWith(t, otherKey, randomKey(t)).CheckSealingKey(ctx, f.db); !errors.Is(err, keystore.ErrSealingKeyMismatch) {
		t.Fatalf("new key with an unrelated previous key = %v, want the refusal", err)
	}

	// Rotation: the new key with the recorded one as previous moves the record.
	newKey := randomKey(t)
	rotating := f.storeWith(t, newKey, f.key)
	got, err = rotating.CheckSealingKey(ctx, f.db)
	if err != nil || got.Fingerprint != keys.Fingerprint(newKey) || got.RotatedFrom != fp || got.Recorded {
		t.Fatalf("CheckSealingKey while rotating = %+v, %v", got, err)
	}
	if got, err := rotating.CheckSealingKey(ctx, f.db); err != nil || got.RotatedFrom != "" {
		t.Fatalf("CheckSealingKey after the rotation = %+v, %v", got, err)
	}
	if got, err := f.storeWith(t, newKey).CheckSealingKey(ctx, f.db); err != nil || got.Fingerprint != keys.Fingerprint(newKey) {
		t.Fatalf("the new key alone after the rotation = %+v, %v", got, err)
	}
	// The old key alone is now refused.
	if _, err := f.store.CheckSealingKey(ctx, f.db); !errors.Is(err, keystore.ErrSealingKeyMismatch) {
		t.Fatalf("the old key after the rotation = %v, want the refusal", err)
	}
	if n := count(t, f.db, `SELECT count(*) FROM keyworker.key_events WHERE event IN ('sealing_key_recorded', 'sealing_key_rotated')`); n != 2 {
		t.Errorf("%d sealing key events, want 2 (recorded, rotated)", n)
	}
	if n := count(t, f.db, `SELECT count(*) FROM keyworker.sealing_key WHERE fingerprint = $1 AND previous_fingerprint = $2`, keys.Fingerprint(newKey), fp); n != 1 {
		t.Error("the record does not name the new key and the previous one")
	}
}

// TestCheckSealingKeyConcurrentFirstUse guards the race of two replicas
// with different keys starting on a new database: exactly one wins.
func TestCheckSealingKeyConcurrentFirstUse(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	stores := []*keystore.Store{f.storeWith(t, randomKey(t)), f.storeWith(t, randomKey(t))}
	errs := make(chan error, len(stores))
	for _, s := range stores {
		go func() {
			_, err := s.CheckSealingKey(ctx, f.db)
			errs <- err
		}()
	}
	var refused, ok int
	for range stores {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, keystore.ErrSealingKeyMismatch):
			refused++
		default:
			t.Fatalf("CheckSealingKey = %v", err)
		}
	}
	if ok != 1 || refused != 1 {
		t.Fatalf("%d accepted, %d refused; want 1 and 1", ok, refused)
	}
}

// TestResealMovesWaitingKeysToTheNewKey guards `worker keys reseal`: after
// it, the new key alone opens every waiting key, including boxes from
// before fingerprints; what no key opens is counted and left.
func TestResealMovesWaitingKeysToTheNewKey(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	oldKey, newKey, lostKey := f.key, randomKey(t), randomKey(t)
	var users []string
	for range 4 {
		u := f.newUser(t)
		f.createSignup(t, u)
		users = append(users, u)
	}
	v1User := f.newUser(t)
	_, v1Plain := f.waitingV1(t, v1User, oldKey)
	users = append(users, v1User)
	lostUser := f.newUser(t)
	lostStore := f.storeWith(t, lostKey)
	tx, err := f.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lostStore.CreateTx(ctx, tx, keystore.NewKey{UserID: lostUser}, keystore.Audit{}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	rotating := f.storeWith(t, newKey, oldKey)
	if _, err := f.store.CheckSealingKey(ctx, f.db); err != nil {
		t.Fatal(err)
	}
	if _, err := rotating.CheckSealingKey(ctx, f.db); err != nil {
		t.Fatal(err)
	}
	var progress []keystore.ResealResult
	res, err := rotating.Reseal(ctx, f.db, keystore.ResealOptions{
		BatchSize: 2, Audit: keystore.Audit{Actor: keystore.ActorOperator},
		Progress: func(r keystore.ResealResult) { progress = append(progress, r) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Resealed != 5 || res.Current != 0 || res.Failed != 1 || res.FailedBy[keys.Fingerprint(lostKey)] != 1 {
		t.Fatalf("Reseal = %+v, want 5 resealed and 1 failed under %s", res, keys.Fingerprint(lostKey))
	}
	if len(progress) != 3 || progress[2].Resealed != 5 {
		t.Errorf("progress %+v, want 3 batches", progress)
	}
	if n := count(t, f.db, `SELECT coalesce(sum((detail->>'count')::int), 0) FROM keyworker.key_events WHERE event = 'resealed' AND actor = 'operator'`); n != 5 {
		t.Errorf("resealed events count %d keys, want 5", n)
	}

	// Again: nothing to do.
	again, err := rotating.Reseal(ctx, f.db, keystore.ResealOptions{})
	if err != nil || again.Resealed != 0 || again.Current != 5 || again.Failed != 1 {
		t.Fatalf("second Reseal = %+v, %v", again, err)
	}

	// The new key alone opens every re-sealed key.
	newOnly := f.storeWith(t, newKey)
	for _, u := range users {
		r, err := newOnly.Reveal(ctx, f.db, u, keystore.Audit{})
		if err != nil {
			t.Fatalf("Reveal for %s with the new key only: %v", u, err)
		}
		if u == v1User && r.Plaintext() != v1Plain {
			t.Fatal("the re-sealed version 1 box holds another plaintext")
		}
	}
	if _, err := newOnly.Reveal(ctx, f.db, lostUser, keystore.Audit{}); !errors.Is(err, keys.ErrSealedUnderAnotherKey) {
		t.Fatalf("Reveal of the box no key opens = %v", err)
	}
}
