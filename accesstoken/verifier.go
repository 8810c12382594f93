package accesstoken

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"
)

// MaxTokenSize is the largest token Verify reads, in bytes. Supabase access
// tokens are about 1 KiB; user metadata can grow them a little.
const MaxTokenSize = 16 << 10

// The signing algorithms a Verifier accepts.
const (
	algHS256 = "HS256"
	algRS256 = "RS256"
	algES256 = "ES256"
)

// b64 decodes JWS segments: base64url without padding, and strict, so a
// segment has exactly one accepted spelling.
var b64 = base64.RawURLEncoding.Strict()

// Claims is what Verify returns for an accepted token.
type Claims struct {
	// Subject is the user id (auth.users.id): a UUID in canonical
	// lowercase form, never the nil UUID.
	Subject string
	// Role is the role claim, "authenticated" for a signed-in user. Verify
	// rejects "anon"; any other value is returned as is.
	Role string
	// Email is the email claim, empty when absent (phone or anonymous users).
	Email string
	// ExpiresAt is the exp claim.
	ExpiresAt time.Time
	// IsAnonymous is the is_anonymous claim: the user signed in with
	// Supabase's anonymous sign-in. Such a user has a user id and is accepted.
	IsAnonymous bool
}

// Verifier checks Supabase access tokens. It is safe for concurrent use; the
// key set cache is shared by all callers.
type Verifier struct {
	secret   []byte
	jwks     *jwksCache // nil without JWKSURL
	audience string
	issuer   string
	leeway   time.Duration
	now      func() time.Time
}

// New returns a Verifier for cfg. It does no I/O: the key set is fetched on
// the first RS256 or ES256 token, or by RefreshKeys. It returns an error
// naming the setting when cfg is incomplete or out of bounds.
func New(cfg Config) (*Verifier, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("validating access token config: %w", err)
	}
	v := &Verifier{
		audience: cfg.Audience,
		issuer:   cfg.Issuer,
		leeway:   cfg.Leeway,
		now:      cfg.Now,
	}
	if len(cfg.JWTSecret) > 0 {
		v.secret = cfg.JWTSecret
	}
	if cfg.JWKSURL != "" {
		v.jwks = newJWKSCache(cfg)
	}
	return v, nil
}

// RefreshKeys fetches the key set now, regardless of its age and of the
// refetch rate limit, and returns the fetch error if any (the last good set is
// kept). A daemon can call it at start to fail fast on a wrong JWKS URL. It
// returns nil at once when no JWKSURL is configured.
func (v *Verifier) RefreshKeys(ctx context.Context) error {
	if v.jwks == nil {
		return nil
	}
	return v.jwks.refreshNow(ctx)
}

// Verify checks token and returns its claims. The token is the compact JWS
// from an "Authorization: Bearer" header, without the "Bearer " prefix.
//
// A rejected token yields an *Error whose Reason is one of ErrMalformed,
// ErrAlgorithm, ErrUnknownKey, ErrJWKSUnavailable, ErrSignature, ErrExpired,
// ErrNotYetValid, ErrAudience, ErrIssuer, ErrSubject or ErrRole (test with
// errors.Is). The only other error is ctx's, when it ends while Verify waits
// for a key set fetch. Errors never contain the token.
//
// The signature is checked before any claim is read. The header's alg must be
// HS256 (with a JWTSecret), or RS256 or ES256 (with a JWKSURL) and match the
// key its kid names; keys are never taken from the token (jwk, jku and x5u
// headers are ignored).
func (v *Verifier) Verify(ctx context.Context, token string) (Claims, error) {
	if len(token) > MaxTokenSize {
		return Claims{}, reject(ErrMalformed, fmt.Sprintf("token is %d bytes, the limit is %d", len(token), MaxTokenSize))
	}
	if token == "" {
		return Claims{}, reject(ErrMalformed, "token is empty")
	}
	segments := strings.Split(token, ".")
	if len(segments) != 3 {
		return Claims{}, reject(ErrMalformed, fmt.Sprintf("token has %d dot-separated segments, want 3", len(segments)))
	}
	headerJSON, err := b64.DecodeString(segments[0])
	if err != nil {
		return Claims{}, reject(ErrMalformed, "header is not base64url")
	}
	payloadJSON, err := b64.DecodeString(segments[1])
	if err != nil {
		return Claims{}, reject(ErrMalformed, "payload is not base64url")
	}
	sig, err := b64.DecodeString(segments[2])
	if err != nil {
		return Claims{}, reject(ErrMalformed, "signature is not base64url")
	}
	hdr, err := parseHeader(headerJSON)
	if err != nil {
		return Claims{}, err
	}
	signingInput := token[:len(segments[0])+1+len(segments[1])]
	if err := v.verifySignature(ctx, hdr, signingInput, sig); err != nil {
		return Claims{}, err
	}
	return v.checkClaims(payloadJSON)
}

