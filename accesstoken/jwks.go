package accesstoken

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"slices"
	"sync/atomic"
	"time"
)

// maxJWKSSize bounds the key set document. Supabase's holds a handful of keys
// in well under 4 KiB.
const maxJWKSSize = 1 << 20

// RSA modulus sizes accepted from the key set. Supabase uses 2048 bits.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// publicKey is one usable key from the key set.
type publicKey struct {
	kid string
	alg string // algRS256 or algES256
	rsa *rsa.PublicKey
	ec  *ecdsa.PublicKey
}

// keySet is an immutable snapshot of the key set.
type keySet struct {
	keys      map[string][]publicKey // by kid
	fetchedAt time.Time
}

// find returns the key named kid for alg. found reports whether kid is in the
// set at all; when it is but for another algorithm, err is an ErrAlgorithm
// rejection.
func (s *keySet) find(kid, alg string) (key publicKey, found bool, err error) {
	keys, ok := s.keys[kid]
	if !ok {
		return publicKey{}, false, nil
	}
	for _, k := range keys {
		if k.alg == alg {
			return k, true, nil
		}
	}
	return publicKey{}, true, reject(ErrAlgorithm, fmt.Sprintf("kid %s names a %s key, token says %s", quote(kid), keys[0].alg, alg))
}

func (s *keySet) size() int {
	n := 0
	for _, keys := range s.keys {
		n += len(keys)
	}
	return n
}

// jwksCache holds the last good key set and fetches a new one when it is
// stale or when a token names a kid it does not know. Lookups of a known kid
// in a fresh set take no lock. At most one fetch runs at a time, and fetches
// are at least MinJWKSRefetchInterval apart.
type jwksCache struct {
	url     string
	client  *http.Client
	timeout time.Duration
	refresh time.Duration
	now     func() time.Time

	set atomic.Pointer[keySet] // nil until the first successful fetch

	// fetching holds one token; whoever takes it may fetch and may read and
	// write lastAttempt and lastErr. A channel rather than a mutex so that a
	// caller waiting for someone else's fetch can give up when its context
	// ends.
	fetching    chan struct{}
	lastAttempt time.Time
	lastErr     error // of the last fetch; nil when it succeeded
}

func newJWKSCache(cfg Config) *jwksCache {
	c := &jwksCache{
		url:      cfg.JWKSURL,
		client:   cfg.HTTPClient,
		timeout:  cfg.JWKSTimeout,
		refresh:  cfg.JWKSRefresh,
		now:      cfg.Now,
		fetching: make(chan struct{}, 1),
	}
	c.fetching <- struct{}{}
	return c
}

func (c *jwksCache) acquire(ctx context.Context) error {
	select {
	case <-c.fetching:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for signing keys: %w", ctx.Err())
	}
}

func (c *jwksCache) tryAcquire() bool {
	select {
	case <-c.fetching:
		return true
	default:
		return false
	}
}

func (c *jwksCache) release() { c.fetching <- struct{}{} }

// key returns the key named kid for alg, fetching the key set when it is
// stale or does not name kid. It returns an *Error for a rejected token and a
// context error when ctx ends while waiting for another caller's fetch.
func (c *jwksCache) key(ctx context.Context, kid, alg string) (publicKey, error) {
	if set := c.set.Load(); set != nil {
		if k, found, err := set.find(kid, alg); found {
			if c.now().Sub(set.fetchedAt) < c.refresh {
				return k, err
			}
			// Stale. Refresh if nobody else is; otherwise (or if the
			// refresh fails) the last good set still answers.
			if !c.tryAcquire() {
				return k, err
			}
			c.fetchLimited(ctx)
			c.release()
			if k, found, err := c.set.Load().find(kid, alg); found {
				return k, err
			}
			// The fresh set no longer has kid: the key was revoked.
			return publicKey{}, c.unknown(kid, nil)
		}
	}

	// kid is unknown, or there is no set yet: wait for the right to fetch.
	if err := c.acquire(ctx); err != nil {
		return publicKey{}, err
	}
	defer c.release()
	// Whoever held the token before may have fetched a set that has kid.
	if set := c.set.Load(); set != nil {
		if k, found, err := set.find(kid, alg); found {
			return k, err
		}
	}
	c.fetchLimited(ctx)
	if set := c.set.Load(); set != nil {
		if k, found, err := set.find(kid, alg); found {
			return k, err
		}
	}
	return publicKey{}, c.unknown(kid, c.lastErr)
}

// unknown builds the rejection for a kid not in the set. The caller holds
// the fetching token when cause is non-nil.
func (c *jwksCache) unknown(kid string, cause error) error {
	set := c.set.Load()
	if set == nil {
		return &Error{
			Reason: ErrJWKSUnavailable,
			Detail: "the key set from " + c.url + " has not been fetched yet",
			Cause:  cause,
		}
	}
	return &Error{
		Reason: ErrUnknownKey,
		Detail: fmt.Sprintf("kid %s is not among the %d usable keys fetched %s ago", quote(kid), set.size(), c.now().Sub(set.fetchedAt).Round(time.Second)),
		Cause:  cause,
	}
}

// fetchLimited fetches the key set unless the last attempt was less than
// MinJWKSRefetchInterval ago. On success it replaces the set; on failure the
// last good set stays and lastErr records why. The caller holds the fetching
// token.
func (c *jwksCache) fetchLimited(ctx context.Context) {
	if !c.lastAttempt.IsZero() && c.now().Sub(c.lastAttempt) < MinJWKSRefetchInterval {
		return
	}
	_ = c.fetchLocked(ctx)
}

