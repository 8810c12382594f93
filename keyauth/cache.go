package keyauth

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"
)

// cachedChecker keeps valid results of next for ttl, keyed by the SHA-256
// of the key, at most size of them.
type cachedChecker struct {
	next Checker
	ttl  time.Duration
	size int
	now  func() time.Time

	mu        sync.Mutex
	entries   map[[sha256.Size]byte]cacheEntry
	lastSweep time.Time
}

type cacheEntry struct {
	res     Result
	expires time.Time
}

func newCachedChecker(next Checker, ttl time.Duration, size int, now func() time.Time) *cachedChecker {
	return &cachedChecker{next: next, ttl: ttl, size: size, now: now, entries: make(map[[sha256.Size]byte]cacheEntry)}
}

// Check answers from the cache when it holds a valid result for key that is
// younger than ttl. An entry's age counts from before the check that made
// it, so a key refused by the database from time T on is served from the
// cache to no request after T+ttl.
func (c *cachedChecker) Check(ctx context.Context, key string) (Result, error) {
	h := sha256.Sum256([]byte(key))
	start := c.now()
	if r, ok := c.get(h, start); ok {
		return r, nil
	}
	r, err := c.next.Check(ctx, key)
	if err == nil && r.Valid() {
		c.put(h, cacheEntry{res: r, expires: start.Add(c.ttl)})
	}
	return r, err
}

func (c *cachedChecker) get(h [sha256.Size]byte, now time.Time) (Result, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[h]
	if !ok {
		return Result{}, false
	}
	if !now.Before(e.expires) {
		delete(c.entries, h)
		return Result{}, false
	}
	return e.res, true
}

func (c *cachedChecker) put(h [sha256.Size]byte, e cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[h]; !ok && len(c.entries) >= c.size {
		c.makeRoom()
	}
	c.entries[h] = e
}

// makeRoom drops expired entries (a full sweep, at most once per ttl) and,
// when that frees nothing, one entry (map order: an arbitrary one).
func (c *cachedChecker) makeRoom() {
	now := c.now()
	if now.Sub(c.lastSweep) >= c.ttl {
		c.lastSweep = now
		for h, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, h)
			}
		}
	}
	for h := range c.entries {
		if len(c.entries) < c.size {
			break
		}
		delete(c.entries, h)
	}
}

// len is for tests.
func (c *cachedChecker) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
