package accesstoken

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
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
	parser   *jwt.Parser
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
	var methods []string
	if len(cfg.JWTSecret) > 0 {
		v.secret = cfg.JWTSecret
		methods = append(methods, algHS256)
	}
	if cfg.JWKSURL != "" {
		v.jwks = newJWKSCache(cfg)
		methods = append(methods, algRS256, algES256)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		// One spelling per segment: unpadded, canonical base64url.
		jwt.WithStrictDecoding(),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.Now),
		jwt.WithAudience(cfg.Audience),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	v.parser = jwt.NewParser(opts...)
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
// The header's alg must be HS256 (with a JWTSecret), or RS256 or ES256 (with
// a JWKSURL) and match the key its kid names; keys are never taken from the
// token (jwk, jku and x5u headers are ignored). No claim is acted on before
// the signature verifies.
func (v *Verifier) Verify(ctx context.Context, token string) (Claims, error) {
	if len(token) > MaxTokenSize {
		return Claims{}, reject(ErrMalformed, fmt.Sprintf("token is %d bytes, the limit is %d", len(token), MaxTokenSize))
	}
	if token == "" {
		return Claims{}, reject(ErrMalformed, "token is empty")
	}
	var tc tokenClaims
	var ctxErr error
	tok, err := v.parser.ParseWithClaims(token, &tc, func(t *jwt.Token) (any, error) {
		key, err := v.key(ctx, t)
		if err != nil && !isRejection(err) {
			ctxErr = err
		}
		return key, err
	})
	if ctxErr != nil {
		return Claims{}, ctxErr
	}
	if err != nil {
		return Claims{}, v.rejection(tok, &tc, err)
	}
	return v.supabaseClaims(&tc)
}

func isRejection(err error) bool {
	var verr *Error
	return errors.As(err, &verr)
}

// key is the parser's key function: it runs after the header and claims are
// decoded and the header's alg is one of the configured ones, and before the
// signature is checked. It returns the one key the token may be checked with,
// of the type its alg needs.
func (v *Verifier) key(ctx context.Context, t *jwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		// RFC 7515 4.1.11: a recipient must reject critical extensions it
		// does not understand, and it understands none.
		return nil, reject(ErrMalformed, `header has a "crit" member; no extensions are supported`)
	}
	kid := ""
	if raw, ok := t.Header["kid"]; ok && raw != nil {
		s, ok := raw.(string)
		if !ok {
			return nil, reject(ErrMalformed, `header "kid" is not a string`)
		}
		kid = s
	}
	switch alg := t.Method.Alg(); alg {
	case algHS256:
		// A kid on an HS256 token (Supabase sets one) does not matter:
		// there is one secret.
		return v.secret, nil
	case algRS256, algES256:
		if kid == "" {
			return nil, reject(ErrUnknownKey, fmt.Sprintf("alg %s token has no kid", alg))
		}
		k, err := v.jwks.key(ctx, kid, alg)
		if err != nil {
			return nil, err
		}
		if alg == algRS256 {
			return k.rsa, nil
		}
		return k.ec, nil
	default:
		// WithValidMethods lets no other alg through.
		return nil, reject(ErrAlgorithm, fmt.Sprintf("alg %s is not accepted", quote(alg)))
	}
}

// rejection turns the parser's error into an *Error naming the first check
// that failed, in the order the package documentation gives.
func (v *Verifier) rejection(tok *jwt.Token, tc *tokenClaims, err error) error {
	if tok == nil || errors.Is(err, jwt.ErrTokenMalformed) {
		return reject(ErrMalformed, malformedDetail(err))
	}
	alg, ok := tok.Header["alg"].(string)
	if !ok {
		return reject(ErrMalformed, `header has no "alg" string`)
	}
	switch {
	case alg == algHS256 && v.secret == nil:
		return reject(ErrAlgorithm, "alg HS256 needs a JWT secret and none is configured")
	case (alg == algRS256 || alg == algES256) && v.jwks == nil:
		return reject(ErrAlgorithm, fmt.Sprintf("alg %s needs a JWKS URL and none is configured", alg))
	case alg != algHS256 && alg != algRS256 && alg != algES256:
		// "none", HS384, PS256, EdDSA, ...
		return reject(ErrAlgorithm, fmt.Sprintf("alg %s is not accepted (want HS256, RS256 or ES256)", quote(alg)))
	}
	var verr *Error
	if errors.As(err, &verr) && !errors.Is(err, jwt.ErrTokenInvalidClaims) {
		return verr // from the key function
	}
	if errors.Is(err, jwt.ErrTokenSignatureInvalid) {
		if alg == algHS256 {
			return reject(ErrSignature, "HS256 signature does not match the JWT secret")
		}
		kid, _ := tok.Header["kid"].(string)
		return reject(ErrSignature, fmt.Sprintf("%s signature does not match key %s", alg, quote(kid)))
	}
	if errors.Is(err, jwt.ErrTokenInvalidClaims) {
		return v.claimsRejection(tc, err)
	}
	return reject(ErrMalformed, malformedDetail(err))
}

