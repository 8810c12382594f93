package keystore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
)

func TestNewNamesTheBadField(t *testing.T) {
	t.Parallel()
	sealer := newSealer(t)
	for _, c := range []struct {
		cfg  keystore.Config
		want string
	}{
		{keystore.Config{}, "Sealer is required"},
		{keystore.Config{Sealer: sealer, Schema: "Bad-Schema"}, "Schema"},
		{keystore.Config{Sealer: sealer, Prefix: "SK"}, "Prefix"},
		{keystore.Config{Sealer: sealer, RevealTTL: time.Second}, "RevealTTL must be between 1m0s and 2160h0m0s, got 1s"},
	} {
		if _, err := keystore.New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", c.cfg, err, c.want)
		}
	}
	s, err := keystore.New(keystore.Config{Sealer: sealer})
	if err != nil || s.Schema() != "keyworker" || s.Prefix() != "sk" || s.RevealTTL() != 7*24*time.Hour {
		t.Fatalf("defaults: %v, %v", s, err)
	}
}

func TestSignupKeyTwiceMakesOneRow(t *testing.T) {
	t.Parallel()
	f := setup(t)
	user := f.newUser(t)
	first := f.createSignup(t, user)
	if first.Existing || first.Source != keystore.SourceSignup || first.RevealExpiresAt.IsZero() {
		t.Fatalf("first CreateTx = %+v", first)
	}
	second := f.createSignup(t, user)
	if !second.Existing || second.ID != first.ID || second.Last4 != first.Last4 ||
		!second.CreatedAt.Equal(first.CreatedAt) || !second.RevealExpiresAt.Equal(first.RevealExpiresAt) {
		t.Fatalf("second CreateTx = %+v, want Existing with the first key %+v", second, first)
	}
	if n := count(t, f.db, `SELECT count(*) FROM keyworker.api_keys WHERE user_id = $1`, user); n != 1 {
		t.Fatalf("%d keys, want 1", n)
	}
	if got := f.events(t, first.ID); !slices.Equal(got, []string{"created"}) {
		t.Fatalf("events %v, want one created", got)
	}
}

