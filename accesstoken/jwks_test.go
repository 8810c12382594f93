package accesstoken

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestJWKSUnknownKidRefetchesOnceThenSucceeds(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	f := setup(t, nil)
	ctx := context.Background()

	if _, err := f.v.Verify(ctx, signToken(t, rs256("rsa-1"), userClaims(f.clock.Now()), keys.rsa1)); err != nil {
		t.Fatalf("Verify with rsa-1: %v", err)
	}
	if got := f.jwks.hits.Load(); got != 1 {
		t.Fatalf("JWKS fetched %d times after the first token, want 1", got)
	}

	// Supabase rotates: rsa-2 is now the only key.
	f.jwks.setKeys(jwkOf("rsa-2", &keys.rsa2.PublicKey))
	f.clock.Advance(MinJWKSRefetchInterval + time.Second)

	if _, err := f.v.Verify(ctx, signToken(t, rs256("rsa-2"), userClaims(f.clock.Now()), keys.rsa2)); err != nil {
		t.Fatalf("Verify with the rotated-in rsa-2: %v", err)
	}
	if got := f.jwks.hits.Load(); got != 2 {
		t.Fatalf("JWKS fetched %d times after the unknown kid, want 2", got)
	}
	// Known now: no further fetch.
	if _, err := f.v.Verify(ctx, signToken(t, rs256("rsa-2"), userClaims(f.clock.Now()), keys.rsa2)); err != nil {
		t.Fatalf("second Verify with rsa-2: %v", err)
	}
	if got := f.jwks.hits.Load(); got != 2 {
		t.Fatalf("JWKS fetched %d times after a known kid, want 2", got)
	}

	// rsa-1 was revoked with the rotation: it no longer verifies, and asking
	// again right away does not refetch.
	_, err := f.v.Verify(ctx, signToken(t, rs256("rsa-1"), userClaims(f.clock.Now()), keys.rsa1))
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Verify with revoked rsa-1: error = %v, want ErrUnknownKey", err)
	}
	if got := f.jwks.hits.Load(); got != 2 {
		t.Fatalf("JWKS fetched %d times within the refetch interval, want 2", got)
	}
}

func TestJWKSUnknownKidRefetchIsRateLimited(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	f := setup(t, nil)
	ctx := context.Background()
	if err := f.v.RefreshKeys(ctx); err != nil {
		t.Fatalf("RefreshKeys: %v", err)
	}
	bogus := func() string { return signToken(t, rs256("made-up"), userClaims(f.clock.Now()), keys.rsa1) }

	// Within the interval after the last fetch: no fetch at all.
	for range 5 {
		if _, err := f.v.Verify(ctx, bogus()); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("Verify error = %v, want ErrUnknownKey", err)
		}
	}
	if got := f.jwks.hits.Load(); got != 1 {
		t.Fatalf("JWKS fetched %d times, want 1 (only RefreshKeys)", got)
	}

	// After it: one fetch, then quiet again.
	f.clock.Advance(MinJWKSRefetchInterval)
	for range 5 {
		if _, err := f.v.Verify(ctx, bogus()); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("Verify error = %v, want ErrUnknownKey", err)
		}
	}
	if got := f.jwks.hits.Load(); got != 2 {
		t.Fatalf("JWKS fetched %d times, want 2", got)
	}
}

func TestJWKSConcurrentUnknownKidFetchesOnce(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	f := setup(t, nil)
	ctx := context.Background()
	if err := f.v.RefreshKeys(ctx); err != nil {
		t.Fatalf("RefreshKeys: %v", err)
	}
	f.jwks.setKeys(jwkOf("ec-2", &keys.ec2.PublicKey), jwkOf("rsa-1", &keys.rsa1.PublicKey))
	f.clock.Advance(MinJWKSRefetchInterval)

	newKid := signToken(t, es256("ec-2"), userClaims(f.clock.Now()), keys.ec2)
	oldKid := signToken(t, rs256("rsa-1"), userClaims(f.clock.Now()), keys.rsa1)
	const n = 32
	errs := make(chan error, 2*n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := f.v.Verify(ctx, newKid)
			errs <- err
		})
		wg.Go(func() {
			_, err := f.v.Verify(ctx, oldKid)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Verify: %v", err)
		}
	}
	if got := f.jwks.hits.Load(); got != 2 {
		t.Errorf("JWKS fetched %d times, want 2 (RefreshKeys and one refetch)", got)
	}
}