type header struct {
	alg string
	kid string
}

// parseHeader reads alg and kid. It decodes into a map so that only the exact,
// case-sensitive member names count (encoding/json matches struct fields
// case-insensitively, which would let "ALG" stand in for "alg").
func parseHeader(data []byte) (header, error) {
	m, err := decodeObject(data)
	if err != nil {
		return header{}, reject(ErrMalformed, "header is not a JSON object")
	}
	if _, ok := m["crit"]; ok {
		// RFC 7515 4.1.11: a recipient must reject critical extensions it
		// does not understand, and it understands none.
		return header{}, reject(ErrMalformed, `header has a "crit" member; no extensions are supported`)
	}
	var h header
	var present bool
	if h.alg, present, err = stringMember(m, "alg"); err != nil || !present {
		return header{}, reject(ErrMalformed, `header has no "alg" string`)
	}
	if h.kid, _, err = stringMember(m, "kid"); err != nil {
		return header{}, reject(ErrMalformed, `header "kid" is not a string`)
	}
	return h, nil
}

func (v *Verifier) verifySignature(ctx context.Context, h header, signingInput string, sig []byte) error {
	switch h.alg {
	case algHS256:
		if v.secret == nil {
			return reject(ErrAlgorithm, "alg HS256 needs a JWT secret and none is configured")
		}
		// A kid on an HS256 token (Supabase sets one) does not matter:
		// there is one secret.
		mac := hmac.New(sha256.New, v.secret)
		mac.Write([]byte(signingInput))
		if !hmac.Equal(sig, mac.Sum(nil)) {
			return reject(ErrSignature, "HS256 signature does not match the JWT secret")
		}
		return nil
	case algRS256, algES256:
		if v.jwks == nil {
			return reject(ErrAlgorithm, fmt.Sprintf("alg %s needs a JWKS URL and none is configured", h.alg))
		}
		if h.kid == "" {
			return reject(ErrUnknownKey, fmt.Sprintf("alg %s token has no kid", h.alg))
		}
		key, err := v.jwks.key(ctx, h.kid, h.alg)
		if err != nil {
			return err
		}
		digest := sha256.Sum256([]byte(signingInput))
		if h.alg == algRS256 {
			if err := rsa.VerifyPKCS1v15(key.rsa, crypto.SHA256, digest[:], sig); err != nil {
				return reject(ErrSignature, fmt.Sprintf("RS256 signature does not match key %s", quote(h.kid)))
			}
			return nil
		}
		// JWS ES256 signatures are r||s, 32 bytes each (RFC 7518 3.4),
		// not the ASN.1 DER most crypto libraries produce.
		if len(sig) != 64 {
			return reject(ErrSignature, fmt.Sprintf("ES256 signature is %d bytes, want 64 (r||s, not DER)", len(sig)))
		}
		r := new(big.Int).SetBytes(sig[:32])
		s := new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(key.ec, digest[:], r, s) {
			return reject(ErrSignature, fmt.Sprintf("ES256 signature does not match key %s", quote(h.kid)))
		}
		return nil
	default:
		// "none", HS384, PS256, EdDSA, ...
		return reject(ErrAlgorithm, fmt.Sprintf("alg %s is not accepted (want HS256, RS256 or ES256)", quote(h.alg)))
	}
}

