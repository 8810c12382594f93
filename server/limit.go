package server

import (
	"hash/maphash"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiterShards spreads a limiter's keys over independently locked maps, so
// one client's request never waits on a sweep of every other client's.
const limiterShards = 64

// limiterMaxKeys bounds the keys a limiter remembers (about 200 bytes each).
// Past it, new keys of a full shard share that shard's overflow bucket, so a
// flood of fresh addresses is still limited in aggregate while the clients
// already known keep their own buckets.
const limiterMaxKeys = 100_000

// limiter is a token bucket per key (golang.org/x/time/rate): n events per
// window, in bursts of up to n. A key's bucket is forgotten once it has been
// idle long enough to be full again, which is the same as never having seen
// it, so expiry loses nothing. Safe for concurrent use.
type limiter struct {
	limit  rate.Limit
	burst  int
	idle   time.Duration // time for an empty bucket to fill: window
	seed   maphash.Seed
	shards [limiterShards]limiterShard
}

type limiterShard struct {
	mu       sync.Mutex
	keys     map[string]*limiterEntry
	overflow *rate.Limiter
	swept    time.Time
}

type limiterEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLimiter(n int, window time.Duration) *limiter {
	l := &limiter{limit: rate.Limit(float64(n) / window.Seconds()), burst: n, idle: window, seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].keys = map[string]*limiterEntry{}
		l.shards[i].overflow = rate.NewLimiter(l.limit, l.burst)
	}
	return l
}

// bucket is key's token bucket at now, made if need be. Each shard sweeps
// its idle keys at most once per idle period, so a sweep's cost is spread
// over the requests of that period.
func (l *limiter) bucket(key string, now time.Time) *rate.Limiter {
	sh := &l.shards[maphash.String(l.seed, key)%limiterShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if now.Sub(sh.swept) >= l.idle {
		for k, e := range sh.keys {
			if now.Sub(e.seen) >= l.idle {
				delete(sh.keys, k)
			}
		}
		sh.swept = now
	}
	e, ok := sh.keys[key]
	if !ok {
		if len(sh.keys) >= limiterMaxKeys/limiterShards {
			return sh.overflow
		}
		e = &limiterEntry{lim: rate.NewLimiter(l.limit, l.burst)}
		sh.keys[key] = e
	}
	e.seen = now
	return e.lim
}

// allow takes a token of key's bucket; when there is none it says how long
// until there is.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	b := l.bucket(key, now)
	r := b.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// blocked reports whether key's bucket is empty (and for how long it stays
// so) without taking a token: for limits on failures, checked before the
// attempt and charged only when it fails.
func (l *limiter) blocked(key string, now time.Time) (bool, time.Duration) {
	b := l.bucket(key, now)
	tokens := b.TokensAt(now)
	if tokens >= 1 {
		return false, 0
	}
	return true, time.Duration(math.Ceil((1 - tokens) / float64(l.limit) * float64(time.Second)))
}

// charge takes a token from key's bucket, if there is one.
func (l *limiter) charge(key string, now time.Time) {
	l.bucket(key, now).AllowN(now, 1)
}

// size is how many keys the limiter remembers.
func (l *limiter) size() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.keys)
		sh.mu.Unlock()
	}
	return n
}