// TestConcurrentSignupKeysWaitForTheFirst guards the unique index as the real
// guard: a second transaction blocks on the first's uncommitted key and then
// reports it as existing.
func TestConcurrentSignupKeysWaitForTheFirst(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	tx1, err := f.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx1.Rollback(ctx)
	first, err := f.store.CreateTx(ctx, tx1, keystore.NewKey{UserID: user}, keystore.Audit{})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		c   keystore.Created
		err error
	}
	done := make(chan result, 1)
	go func() {
		tx2, err := f.db.Begin(ctx)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer tx2.Rollback(ctx)
		c, err := f.store.CreateTx(ctx, tx2, keystore.NewKey{UserID: user}, keystore.Audit{})
		if err == nil {
			err = tx2.Commit(ctx)
		}
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("the second CreateTx did not wait for the first: %+v, %v", r.c, r.err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || !r.c.Existing || r.c.ID != first.ID {
		t.Fatalf("second CreateTx = %+v, %v; want Existing %s", r.c, r.err, first.ID)
	}
}

func TestCreateErrors(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	_, _, err := f.store.CreateWithPlaintext(ctx, f.db, keystore.NewKey{UserID: "00000000-0000-4000-8000-999999999999"}, keystore.Audit{})
	if !errors.Is(err, keystore.ErrUserNotFound) {
		t.Errorf("key for a missing user: %v, want ErrUserNotFound", err)
	}
	for _, nk := range []keystore.NewKey{
		{UserID: "not-a-uuid"},
		{UserID: user, Name: strings.Repeat("n", 201)},
		{UserID: user, Name: "a\x00b"}, // PostgreSQL's text refuses NUL: an invalid name, not a server error
		{UserID: user, Name: "line\nbreak"},
		{UserID: user, Name: "\xff\xfe"},
		{UserID: user, Source: "signup"},
		{UserID: user, ExpiresAt: new(time.Now().Add(-time.Hour))},
	} {
		if _, _, err := f.store.CreateWithPlaintext(ctx, f.db, nk, keystore.Audit{}); !errors.Is(err, keystore.ErrInvalid) {
			t.Errorf("CreateWithPlaintext(%+v) = %v, want ErrInvalid", nk, err)
		}
	}
	if _, _, err := f.store.CreateWithPlaintext(ctx, f.db, keystore.NewKey{UserID: user}, keystore.Audit{Actor: "root"}); !errors.Is(err, keystore.ErrInvalid) {
		t.Errorf("unknown actor: %v, want ErrInvalid", err)
	}
	if n := count(t, f.db, `SELECT count(*) FROM keyworker.api_keys`); n != 0 {
		t.Fatalf("%d keys made by failed calls", n)
	}
}

func TestManualKeyHasNoRevealAndIsListed(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	exp := time.Now().Add(24 * time.Hour)
	c, plain, err := f.store.CreateWithPlaintext(ctx, f.db, keystore.NewKey{UserID: user, Name: "ci", ExpiresAt: &exp},
		keystore.Audit{Actor: keystore.ActorOperator, Detail: map[string]any{"ticket": "OPS-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Source != keystore.SourceManual || c.Name != "ci" || c.ExpiresAt == nil || !c.RevealExpiresAt.IsZero() {
		t.Fatalf("Created = %+v", c)
	}
	if p, err := keys.Parse(plain); err != nil || p.ID() != c.ID || p.Last4() != c.Last4 {
		t.Fatalf("plaintext does not belong to %s: %v", c.ID, err)
	}
	if n := count(t, f.db, `SELECT count(*) FROM keyworker.key_reveals`); n != 0 {
		t.Fatalf("a manual key left %d sealed secrets", n)
	}
	if _, err := f.store.Reveal(ctx, f.db, user, keystore.Audit{}); !errors.Is(err, keystore.ErrNothingToReveal) {
		t.Fatalf("Reveal of a manual key: %v", err)
	}
	var actor, ticket string
	if err := f.db.QueryRow(ctx, `SELECT actor, detail->>'ticket' FROM keyworker.key_events WHERE key_id = $1 AND event = 'created'`, c.ID).
		Scan(&actor, &ticket); err != nil || actor != "operator" || ticket != "OPS-1" {
		t.Fatalf("created event: %s %s %v", actor, ticket, err)
	}

	signup := f.createSignup(t, user)
	other := f.newUser(t)
	f.createSignup(t, other)
	list, err := f.store.List(ctx, f.db, user, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != signup.ID || list[1].ID != c.ID {
		t.Fatalf("List(user) = %v, want %s then %s (newest first)", list, signup.ID, c.ID)
	}
	if all, err := f.store.List(ctx, f.db, "", 0); err != nil || len(all) != 3 {
		t.Fatalf("List(all) = %d, %v", len(all), err)
	}
	if one, err := f.store.List(ctx, f.db, "", 1); err != nil || len(one) != 1 {
		t.Fatalf("List(limit 1) = %d, %v", len(one), err)
	}
	got, err := f.store.Get(ctx, f.db, c.ID)
	if err != nil || got.Name != "ci" || got.UserID != user || got.Status(time.Now()) != keys.StatusValid {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if _, err := f.store.Get(ctx, f.db, strings.Repeat("0", 27)); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("Get(unknown) = %v", err)
	}
	if _, err := f.store.Get(ctx, f.db, "x'; DROP TABLE x; --"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("Get(malformed) = %v", err)
	}
}

func TestRevealOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	c := f.createSignup(t, user)
	r := f.reveal(t, user)
	if r.KeyID != c.ID || r.UserID != user || r.Last4 != c.Last4 || r.Prefix != "sk" {
		t.Fatalf("Revealed = %v for %+v", r, c)
	}
	p, err := keys.Parse(r.Plaintext())
	if err != nil || p.ID() != c.ID {
		t.Fatalf("revealed plaintext does not parse as %s: %v", c.ID, err)
	}
	if _, err := f.store.Reveal(ctx, f.db, user, keystore.Audit{}); !errors.Is(err, keystore.ErrNothingToReveal) || errors.Is(err, keystore.ErrRevealExpired) {
		t.Fatalf("second Reveal = %v, want ErrNothingToReveal", err)
	}
	if got := f.events(t, c.ID); !slices.Equal(got, []string{"created", "revealed"}) {
		t.Fatalf("events %v", got)
	}

	// The plaintext stays out of every printed form.
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("revealed", "key", r, "value", *r)
	js, _ := json.Marshal(r)
	for what, out := range map[string]string{
		"%v": fmt.Sprintf("%v", r), "%+v": fmt.Sprintf("%+v", *r), "%#v": fmt.Sprintf("%#v", *r),
		"%s": fmt.Sprintf("%s", *r), "%q": fmt.Sprintf("%q", *r), "%x": fmt.Sprintf("%x", *r),
		"slog": logged.String(), "json": string(js),
	} {
		if strings.Contains(out, p.Secret()) {
			t.Errorf("%s shows the secret: %s", what, out)
		}
		if !strings.Contains(out, c.ID) && what != "%x" {
			t.Errorf("%s does not identify the key: %s", what, out)
		}
	}
}

func TestRevealIsOnlyForTheOwnerAndUnexpiredLiveKeys(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	owner, other := f.newUser(t), f.newUser(t)
	c := f.createSignup(t, owner)

	if _, err := f.store.Reveal(ctx, f.db, other, keystore.Audit{}); !errors.Is(err, keystore.ErrNothingToReveal) {
		t.Fatalf("another user's Reveal = %v", err)
	}
	if _, err := f.store.Reveal(ctx, f.db, "nope", keystore.Audit{}); !errors.Is(err, keystore.ErrInvalid) {
		t.Fatalf("malformed user: %v", err)
	}

	// A store sealing under another key cannot open it, and leaves it.
	wrong, err := keystore.New(keystore.Config{Sealer: newSealer(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wrong.Reveal(ctx, f.db, owner, keystore.Audit{}); !errors.Is(err, keys.ErrOpen) {
		t.Fatalf("Reveal under the wrong sealing key = %v, want keys.ErrOpen", err)
	}
	if n := count(t, f.db, `SELECT count(*) FROM keyworker.key_reveals WHERE key_id = $1`, c.ID); n != 1 {
		t.Fatal("a failed open deleted the sealed secret")
	}

	// Past the pick-up window: expired, then purged.
	f.clock.Advance(7*24*time.Hour + time.Minute)
	if _, err := f.store.Reveal(ctx, f.db, owner, keystore.Audit{}); !errors.Is(err, keystore.ErrRevealExpired) || !errors.Is(err, keystore.ErrNothingToReveal) {
		t.Fatalf("Reveal after the window = %v, want ErrRevealExpired", err)
	}
	n, err := f.store.PurgeExpiredReveals(ctx, f.db)
	if err != nil || n != 1 {
		t.Fatalf("PurgeExpiredReveals = %d, %v; want 1", n, err)
	}
	if n, _ := f.store.PurgeExpiredReveals(ctx, f.db); n != 0 {
		t.Fatalf("second purge = %d", n)
	}
	if _, err := f.store.Reveal(ctx, f.db, owner, keystore.Audit{}); !errors.Is(err, keystore.ErrNothingToReveal) || errors.Is(err, keystore.ErrRevealExpired) {
		t.Fatalf("Reveal after purge = %v", err)
	}
	if got := f.events(t, c.ID); !slices.Equal(got, []string{"created", "reveal_expired"}) {
		t.Fatalf("events %v", got)
	}
}

func TestRevokeDeletesThePendingReveal(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	c := f.createSignup(t, user)
	ok, err := f.store.Revoke(ctx, f.db, c.ID, time.Time{}, keystore.Audit{Actor: keystore.ActorOperator})
	if err != nil || !ok {
		t.Fatalf("Revoke = %v, %v", ok, err)
	}
	if ok, err := f.store.Revoke(ctx, f.db, c.ID, time.Time{}, keystore.Audit{}); err != nil || ok {
		t.Fatalf("second Revoke = %v, %v; want false", ok, err)
	}
	if _, err := f.store.Revoke(ctx, f.db, strings.Repeat("1", 27), time.Time{}, keystore.Audit{}); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("Revoke(unknown) = %v", err)
	}
	if _, err := f.store.Reveal(ctx, f.db, user, keystore.Audit{}); !errors.Is(err, keystore.ErrNothingToReveal) {
		t.Fatalf("Reveal of a revoked key = %v", err)
	}
	if got := f.events(t, c.ID); !slices.Equal(got, []string{"created", "revoked"}) {
		t.Fatalf("events %v", got)
	}
	info, _ := f.store.Get(ctx, f.db, c.ID)
	if info.Status(time.Now()) != keys.StatusRevoked {
		t.Fatalf("status after revoke: %v", info.Status(time.Now()))
	}
}

func TestRotateSchedulesTheOldKeysRevocation(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	old := f.createSignup(t, user)
	oldPlain := f.reveal(t, user).Plaintext()

	c, plain, err := f.store.Rotate(ctx, f.db, old.ID, time.Hour, keystore.Audit{Actor: keystore.ActorOperator})
	if err != nil {
		t.Fatal(err)
	}
	if c.UserID != user || c.Source != keystore.SourceManual || c.RotatedFrom != old.ID || c.ID == old.ID {
		t.Fatalf("rotated key = %+v", c)
	}
	for _, tok := range []string{plain, oldPlain} {
		if v, err := f.store.Verify(ctx, f.db, tok); err != nil || v.Status != keys.StatusValid {
			t.Fatalf("during the overlap Verify = %+v, %v; both keys must be valid", v, err)
		}
		if st, _, _ := f.sqlVerify(t, &tok); st != "valid" {
			t.Fatalf("during the overlap verify_api_key = %s", st)
		}
	}
	info, _ := f.store.Get(ctx, f.db, old.ID)
	if info.RevokedAt == nil || info.RevokedAt.Sub(time.Now()) < 59*time.Minute {
		t.Fatalf("old key's revoked_at = %v, want about an hour from now", info.RevokedAt)
	}
	if got := f.events(t, old.ID); !slices.Equal(got, []string{"created", "revealed", "rotated"}) {
		t.Fatalf("old key events %v", got)
	}
	// After the overlap the old key is revoked, in Go and in SQL.
	f.clock.Advance(time.Hour + time.Second)
	if v, _ := f.store.Verify(ctx, f.db, oldPlain); v.Status != keys.StatusRevoked {
		t.Fatalf("after the overlap Verify = %v", v.Status)
	}
	// A rotation with no overlap revokes at once; a revoked key cannot rotate.
	c2, _, err := f.store.Rotate(ctx, f.db, c.ID, 0, keystore.Audit{})
	if err != nil || c2.RotatedFrom != c.ID {
		t.Fatalf("Rotate(0) = %+v, %v", c2, err)
	}
	if _, _, err := f.store.Rotate(ctx, f.db, c.ID, 0, keystore.Audit{}); !errors.Is(err, keystore.ErrRevoked) {
		t.Fatalf("rotating a revoked key: %v", err)
	}
	if _, _, err := f.store.Rotate(ctx, f.db, strings.Repeat("2", 27), 0, keystore.Audit{}); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("rotating an unknown key: %v", err)
	}
}

func TestEventTx(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	if err := f.store.EventTx(ctx, f.db, "skipped", "", user, keystore.Audit{JobID: 42, Attempt: 2, Detail: map[string]any{"reason": "user_deleted"}}); err != nil {
		t.Fatal(err)
	}
	var reason, actor string
	var job, attempt int
	var key *string
	if err := f.db.QueryRow(ctx, `SELECT detail->>'reason', actor, job_id, attempt, key_id FROM keyworker.key_events WHERE user_id = $1`, user).
		Scan(&reason, &actor, &job, &attempt, &key); err != nil {
		t.Fatal(err)
	}
	if reason != "user_deleted" || actor != "worker" || job != 42 || attempt != 2 || key != nil {
		t.Fatalf("event = %s %s %d %d %v", reason, actor, job, attempt, key)
	}
	for _, bad := range []string{"", "Bad", "has-dash", strings.Repeat("a", 41)} {
		if err := f.store.EventTx(ctx, f.db, bad, "", "", keystore.Audit{}); !errors.Is(err, keystore.ErrInvalid) {
			t.Errorf("EventTx(%q) = %v", bad, err)
		}
	}
}