// malformedDetail keeps the parser's account of a malformed token: it names
// the segment and the offset, never the content.
func malformedDetail(err error) string {
	return strings.TrimPrefix(err.Error(), jwt.ErrTokenMalformed.Error()+": ")
}

// claimsRejection explains why the claims of a token whose signature verified
// were refused: the first failing check in the order exp, nbf, iat, iss, aud.
// The parser reports only which checks failed; the details are worked out
// again from the decoded claims.
func (v *Verifier) claimsRejection(tc *tokenClaims, err error) error {
	if !tc.decoded {
		return reject(ErrMalformed, "payload is not a JSON object")
	}
	now := v.now()
	if tc.exp.err != nil {
		return tc.exp.err
	}
	if !tc.exp.present {
		return reject(ErrMalformed, "token has no exp claim; tokens that never expire are not accepted")
	}
	if errors.Is(err, jwt.ErrTokenExpired) {
		return reject(ErrExpired, fmt.Sprintf("expired at %s, %s ago (leeway %s)", tc.exp.t.UTC().Format(time.RFC3339), now.Sub(tc.exp.t).Round(time.Second), v.leeway))
	}
	for _, d := range []struct {
		name     string
		date     numericDate
		sentinel error
	}{{"nbf", tc.nbf, jwt.ErrTokenNotValidYet}, {"iat", tc.iat, jwt.ErrTokenUsedBeforeIssued}} {
		if d.date.err != nil {
			return d.date.err
		}
		if errors.Is(err, d.sentinel) {
			return reject(ErrNotYetValid, fmt.Sprintf("%s is %s, %s from now (leeway %s)", d.name, d.date.t.UTC().Format(time.RFC3339), d.date.t.Sub(now).Round(time.Second), v.leeway))
		}
	}
	if v.issuer != "" {
		switch {
		case tc.issErr != nil:
			return tc.issErr
		case tc.iss == "":
			return reject(ErrIssuer, fmt.Sprintf("token has no iss claim, want %q", v.issuer))
		case tc.iss != v.issuer:
			return reject(ErrIssuer, fmt.Sprintf("iss is %s, want %q", quote(tc.iss), v.issuer))
		}
	}
	switch {
	case tc.audErr != nil:
		return tc.audErr
	case len(tc.aud) == 0 || len(tc.aud) == 1 && tc.aud[0] == "":
		return reject(ErrAudience, fmt.Sprintf("token has no aud claim, want %q", v.audience))
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		shown := make([]string, 0, min(len(tc.aud), 4))
		for _, a := range tc.aud[:min(len(tc.aud), 4)] {
			shown = append(shown, quote(a))
		}
		if len(tc.aud) > 4 {
			shown = append(shown, fmt.Sprintf("and %d more", len(tc.aud)-4))
		}
		return reject(ErrAudience, fmt.Sprintf("aud is [%s], want %q", strings.Join(shown, " "), v.audience))
	}
	// Not reached: every check the parser makes is covered above.
	return reject(ErrMalformed, "claims rejected: "+err.Error())
}

// supabaseClaims makes the checks that are Supabase's rather than JWT's, on
// claims whose signature, times, issuer and audience have been verified.
func (v *Verifier) supabaseClaims(tc *tokenClaims) (Claims, error) {
	var c Claims
	var err error
	c.ExpiresAt = tc.exp.t
	if c.Role, _, err = tc.stringMember("role"); err != nil {
		return Claims{}, reject(ErrMalformed, `"role" is not a string`)
	}
	if c.Role == "anon" {
		return Claims{}, reject(ErrRole, `role is "anon": this is the project's anon key, not a user's access token`)
	}
	sub, ok, err := tc.stringMember("sub")
	if err != nil {
		return Claims{}, reject(ErrSubject, `"sub" is not a string`)
	}
	if !ok || sub == "" {
		return Claims{}, reject(ErrSubject, "token has no sub claim")
	}
	if c.Subject, ok = canonicalUUID(sub); !ok {
		return Claims{}, reject(ErrSubject, fmt.Sprintf("sub %s is not a user id (a UUID)", quote(sub)))
	}
	if c.Email, _, err = tc.stringMember("email"); err != nil {
		return Claims{}, reject(ErrMalformed, `"email" is not a string`)
	}
	if raw, ok := tc.members["is_anonymous"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &c.IsAnonymous); err != nil {
			return Claims{}, reject(ErrMalformed, `"is_anonymous" is not a boolean`)
		}
	}
	return c, nil
}