// checkClaims reads the claims of a token whose signature has been verified.
func (v *Verifier) checkClaims(data []byte) (Claims, error) {
	m, err := decodeObject(data)
	if err != nil {
		return Claims{}, reject(ErrMalformed, "payload is not a JSON object")
	}
	now := v.now()

	exp, ok, err := numericDate(m, "exp")
	if err != nil {
		return Claims{}, err
	}
	if !ok {
		return Claims{}, reject(ErrMalformed, "token has no exp claim; tokens that never expire are not accepted")
	}
	if !now.Before(exp.Add(v.leeway)) {
		return Claims{}, reject(ErrExpired, fmt.Sprintf("expired at %s, %s ago (leeway %s)", exp.UTC().Format(time.RFC3339), now.Sub(exp).Round(time.Second), v.leeway))
	}
	for _, name := range []string{"nbf", "iat"} {
		t, ok, err := numericDate(m, name)
		if err != nil {
			return Claims{}, err
		}
		if ok && t.After(now.Add(v.leeway)) {
			return Claims{}, reject(ErrNotYetValid, fmt.Sprintf("%s is %s, %s from now (leeway %s)", name, t.UTC().Format(time.RFC3339), t.Sub(now).Round(time.Second), v.leeway))
		}
	}

	if v.issuer != "" {
		iss, ok, err := stringMember(m, "iss")
		if err != nil {
			return Claims{}, reject(ErrIssuer, `"iss" is not a string`)
		}
		if !ok {
			return Claims{}, reject(ErrIssuer, fmt.Sprintf("token has no iss claim, want %q", v.issuer))
		}
		if iss != v.issuer {
			return Claims{}, reject(ErrIssuer, fmt.Sprintf("iss is %s, want %q", quote(iss), v.issuer))
		}
	}

	if err := v.checkAudience(m); err != nil {
		return Claims{}, err
	}

	var c Claims
	c.ExpiresAt = exp
	if c.Role, _, err = stringMember(m, "role"); err != nil {
		return Claims{}, reject(ErrMalformed, `"role" is not a string`)
	}
	if c.Role == "anon" {
		return Claims{}, reject(ErrRole, `role is "anon": this is the project's anon key, not a user's access token`)
	}
	sub, ok, err := stringMember(m, "sub")
	if err != nil {
		return Claims{}, reject(ErrSubject, `"sub" is not a string`)
	}
	if !ok || sub == "" {
		return Claims{}, reject(ErrSubject, "token has no sub claim")
	}
	if c.Subject, ok = canonicalUUID(sub); !ok {
		return Claims{}, reject(ErrSubject, fmt.Sprintf("sub %s is not a user id (a UUID)", quote(sub)))
	}
	if c.Email, _, err = stringMember(m, "email"); err != nil {
		return Claims{}, reject(ErrMalformed, `"email" is not a string`)
	}
	if raw, ok := m["is_anonymous"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &c.IsAnonymous); err != nil {
			return Claims{}, reject(ErrMalformed, `"is_anonymous" is not a boolean`)
		}
	}
	return c, nil
}

// checkAudience accepts aud as a string or an array of strings (RFC 7519
// 4.1.3) containing the configured audience.
func (v *Verifier) checkAudience(m map[string]json.RawMessage) error {
	raw, ok := m["aud"]
	if !ok || isNull(raw) {
		return reject(ErrAudience, fmt.Sprintf("token has no aud claim, want %q", v.audience))
	}
	var auds []string
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		auds = []string{one}
	} else if err := json.Unmarshal(raw, &auds); err != nil {
		return reject(ErrAudience, `"aud" is neither a string nor an array of strings`)
	}
	for _, a := range auds {
		if a == v.audience {
			return nil
		}
	}
	shown := make([]string, 0, min(len(auds), 4))
	for _, a := range auds[:min(len(auds), 4)] {
		shown = append(shown, quote(a))
	}
	if len(auds) > 4 {
		shown = append(shown, fmt.Sprintf("and %d more", len(auds)-4))
	}
	return reject(ErrAudience, fmt.Sprintf("aud is [%s], want %q", strings.Join(shown, " "), v.audience))
}

// decodeObject decodes a JSON object into its members. Duplicate members:
// the last wins, as RFC 7515 4 allows.
func decodeObject(data []byte) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	if m == nil { // the JSON was null
		return nil, fmt.Errorf("not an object")
	}
	return m, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(raw, []byte("null")) }

// stringMember returns m[name] as a string; present is false when the member
// is absent or null.
func stringMember(m map[string]json.RawMessage, name string) (s string, present bool, err error) {
	raw, ok := m[name]
	if !ok || isNull(raw) {
		return "", false, nil
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, err
	}
	return s, true, nil
}

// maxNumericDate is 9999-12-31T23:59:59Z, the last second time.Time formats
// as RFC 3339.
const maxNumericDate = 253402300799

// numericDate returns m[name] as a time: a JSON number of seconds since the
// epoch, possibly fractional (RFC 7519 2). A string, a negative number or a
// date past year 9999 is malformed.
func numericDate(m map[string]json.RawMessage, name string) (t time.Time, present bool, err error) {
	raw, ok := m[name]
	if !ok || isNull(raw) {
		return time.Time{}, false, nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return time.Time{}, false, reject(ErrMalformed, fmt.Sprintf("%q is not a NumericDate (seconds since 1970 as a JSON number)", name))
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// canonicalUUID reports whether s is a UUID in the 8-4-4-4-12 hex form and
// not the nil UUID, and returns it in lowercase.
func canonicalUUID(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	b := []byte(s)
	nonZero := false
	for i, ch := range b {
		switch i {
		case 8, 13, 18, 23:
			if ch != '-' {
				return "", false
			}
			continue
		}
		switch {
		case '0' <= ch && ch <= '9':
		case 'a' <= ch && ch <= 'f':
		case 'A' <= ch && ch <= 'F':
			b[i] = ch + ('a' - 'A')
		default:
			return "", false
		}
		if ch != '0' {
			nonZero = true
		}
	}
	if !nonZero {
		return "", false
	}
	return string(b), true
}
