package keyauth_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyworker/keyworker/keyauth"
)

// TestCacheStalenessIsBoundedByTTL checks the documented bound: a key
// revoked in the database still passes from the cache within CacheTTL of
// its last check, and is refused once CacheTTL has passed.
func TestCacheStalenessIsBoundedByTTL(t *testing.T) {
	t.Parallel()
	f := setup(t)
	key, id := f.newKey(t)
	clk := newClock()
	checker := &countingChecker{Checker: keyauth.Postgres(f.db, "keyworker")}
	h := keyauth.Middleware(checker, keyauth.Options{CacheTTL: time.Minute, Now: clk.Now})(&echo{})
	auth := []string{"Authorization", "Bearer " + key}

	if w := serve(h, auth...); w.Code != 200 {
		t.Fatalf("valid key: %d", w.Code)
	}
	if w := serve(h, auth...); w.Code != 200 || checker.n.Load() != 1 {
		t.Fatalf("second request: %d after %d checks, want 200 from the cache (1 check)", w.Code, checker.n.Load())
	}

	f.revoke(t, id, time.Time{})
	if r, err := keyauth.Postgres(f.db, "").Check(context.Background(), key); err != nil || r.Valid() {
		t.Fatalf("the database still says %+v, %v after the revoke", r, err)
	}
	clk.Advance(time.Minute - time.Millisecond)
	if w := serve(h, auth...); w.Code != 200 || checker.n.Load() != 1 {
		t.Errorf("within CacheTTL: %d after %d checks, want 200 from the cache", w.Code, checker.n.Load())
	}
	clk.Advance(time.Millisecond)
	if w := serve(h, auth...); w.Code != 401 || checker.n.Load() != 2 {
		t.Errorf("at CacheTTL: %d after %d checks, want 401 from a new check", w.Code, checker.n.Load())
	}
	if w := serve(h, auth...); w.Code != 401 || checker.n.Load() != 3 {
		t.Errorf("again: %d after %d checks, want 401 checked again (refusals are not kept)", w.Code, checker.n.Load())
	}
}

// TestCacheKeepsOnlyValidResults checks refusals and failed checks always
// reach the Checker, and that each key has its own entry.
func TestCacheKeepsOnlyValidResults(t *testing.T) {
	t.Parallel()
	f := setup(t)
	clk := newClock()
	checker := &countingChecker{Checker: keyauth.Postgres(f.db, "keyworker")}
	c := keyauth.NewCachedChecker(checker, time.Minute, 10, clk.Now)
	ctx := context.Background()

	unknown := unknownKey(t)
	for range 3 {
		if r, err := c.Check(ctx, unknown); err != nil || r.Valid() {
			t.Fatalf("unknown key: %+v, %v", r, err)
		}
	}
	if n := checker.n.Load(); n != 3 || c.Len() != 0 {
		t.Errorf("unknown key checked %d times, %d entries; want 3 checks, nothing kept", n, c.Len())
	}

	failing := &countingChecker{Checker: keyauth.Postgres(f.db, "nosuchschema")}
	fc := keyauth.NewCachedChecker(failing, time.Minute, 10, clk.Now)
	key, _ := f.newKey(t)
	for range 2 {
		if _, err := fc.Check(ctx, key); err == nil {
			t.Fatal("a failing checker succeeded")
		}
	}
	if failing.n.Load() != 2 || fc.Len() != 0 {
		t.Errorf("failed checks: %d checks, %d entries; want 2, 0", failing.n.Load(), fc.Len())
	}

	a, aID := f.newKey(t)
	b, bID := f.newKey(t)
	checker.n.Store(0)
	for range 2 {
		ra, _ := c.Check(ctx, a)
		rb, _ := c.Check(ctx, b)
		if ra.KeyID != aID || rb.KeyID != bID {
			t.Fatalf("results %+v %+v mixed up keys", ra, rb)
		}
	}
	if n := checker.n.Load(); n != 2 || c.Len() != 2 {
		t.Errorf("two keys twice: %d checks, %d entries; want 2, 2", n, c.Len())
	}
}

// TestCacheIsBounded checks the cache never holds more than its size, and
// stays right when it has to drop entries.
func TestCacheIsBounded(t *testing.T) {
	t.Parallel()
	f := setup(t)
	clk := newClock()
	c := keyauth.NewCachedChecker(keyauth.Postgres(f.db, "keyworker"), time.Minute, 3, clk.Now)
	ctx := context.Background()
	var ids []string
	var ks []string
	for range 8 {
		k, id := f.newKey(t)
		ks, ids = append(ks, k), append(ids, id)
	}
	for round := range 2 {
		for i, k := range ks {
			r, err := c.Check(ctx, k)
			if err != nil || !r.Valid() || r.KeyID != ids[i] {
				t.Fatalf("round %d key %d: %+v, %v", round, i, r, err)
			}
			if c.Len() > 3 {
				t.Fatalf("cache holds %d entries, bound 3", c.Len())
			}
		}
		clk.Advance(2 * time.Minute) // all expired: the next insert sweeps them
	}
	if c.Len() != 3 {
		t.Errorf("cache holds %d entries after filling, want 3", c.Len())
	}
}