func TestJWKSServerDownKeepsCachedKeys(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	f := setup(t, nil)
	ctx := context.Background()
	verifyEC := func() error {
		_, err := f.v.Verify(ctx, signToken(t, es256("ec-1"), userClaims(f.clock.Now()), keys.ec1))
		return err
	}
	if err := verifyEC(); err != nil {
		t.Fatalf("Verify: %v", err)
	}

	// The endpoint fails and the set goes stale: the refresh is attempted,
	// fails, and the cached key still answers.
	f.jwks.setStatus(http.StatusServiceUnavailable)
	f.clock.Advance(DefaultJWKSRefresh + time.Second)
	if err := verifyEC(); err != nil {
		t.Fatalf("Verify with the endpoint failing: %v", err)
	}
	if got := f.jwks.hits.Load(); got != 2 {
		t.Fatalf("JWKS fetched %d times, want 2 (the refresh was attempted)", got)
	}

	// An unknown kid now reports the fetch failure as the cause.
	f.clock.Advance(MinJWKSRefetchInterval)
	_, err := f.v.Verify(ctx, signToken(t, es256("ec-9"), userClaims(f.clock.Now()), keys.ec2))
	if !errors.Is(err, ErrUnknownKey) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("Verify with unknown kid while the endpoint fails: error = %v, want ErrUnknownKey mentioning 503", err)
	}

	// The server is gone altogether: still verifies.
	f.jwks.srv.Close()
	f.clock.Advance(DefaultJWKSRefresh)
	if err := verifyEC(); err != nil {
		t.Fatalf("Verify with the endpoint down: %v", err)
	}
	if err := f.v.RefreshKeys(ctx); err == nil {
		t.Fatal("RefreshKeys with the endpoint down: got nil error")
	}
	if err := verifyEC(); err != nil {
		t.Fatalf("Verify after a failed RefreshKeys: %v", err)
	}
}

func TestJWKSStaleRefreshDropsRevokedKey(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	f := setup(t, nil)
	ctx := context.Background()
	if _, err := f.v.Verify(ctx, signToken(t, rs256("rsa-1"), userClaims(f.clock.Now()), keys.rsa1)); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	f.jwks.setKeys(jwkOf("ec-1", &keys.ec1.PublicKey))

	// Still fresh: the cached set answers.
	f.clock.Advance(DefaultJWKSRefresh - time.Second)
	if _, err := f.v.Verify(ctx, signToken(t, rs256("rsa-1"), userClaims(f.clock.Now()), keys.rsa1)); err != nil {
		t.Fatalf("Verify before the refresh: %v", err)
	}
	// Stale: the refresh drops rsa-1.
	f.clock.Advance(time.Second)
	_, err := f.v.Verify(ctx, signToken(t, rs256("rsa-1"), userClaims(f.clock.Now()), keys.rsa1))
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Verify after the refresh: error = %v, want ErrUnknownKey", err)
	}
}

func TestJWKSUnavailable(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	f := setup(t, nil)
	f.jwks.setStatus(http.StatusInternalServerError)
	ctx := context.Background()

	_, err := f.v.Verify(ctx, signToken(t, rs256("rsa-1"), userClaims(f.clock.Now()), keys.rsa1))
	if !errors.Is(err, ErrJWKSUnavailable) || !strings.Contains(err.Error(), "500") {
		t.Fatalf("Verify error = %v, want ErrJWKSUnavailable mentioning 500", err)
	}
	var verr *Error
	if !errors.As(err, &verr) || verr.Cause == nil {
		t.Fatalf("Verify error = %#v, want an *Error with a Cause", err)
	}
	// HS256 tokens do not depend on the key set.
	if _, err := f.v.Verify(ctx, signToken(t, hs256(""), userClaims(f.clock.Now()), []byte(testSecret))); err != nil {
		t.Fatalf("HS256 Verify with the key set unavailable: %v", err)
	}

	// Recovery after the refetch interval.
	f.jwks.setStatus(http.StatusOK)
	f.clock.Advance(MinJWKSRefetchInterval)
	if _, err := f.v.Verify(ctx, signToken(t, rs256("rsa-1"), userClaims(f.clock.Now()), keys.rsa1)); err != nil {
		t.Fatalf("Verify after the endpoint recovered: %v", err)
	}
}

