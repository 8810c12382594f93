package keyauth

import (
	"time"
)

// CachedChecker exposes the middleware's cache, for tests of its bound.
type CachedChecker = cachedChecker

func NewCachedChecker(next Checker, ttl time.Duration, size int, now func() time.Time) *CachedChecker {
	return newCachedChecker(next, ttl, size, now)
}

func (c *CachedChecker) Len() int { return c.len() }