// tokenClaims implements jwt.Claims over the payload's members, read by exact
// name: encoding/json matches struct fields case-insensitively, which would
// let "SUB" stand in for "sub", and jwt.MapClaims takes a negative or zero exp
// for a date. Decoding only splits the object into members; each registered
// claim is read when the parser asks for it, and a claim of the wrong type is
// reported then, as an *Error, after the signature has verified.
type tokenClaims struct {
	decoded bool
	members map[string]json.RawMessage

	exp, nbf, iat numericDate
	iss           string
	issErr        error
	aud           []string
	audErr        error
}

type numericDate struct {
	t       time.Time
	present bool
	err     error
}

var _ jwt.Claims = (*tokenClaims)(nil)

// UnmarshalJSON keeps the members of a JSON object. Duplicate members: the
// last wins, as RFC 7515 4 allows.
func (c *tokenClaims) UnmarshalJSON(data []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	if m == nil {
		return errors.New("payload is JSON null, not an object")
	}
	c.members = m
	c.decoded = true
	c.exp = c.numericDate("exp")
	c.nbf = c.numericDate("nbf")
	c.iat = c.numericDate("iat")
	iss, _, err := c.stringMember("iss")
	if err != nil {
		c.issErr = reject(ErrIssuer, `"iss" is not a string`)
	}
	c.iss = iss
	c.aud, c.audErr = c.audience()
	return nil
}

func (c *tokenClaims) GetExpirationTime() (*jwt.NumericDate, error) { return c.exp.jwt() }
func (c *tokenClaims) GetNotBefore() (*jwt.NumericDate, error)      { return c.nbf.jwt() }
func (c *tokenClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.iat.jwt() }
func (c *tokenClaims) GetIssuer() (string, error)                   { return c.iss, c.issErr }
func (c *tokenClaims) GetSubject() (string, error)                  { return "", nil } // checked by supabaseClaims
func (c *tokenClaims) GetAudience() (jwt.ClaimStrings, error)       { return c.aud, c.audErr }

func (d numericDate) jwt() (*jwt.NumericDate, error) {
	if d.err != nil || !d.present {
		return nil, d.err
	}
	// Not jwt.NewNumericDate, which truncates to jwt.TimePrecision (1s).
	return &jwt.NumericDate{Time: d.t}, nil
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// stringMember returns the member name as a string; present is false when
// it is absent or null.
func (c *tokenClaims) stringMember(name string) (s string, present bool, err error) {
	raw, ok := c.members[name]
	if !ok || isNull(raw) {
		return "", false, nil
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, err
	}
	return s, true, nil
}

// audience reads aud as a string or an array of strings (RFC 7519 4.1.3).
func (c *tokenClaims) audience() ([]string, error) {
	raw, ok := c.members["aud"]
	if !ok || isNull(raw) {
		return nil, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	var auds []string
	if err := json.Unmarshal(raw, &auds); err != nil {
		return nil, reject(ErrAudience, `"aud" is neither a string nor an array of strings`)
	}
	return slices.Clip(auds), nil
}

// maxNumericDate is 9999-12-31T23:59:59Z, the last second time.Time formats
// as RFC 3339.
const maxNumericDate = 253402300799

// numericDate reads the member name as a time: a JSON number of seconds since
// the epoch, possibly fractional (RFC 7519 2). A string, a negative number or
// a date past year 9999 is malformed.
func (c *tokenClaims) numericDate(name string) numericDate {
	raw, ok := c.members[name]
	if !ok || isNull(raw) {
		return numericDate{}
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return numericDate{err: reject(ErrMalformed, fmt.Sprintf("%q is not a NumericDate (seconds since 1970 as a JSON number)", name))}
	}
	sec, frac := math.Modf(f)
	return numericDate{t: time.Unix(int64(sec), int64(frac*1e9)), present: true}
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