// fetchLocked fetches the key set now. The caller holds the fetching token.
func (c *jwksCache) fetchLocked(ctx context.Context) error {
	c.lastAttempt = c.now()
	set, err := c.fetch(ctx)
	c.lastErr = err
	if err != nil {
		return err
	}
	set.fetchedAt = c.lastAttempt
	c.set.Store(set)
	return nil
}

// refreshNow fetches the key set, ignoring the rate limit.
func (c *jwksCache) refreshNow(ctx context.Context) error {
	if err := c.acquire(ctx); err != nil {
		return err
	}
	defer c.release()
	return c.fetchLocked(ctx)
}

// fetch GETs and parses the key set. The request is not cancelled with ctx
// (only bounded by the timeout): other callers may be waiting for its result,
// and one of them giving up should not spoil it for the rest.
func (c *jwksCache) fetch(ctx context.Context) (*keySet, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetching signing keys: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "keyworker")
	resp, err := c.client.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("fetching signing keys from %s timed out after %s", c.url, c.timeout)
		}
		// The client's error names the URL.
		return nil, fmt.Errorf("fetching signing keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("fetching signing keys from %s: unexpected status %s", c.url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("fetching signing keys from %s timed out after %s", c.url, c.timeout)
		}
		return nil, fmt.Errorf("reading signing keys from %s: %w", c.url, err)
	}
	if len(body) > maxJWKSSize {
		return nil, fmt.Errorf("reading signing keys from %s: document is larger than %d bytes", c.url, maxJWKSSize)
	}
	set, err := parseJWKS(body)
	if err != nil {
		return nil, fmt.Errorf("parsing signing keys from %s: %w", c.url, err)
	}
	return set, nil
}

// jwk is the part of RFC 7517 JSON Web Key this package reads.
type jwk struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid"`
	Use    string   `json:"use"`
	Alg    string   `json:"alg"`
	KeyOps []string `json:"key_ops"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	Crv    string   `json:"crv"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
}

// parseJWKS reads a JWK Set. A document without a keys array is an error; a
// key this package cannot use (another kty or curve, use other than sig,
// key_ops without verify, no kid, bad parameters) is skipped, so one odd key
// does not hide the others. An empty set is valid: a Supabase project still on
// the legacy JWT secret publishes one.
func parseJWKS(body []byte) (*keySet, error) {
	var doc struct {
		Keys *[]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("decoding JWK set: %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`JWK set has no "keys" array`)
	}
	set := &keySet{keys: make(map[string][]publicKey)}
	for _, raw := range *doc.Keys {
		var j jwk
		if err := json.Unmarshal(raw, &j); err != nil {
			continue
		}
		k, ok := j.publicKey()
		if !ok {
			continue
		}
		// One key per (kid, alg): the first.
		if slices.ContainsFunc(set.keys[k.kid], func(o publicKey) bool { return o.alg == k.alg }) {
			continue
		}
		set.keys[k.kid] = append(set.keys[k.kid], k)
	}
	return set, nil
}

// publicKey converts j, reporting false for a key this package does not use.
func (j jwk) publicKey() (publicKey, bool) {
	if j.Kid == "" {
		return publicKey{}, false
	}
	if j.Use != "" && j.Use != "sig" {
		return publicKey{}, false
	}
	if j.KeyOps != nil && !slices.Contains(j.KeyOps, "verify") {
		return publicKey{}, false
	}
	switch j.Kty {
	case "RSA":
		if j.Alg != "" && j.Alg != algRS256 {
			return publicKey{}, false
		}
		pub, ok := parseRSA(j.N, j.E)
		if !ok {
			return publicKey{}, false
		}
		return publicKey{kid: j.Kid, alg: algRS256, rsa: pub}, true
	case "EC":
		if j.Crv != "P-256" || (j.Alg != "" && j.Alg != algES256) {
			return publicKey{}, false
		}
		pub, ok := parseP256(j.X, j.Y)
		if !ok {
			return publicKey{}, false
		}
		return publicKey{kid: j.Kid, alg: algES256, ec: pub}, true
	default:
		// oct (symmetric keys are never published), OKP (EdDSA), others.
		return publicKey{}, false
	}
}

func parseRSA(n64, e64 string) (*rsa.PublicKey, bool) {
	nb, err := base64.RawURLEncoding.DecodeString(n64)
	if err != nil || len(nb) == 0 || nb[0] == 0 {
		return nil, false
	}
	eb, err := base64.RawURLEncoding.DecodeString(e64)
	if err != nil || len(eb) == 0 || len(eb) > 4 || eb[0] == 0 {
		return nil, false
	}
	var e int64
	for _, b := range eb {
		e = e<<8 | int64(b)
	}
	if e < 3 || e%2 == 0 || e > 1<<31-1 {
		return nil, false
	}
	n := new(big.Int).SetBytes(nb)
	if bits := n.BitLen(); bits < minRSABits || bits > maxRSABits {
		return nil, false
	}
	return &rsa.PublicKey{N: n, E: int(e)}, true
}

func parseP256(x64, y64 string) (*ecdsa.PublicKey, bool) {
	x, err := base64.RawURLEncoding.DecodeString(x64)
	if err != nil || len(x) != 32 {
		return nil, false
	}
	y, err := base64.RawURLEncoding.DecodeString(y64)
	if err != nil || len(y) != 32 {
		return nil, false
	}
	point := make([]byte, 0, 65)
	point = append(point, 4) // uncompressed
	point = append(point, x...)
	point = append(point, y...)
	// Rejects points not on the curve and the point at infinity.
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, false
	}
	return pub, true
}