func TestJWKSFetchTimesOut(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	v, err := New(Config{JWKSURL: srv.URL + "/auth/v1/.well-known/jwks.json", HTTPClient: srv.Client(), JWKSTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	err = v.RefreshKeys(context.Background())
	if err == nil || !strings.Contains(err.Error(), "timed out after 50ms") {
		t.Fatalf("RefreshKeys error = %v, want a named timeout", err)
	}
}

func TestJWKSWaiterHonoursContext(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{jwkOf("rsa-1", &keys.rsa1.PublicKey)}})
	}))
	t.Cleanup(srv.Close)
	v, err := New(Config{JWKSURL: srv.URL + "/auth/v1/.well-known/jwks.json", Issuer: testIssuer, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	token := signToken(t, rs256("rsa-1"), userClaims(time.Now()), keys.rsa1)

	first := make(chan error, 1)
	go func() {
		_, err := v.Verify(context.Background(), token)
		first <- err
	}()
	<-arrived // the first caller is fetching

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = v.Verify(ctx, token)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting Verify error = %v, want context.Canceled", err)
	}
	var verr *Error
	if errors.As(err, &verr) {
		t.Fatalf("waiting Verify error is an *Error (%v); a cancelled wait is not a rejected token", err)
	}

	close(release)
	if err := <-first; err != nil {
		t.Fatalf("fetching Verify: %v", err)
	}
}

func TestJWKSDefaultClientDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	// Plain http is accepted on loopback, which also lets the default
	// client (no test CA) reach the server.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://example.com/jwks.json", http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	v, err := New(Config{JWKSURL: srv.URL + "/auth/v1/.well-known/jwks.json"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	err = v.RefreshKeys(context.Background())
	if err == nil || !strings.Contains(err.Error(), "unexpected status 302") {
		t.Fatalf("RefreshKeys error = %v, want unexpected status 302", err)
	}
}

func TestParseJWKS(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	rsaJWK := jwkOf("rsa-1", &keys.rsa1.PublicKey)
	ecJWK := jwkOf("ec-1", &keys.ec1.PublicKey)
	enc := base64.RawURLEncoding

	doc := func(ks ...any) string {
		b, err := json.Marshal(map[string]any{"keys": ks})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	tests := []struct {
		name    string
		body    string
		want    []string // "kid/alg" of the usable keys
		wantErr bool
	}{
		{name: "Supabase-shaped RSA and EC keys", body: doc(rsaJWK, ecJWK), want: []string{"ec-1/ES256", "rsa-1/RS256"}},
		{name: "empty set (project on the legacy secret)", body: `{"keys":[]}`, want: nil},
		{name: "no alg, use or key_ops", body: doc(with(rsaJWK, "alg", nil, "use", nil, "key_ops", nil)), want: []string{"rsa-1/RS256"}},
		{name: "use enc is skipped", body: doc(with(rsaJWK, "use", "enc"), ecJWK), want: []string{"ec-1/ES256"}},
		{name: "key_ops without verify is skipped", body: doc(with(rsaJWK, "key_ops", []string{"encrypt"})), want: nil},
		{name: "symmetric oct key is skipped", body: doc(map[string]any{"kty": "oct", "kid": "hs", "k": enc.EncodeToString([]byte(testSecret))}), want: nil},
		{name: "OKP (EdDSA) key is skipped", body: doc(map[string]any{"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": enc.EncodeToString(make([]byte, 32))}), want: nil},
		{name: "P-384 key is skipped", body: doc(with(ecJWK, "crv", "P-384")), want: nil},
		{name: "RSA key for RS512 is skipped", body: doc(with(rsaJWK, "alg", "RS512")), want: nil},
		{name: "EC key labelled RS256 is skipped", body: doc(with(ecJWK, "alg", "RS256")), want: nil},
		{name: "key without kid is skipped", body: doc(with(rsaJWK, "kid", nil), ecJWK), want: []string{"ec-1/ES256"}},
		{name: "RSA key under 2048 bits is skipped", body: doc(with(rsaJWK, "n", enc.EncodeToString(keys.rsa1.N.Bytes()[:128]))), want: nil},
		{name: "RSA even exponent is skipped", body: doc(with(rsaJWK, "e", enc.EncodeToString([]byte{1, 0, 0}))), want: nil},
		{name: "EC short coordinate is skipped", body: doc(with(ecJWK, "x", enc.EncodeToString(make([]byte, 31)))), want: nil},
		{name: "EC point not on the curve is skipped", body: doc(with(ecJWK, "y", enc.EncodeToString(append(make([]byte, 31), 1)))), want: nil},
		{name: "malformed key does not hide the others", body: doc(with(rsaJWK, "key_ops", "verify"), map[string]any{"kid": 5}, ecJWK), want: []string{"ec-1/ES256"}},
		{name: "duplicate kid and alg keeps one", body: doc(rsaJWK, jwkOf("rsa-1", &keys.rsa2.PublicKey)), want: []string{"rsa-1/RS256"}},
		{name: "one kid for an RSA and an EC key keeps both", body: doc(rsaJWK, with(ecJWK, "kid", "rsa-1")), want: []string{"rsa-1/ES256", "rsa-1/RS256"}},
		{name: "no keys member", body: `{"jwks":[]}`, wantErr: true},
		{name: "keys is null", body: `{"keys":null}`, wantErr: true},
		{name: "not JSON", body: `<html>`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			set, err := parseJWKS([]byte(tt.body))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseJWKS: got nil error, want one")
				}
				return
			}
			if err != nil {
				t.Fatalf("parseJWKS: %v", err)
			}
			var got []string
			for kid, ks := range set.keys {
				for _, k := range ks {
					got = append(got, kid+"/"+k.alg)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("usable keys = %v, want %v", got, tt.want)
			}
		})
	}

	// The first of two keys under one kid is the one kept.
	set, err := parseJWKS([]byte(doc(rsaJWK, jwkOf("rsa-1", &keys.rsa2.PublicKey))))
	if err != nil {
		t.Fatal(err)
	}
	if k, _, _ := set.find("rsa-1", algRS256); k.rsa.N.Cmp(keys.rsa1.N) != 0 {
		t.Error("duplicate kid: kept the second key, want the first")
	}
}

