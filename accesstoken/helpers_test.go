package accesstoken

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	testSecret = "super-secret-jwt-token-with-at-least-32-characters-long" // supabase start's default
	testUserID = "5f1c2b8e-7a4d-4c3b-9e2f-0a1b2c3d4e5f"
	testIssuer = "https://abcdefghijklmnop.supabase.co/auth/v1"
)

// Keys are generated once per test binary: RSA generation is slow.
var testKeys = sync.OnceValue(func() struct {
	rsa1, rsa2 *rsa.PrivateKey
	ec1, ec2   *ecdsa.PrivateKey
} {
	mustRSA := func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	}
	mustEC := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	}
	return struct {
		rsa1, rsa2 *rsa.PrivateKey
		ec1, ec2   *ecdsa.PrivateKey
	}{mustRSA(), mustRSA(), mustEC(), mustEC()}
})

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// derES256 signs ES256 with an ASN.1 DER signature, as a naive signer would.
type derES256 struct{ key *ecdsa.PrivateKey }

// signToken builds a compact JWS with header hdr and claims, signed with key:
// []byte for HMAC-SHA256, *rsa.PrivateKey for RSASSA-PKCS1-v1_5 SHA-256,
// *ecdsa.PrivateKey for ECDSA P-256 r||s, derES256 for ECDSA DER, nil for an
// empty signature. The header's alg is whatever hdr says, so tests can lie.
func signToken(t testing.TB, hdr, claims map[string]any, key any) string {
	t.Helper()
	enc := base64.RawURLEncoding
	h, err := json.Marshal(hdr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	input := enc.EncodeToString(h) + "." + enc.EncodeToString(p)
	return input + "." + enc.EncodeToString(signBytes(t, input, key))
}

func signBytes(t testing.TB, input string, key any) []byte {
	t.Helper()
	digest := sha256.Sum256([]byte(input))
	switch k := key.(type) {
	case nil:
		return nil
	case []byte:
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte(input))
		return mac.Sum(nil)
	case *rsa.PrivateKey:
		sig, err := rsa.SignPKCS1v15(nil, k, crypto.SHA256, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		return sig
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return sig
	case derES256:
		sig, err := ecdsa.SignASN1(rand.Reader, k.key, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		return sig
	default:
		t.Fatalf("signToken: unsupported key type %T", key)
		return nil
	}
}

// userClaims are the claims of a Supabase access token for testUserID, valid
// at now for an hour.
func userClaims(now time.Time) map[string]any {
	return map[string]any{
		"iss":          testIssuer,
		"sub":          testUserID,
		"aud":          "authenticated",
		"exp":          now.Add(time.Hour).Unix(),
		"iat":          now.Unix(),
		"email":        "ada@example.com",
		"phone":        "",
		"role":         "authenticated",
		"aal":          "aal1",
		"amr":          []map[string]any{{"method": "password", "timestamp": now.Unix()}},
		"session_id":   "0b6a3a3e-51a4-4f5e-8d5c-2f1d7a3c9e10",
		"is_anonymous": false,
		"app_metadata": map[string]any{"provider": "email", "providers": []string{"email"}},
	}
}

// with returns a copy of claims with the given members set; a nil value
// deletes the member.
func with(claims map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(claims))
	for k, v := range claims {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func jwkOf(kid string, pub any) map[string]any {
	enc := base64.RawURLEncoding
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return map[string]any{
			"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "key_ops": []string{"verify"},
			"n": enc.EncodeToString(k.N.Bytes()),
			"e": enc.EncodeToString(big.NewInt(int64(k.E)).Bytes()),
		}
	case *ecdsa.PublicKey:
		b, err := k.Bytes()
		if err != nil {
			panic(err)
		}
		// As Supabase publishes them.
		return map[string]any{
			"kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "key_ops": []string{"verify"},
			"crv": "P-256", "ext": true,
			"x": enc.EncodeToString(b[1:33]),
			"y": enc.EncodeToString(b[33:]),
		}
	default:
		panic("jwkOf: unsupported key")
	}
}

// jwksServer serves a JWK set over TLS and counts requests.
type jwksServer struct {
	srv  *httptest.Server
	hits atomic.Int64

	mu     sync.Mutex
	body   []byte
	status int
}

func newJWKSServer(t testing.TB, keys ...map[string]any) *jwksServer {
	t.Helper()
	s := &jwksServer{status: http.StatusOK}
	s.setKeys(keys...)
	s.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		status, body := s.status, s.body
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *jwksServer) url() string { return s.srv.URL + "/auth/v1/.well-known/jwks.json" }

func (s *jwksServer) setKeys(keys ...map[string]any) {
	if keys == nil {
		keys = []map[string]any{}
	}
	body, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		panic(err)
	}
	s.mu.Lock()
	s.body = body
	s.mu.Unlock()
}

func (s *jwksServer) setStatus(code int) {
	s.mu.Lock()
	s.status = code
	s.mu.Unlock()
}

// fixture is a Verifier with both a JWT secret and a JWKS server holding
// rsa1 (kid "rsa-1") and ec1 (kid "ec-1"), on a fake clock.
type fixture struct {
	clock *fakeClock
	jwks  *jwksServer
	v     *Verifier
}

func setup(t testing.TB, mutate func(*Config)) *fixture {
	t.Helper()
	keys := testKeys()
	f := &fixture{
		clock: newFakeClock(),
		jwks:  newJWKSServer(t, jwkOf("rsa-1", &keys.rsa1.PublicKey), jwkOf("ec-1", &keys.ec1.PublicKey)),
	}
	cfg := Config{
		JWTSecret: []byte(testSecret),
		JWKSURL:   f.jwks.url(),
		// The claims name a hosted project; the test server's URL would
		// derive https://127.0.0.1:<port>/auth/v1.
		Issuer:     testIssuer,
		HTTPClient: f.jwks.srv.Client(),
		Now:        f.clock.Now,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	v, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.v = v
	return f
}

func pemOf(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
