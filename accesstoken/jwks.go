package accesstoken

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
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
	url      string
	client   *http.Client
	timeout  time.Duration
	refresh  time.Duration
	maxStale time.Duration
	now      func() time.Time

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
		maxStale: cfg.JWKSMaxStaleness,
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
// stale or does not name kid. It returns an *Error for a rejected token
// (ErrJWKSUnavailable when there is no set, or only one older than
// JWKSMaxStaleness) and a context error when ctx ends while waiting for
// another caller's fetch.
func (c *jwksCache) key(ctx context.Context, kid, alg string) (publicKey, error) {
	if set := c.set.Load(); set != nil {
		age := c.now().Sub(set.fetchedAt)
		if k, found, err := set.find(kid, alg); found && age < c.maxStale {
			if age < c.refresh {
				return k, err
			}
			// Stale. Refresh if nobody else is; otherwise (or if the
			// refresh fails) the last good set still answers until it is
			// JWKSMaxStaleness old.
			if !c.tryAcquire() {
				return k, err
			}
			defer c.release()
			c.fetchLimited(ctx)
			set := c.set.Load()
			if !c.trusted(set) {
				return publicKey{}, c.unavailable(set, c.lastErr)
			}
			if k, found, err := set.find(kid, alg); found {
				return k, err
			}
			// The fresh set no longer has kid: the key was revoked.
			return publicKey{}, c.unknown(set, kid, nil)
		}
	}

	// kid is unknown, or there is no set that may still be used: wait for
	// the right to fetch.
	if err := c.acquire(ctx); err != nil {
		return publicKey{}, err
	}
	defer c.release()
	// Whoever held the token before may have fetched a set that has kid.
	if set := c.set.Load(); c.trusted(set) {
		if k, found, err := set.find(kid, alg); found {
			return k, err
		}
	}
	c.fetchLimited(ctx)
	set := c.set.Load()
	if !c.trusted(set) {
		return publicKey{}, c.unavailable(set, c.lastErr)
	}
	if k, found, err := set.find(kid, alg); found {
		return k, err
	}
	return publicKey{}, c.unknown(set, kid, c.lastErr)
}

// trusted reports whether set may answer: it exists and was fetched less
// than JWKSMaxStaleness ago.
func (c *jwksCache) trusted(set *keySet) bool {
	return set != nil && c.now().Sub(set.fetchedAt) < c.maxStale
}

// unavailable builds the rejection for a token that cannot be checked
// because there is no trusted set. The caller holds the fetching token.
func (c *jwksCache) unavailable(set *keySet, cause error) error {
	if set == nil {
		return &Error{
			Reason: ErrJWKSUnavailable,
			Detail: "the key set from " + c.url + " has not been fetched yet",
			Cause:  cause,
		}
	}
	return &Error{
		Reason: ErrJWKSUnavailable,
		Detail: fmt.Sprintf("the key set from %s was last fetched %s ago, longer than JWKSMaxStaleness (%s) allows", c.url, c.now().Sub(set.fetchedAt).Round(time.Second), c.maxStale),
		Cause:  cause,
	}
}

// unknown builds the rejection for a kid not in set. The caller holds the
// fetching token when cause is non-nil.
func (c *jwksCache) unknown(set *keySet, kid string, cause error) error {
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

// parseJWKS reads a JWK Set with jwkset, which decodes and checks each key
// (RSA parameters present and in range, EC points on their curve). A document
// without a keys array is an error; a key this package does not use (another
// kty or curve, an alg other than RS256 for RSA or ES256 for P-256, use other
// than sig, key_ops without verify, no kid, an RSA modulus outside 2048 to
// 8192 bits or an even exponent, or one jwkset refuses) is skipped, so one odd
// key does not hide the others. Private key members are never read. An empty
// set is valid: a Supabase project still on the legacy JWT secret publishes
// one.
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
		// Private: false: a "d" (or an oct "k") in a published set is
		// ignored rather than loaded.
		j, err := jwkset.NewJWKFromRawJSON(raw, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			continue
		}
		k, ok := usableKey(j)
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

// usableKey applies this package's policy to a key jwkset decoded, reporting
// false for one it does not use.
func usableKey(j jwkset.JWK) (publicKey, bool) {
	m := j.Marshal()
	if m.KID == "" {
		return publicKey{}, false
	}
	if m.USE != "" && m.USE != jwkset.UseSig {
		return publicKey{}, false
	}
	if m.KEYOPS != nil && !slices.Contains(m.KEYOPS, jwkset.KeyOpsVerify) {
		return publicKey{}, false
	}
	switch pub := j.Key().(type) {
	case *rsa.PublicKey:
		if m.ALG != "" && m.ALG != jwkset.AlgRS256 {
			return publicKey{}, false
		}
		if bits := pub.N.BitLen(); bits < minRSABits || bits > maxRSABits || pub.E < 3 || pub.E%2 == 0 {
			return publicKey{}, false
		}
		return publicKey{kid: m.KID, alg: algRS256, rsa: pub}, true
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() || (m.ALG != "" && m.ALG != jwkset.AlgES256) {
			return publicKey{}, false
		}
		return publicKey{kid: m.KID, alg: algES256, ec: pub}, true
	default:
		// oct (symmetric keys are never published), OKP (EdDSA), private
		// keys, others.
		return publicKey{}, false
	}
}