// TestJWKSMaxStalenessFailsClosed: while the endpoint fails, the last good
// set answers until it is JWKSMaxStaleness old; after that RS256 and ES256
// tokens are ErrJWKSUnavailable (not trusted on old keys, and not blamed on
// the caller), until a fetch succeeds again.
func TestJWKSMaxStalenessFailsClosed(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	f := setup(t, nil)
	ctx := context.Background()
	verifyRSA := func() error {
		_, err := f.v.Verify(ctx, signToken(t, rs256("rsa-1"), userClaims(f.clock.Now()), keys.rsa1))
		return err
	}
	if err := verifyRSA(); err != nil {
		t.Fatalf("Verify: %v", err)
	}

	f.jwks.setStatus(http.StatusServiceUnavailable)
	f.clock.Advance(DefaultJWKSMaxStaleness - time.Second)
	if err := verifyRSA(); err != nil {
		t.Fatalf("Verify with a set just under the staleness bound: %v", err)
	}

	f.clock.Advance(MinJWKSRefetchInterval)
	err := verifyRSA()
	if !errors.Is(err, ErrJWKSUnavailable) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("Verify with a set past the staleness bound: error = %v, want ErrJWKSUnavailable mentioning 503", err)
	}
	var verr *Error
	if !errors.As(err, &verr) || verr.Cause == nil {
		t.Fatalf("Verify error = %#v, want an *Error with the fetch failure as Cause", err)
	}
	// Within the refetch interval: no new fetch, and still no old keys.
	if err := verifyRSA(); !errors.Is(err, ErrJWKSUnavailable) {
		t.Fatalf("second Verify past the staleness bound: error = %v, want ErrJWKSUnavailable", err)
	}
	// An unknown kid cannot be told from a new key: unavailable too.
	_, err = f.v.Verify(ctx, signToken(t, es256("ec-9"), userClaims(f.clock.Now()), keys.ec2))
	if !errors.Is(err, ErrJWKSUnavailable) {
		t.Fatalf("Verify with an unknown kid past the staleness bound: error = %v, want ErrJWKSUnavailable", err)
	}
	// HS256 tokens do not depend on the key set.
	if _, err := f.v.Verify(ctx, signToken(t, hs256(""), userClaims(f.clock.Now()), []byte(testSecret))); err != nil {
		t.Fatalf("HS256 Verify past the staleness bound: %v", err)
	}

	f.jwks.setStatus(http.StatusOK)
	f.clock.Advance(MinJWKSRefetchInterval)
	if err := verifyRSA(); err != nil {
		t.Fatalf("Verify after the endpoint recovered: %v", err)
	}
}

func TestJWKSMaxStalenessSetting(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	f := setup(t, func(c *Config) { c.JWKSMaxStaleness = 15 * time.Minute })
	ctx := context.Background()
	token := func() string { return signToken(t, es256("ec-1"), userClaims(f.clock.Now()), keys.ec1) }
	if _, err := f.v.Verify(ctx, token()); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	f.jwks.srv.Close()
	f.clock.Advance(15 * time.Minute)
	if _, err := f.v.Verify(ctx, token()); !errors.Is(err, ErrJWKSUnavailable) {
		t.Fatalf("Verify 15m after the last fetch with JWKSMaxStaleness 15m: error = %v, want ErrJWKSUnavailable", err)
	}
}
