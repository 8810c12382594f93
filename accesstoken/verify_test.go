package accesstoken

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func hs256(kid string) map[string]any {
	h := map[string]any{"alg": "HS256", "typ": "JWT"}
	if kid != "" {
		h["kid"] = kid
	}
	return h
}

func rs256(kid string) map[string]any {
	return map[string]any{"alg": "RS256", "typ": "JWT", "kid": kid}
}

func es256(kid string) map[string]any {
	return map[string]any{"alg": "ES256", "typ": "JWT", "kid": kid}
}

// replaceSegment swaps segment i of a compact JWS.
func replaceSegment(token string, i int, seg string) string {
	parts := strings.Split(token, ".")
	parts[i] = seg
	return strings.Join(parts, ".")
}

// flipMiddle changes one character in the middle of segment i, keeping it
// valid base64url, so only the signature check can notice.
func flipMiddle(token string, i int) string {
	parts := strings.Split(token, ".")
	b := []byte(parts[i])
	mid := len(b) / 2
	if b[mid] == 'A' {
		b[mid] = 'B'
	} else {
		b[mid] = 'A'
	}
	parts[i] = string(b)
	return strings.Join(parts, ".")
}

func b64json(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// tamperedPayload is userClaims(now) for another user, as a payload segment.
func tamperedPayload(t *testing.T, now time.Time) string {
	t.Helper()
	p, err := json.Marshal(with(userClaims(now), "sub", "0a0a0a0a-0a0a-4a0a-8a0a-0a0a0a0a0a0a"))
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(p)
}

func TestVerify(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	secret := []byte(testSecret)

	onlySecret := func(c *Config) { c.JWKSURL = "" }
	onlyJWKS := func(c *Config) { c.JWTSecret = nil }
	withIssuer := func(c *Config) { c.Issuer = testIssuer }

	tests := []struct {
		name   string
		config func(*Config)
		// token builds the token at the fixture's current time.
		token   func(t *testing.T, now time.Time) string
		wantErr error
		check   func(t *testing.T, c Claims)
	}{
		{
			name: "HS256 user token verifies",
			token: func(t *testing.T, now time.Time) string {
				// Supabase puts a kid on HS256 tokens too; it is ignored.
				return signToken(t, hs256("legacy"), userClaims(now), secret)
			},
			check: func(t *testing.T, c Claims) {
				wantExp := newFakeClock().Now().Add(time.Hour)
				if c.Subject != testUserID || c.Role != "authenticated" || c.Email != "ada@example.com" ||
					c.IsAnonymous || !c.ExpiresAt.Equal(wantExp) {
					t.Errorf("claims = %+v, want user %s, role authenticated, ada@example.com, expiring %s", c, testUserID, wantExp)
				}
			},
		},
		{
			name:  "HS256 token from SignHS256 verifies",
			token: func(t *testing.T, now time.Time) string { return mustSignHS256(t, secret, userClaims(now)) },
		},
		{
			name: "RS256 token verifies with the JWKS key named by kid",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, rs256("rsa-1"), userClaims(now), keys.rsa1)
			},
			check: func(t *testing.T, c Claims) {
				if c.Subject != testUserID {
					t.Errorf("Subject = %q, want %q", c.Subject, testUserID)
				}
			},
		},
		{
			name: "ES256 token verifies with the JWKS key named by kid",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, es256("ec-1"), userClaims(now), keys.ec1)
			},
		},
		{
			name:   "HS256 verifies with only a JWT secret configured",
			config: onlySecret,
			token:  func(t *testing.T, now time.Time) string { return signToken(t, hs256(""), userClaims(now), secret) },
		},
		{
			name:   "ES256 verifies with only a JWKS URL configured",
			config: onlyJWKS,
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, es256("ec-1"), userClaims(now), keys.ec1)
			},
		},
		{
			name: "aud as an array containing the audience is accepted",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "aud", []string{"other", "authenticated"}), secret)
			},
		},
		{
			name: "anonymous sign-in user is accepted and flagged",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "is_anonymous", true, "email", ""), secret)
			},
			check: func(t *testing.T, c Claims) {
				if !c.IsAnonymous || c.Email != "" || c.Role != "authenticated" {
					t.Errorf("claims = %+v, want anonymous authenticated user without email", c)
				}
			},
		},
		{
			name: "uppercase UUID subject is returned in lowercase",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "sub", strings.ToUpper(testUserID)), secret)
			},
			check: func(t *testing.T, c Claims) {
				if c.Subject != testUserID {
					t.Errorf("Subject = %q, want %q", c.Subject, testUserID)
				}
			},
		},
		{
			name: "expired within the leeway is accepted",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "exp", now.Add(-29*time.Second).Unix()), secret)
			},
		},
		{
			name: "fractional exp is accepted",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "exp", float64(now.Unix())+0.5), secret)
			},
			check: func(t *testing.T, c Claims) {
				if want := newFakeClock().Now().Add(500 * time.Millisecond); !c.ExpiresAt.Equal(want) {
					t.Errorf("ExpiresAt = %s, want %s", c.ExpiresAt, want)
				}
			},
		},
		{
			name: "nbf and iat at exactly the leeway are accepted",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "nbf", now.Add(30*time.Second).Unix(), "iat", now.Add(30*time.Second).Unix()), secret)
			},
		},
		{
			name:   "matching issuer is accepted when one is configured",
			config: withIssuer,
			token:  func(t *testing.T, now time.Time) string { return signToken(t, hs256(""), userClaims(now), secret) },
		},
		{
			name:   "custom audience is enforced",
			config: func(c *Config) { c.Audience = "keyworker" },
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "aud", "keyworker"), secret)
			},
		},

		// Time.
		{
			name: "expired beyond the leeway",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "exp", now.Add(-31*time.Second).Unix()), secret)
			},
			wantErr: ErrExpired,
		},
		{
			name: "expired at exactly the leeway",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "exp", now.Add(-30*time.Second).Unix()), secret)
			},
			wantErr: ErrExpired,
		},
		{
			name: "expired RS256",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, rs256("rsa-1"), with(userClaims(now), "exp", now.Add(-time.Hour).Unix()), keys.rsa1)
			},
			wantErr: ErrExpired,
		},
		{
			name: "missing exp",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "exp", nil), secret)
			},
			wantErr: ErrMalformed,
		},
		{
			name: "exp as a string",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "exp", "9999999999"), secret)
			},
			wantErr: ErrMalformed,
		},
		{
			name: "negative exp",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "exp", -1), secret)
			},
			wantErr: ErrMalformed,
		},
		{
			name: "nbf in the future",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "nbf", now.Add(time.Minute).Unix()), secret)
			},
			wantErr: ErrNotYetValid,
		},
		{
			name: "iat in the future",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "iat", now.Add(time.Minute).Unix()), secret)
			},
			wantErr: ErrNotYetValid,
		},

		// Audience and issuer.
		{
			name: "wrong audience",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "aud", "service"), secret)
			},
			wantErr: ErrAudience,
		},
		{
			name: "audience array without the audience",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "aud", []string{"a", "b"}), secret)
			},
			wantErr: ErrAudience,
		},
		{
			name: "missing audience (the shape of the anon and service_role keys)",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "aud", nil), secret)
			},
			wantErr: ErrAudience,
		},
		{
			name: "audience of the wrong type",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "aud", 7), secret)
			},
			wantErr: ErrAudience,
		},
		{
			name:   "wrong issuer when one is configured",
			config: withIssuer,
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "iss", "https://evil.supabase.co/auth/v1"), secret)
			},
			wantErr: ErrIssuer,
		},
		{
			name:   "missing issuer when one is configured",
			config: withIssuer,
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "iss", nil), secret)
			},
			wantErr: ErrIssuer,
		},
		{
			// With a JWKS URL the issuer is derived from it (see
			// TestIssuerDerivedFromJWKSURL); with only a secret it is not
			// checked unless set.
			name:   "any issuer when none is configured, JWT secret only",
			config: func(c *Config) { c.JWKSURL, c.Issuer = "", "" },
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "iss", "supabase-demo"), secret)
			},
		},

		// Subject and role.
		{
			name: "missing sub",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "sub", nil), secret)
			},
			wantErr: ErrSubject,
		},
		{
			name: "empty sub",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "sub", ""), secret)
			},
			wantErr: ErrSubject,
		},
		{
			name: "non-UUID sub",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "sub", "user-42"), secret)
			},
			wantErr: ErrSubject,
		},
		{
			name: "UUID without hyphens",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "sub", strings.ReplaceAll(testUserID, "-", "")), secret)
			},
			wantErr: ErrSubject,
		},
		{
			name: "nil UUID sub",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "sub", "00000000-0000-0000-0000-000000000000"), secret)
			},
			wantErr: ErrSubject,
		},
		{
			name: "sub as a number",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "sub", 42), secret)
			},
			wantErr: ErrSubject,
		},
		{
			name: "claim names are case-sensitive",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "sub", nil, "SUB", testUserID), secret)
			},
			wantErr: ErrSubject,
		},
		{
			name: "anon role",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "role", "anon"), secret)
			},
			wantErr: ErrRole,
		},
		{
			name: "email of the wrong type",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "email", 1), secret)
			},
			wantErr: ErrMalformed,
		},
		{
			name: "is_anonymous of the wrong type",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "is_anonymous", "true"), secret)
			},
			wantErr: ErrMalformed,
		},

		// Algorithms.
		{
			name: "alg none with an empty signature",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, map[string]any{"alg": "none", "typ": "JWT"}, userClaims(now), nil)
			},
			wantErr: ErrAlgorithm,
		},
		{
			name: "alg None, differently cased",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, map[string]any{"alg": "None"}, userClaims(now), nil)
			},
			wantErr: ErrAlgorithm,
		},
		{
			name: "alg HS512 is not accepted",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, map[string]any{"alg": "HS512"}, userClaims(now), secret)
			},
			wantErr: ErrAlgorithm,
		},
		{
			name:   "alg confusion: RS256 header signed with the HMAC secret, only a secret configured",
			config: onlySecret,
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, rs256("rsa-1"), userClaims(now), secret)
			},
			wantErr: ErrAlgorithm,
		},
		{
			name: "alg confusion: RS256 header signed with the HMAC secret, both configured",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, rs256("rsa-1"), userClaims(now), secret)
			},
			wantErr: ErrSignature,
		},
		{
			name:   "alg confusion: HS256 signed with the RSA public key PEM, only JWKS configured",
			config: onlyJWKS,
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256("rsa-1"), userClaims(now), pemOf(t, &keys.rsa1.PublicKey))
			},
			wantErr: ErrAlgorithm,
		},
		{
			name: "alg confusion: HS256 signed with the RSA public key PEM, both configured",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256("rsa-1"), userClaims(now), pemOf(t, &keys.rsa1.PublicKey))
			},
			wantErr: ErrSignature,
		},
		{
			name:   "alg confusion: HS256 signed with the JWK's modulus bytes, only JWKS configured",
			config: onlyJWKS,
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256("rsa-1"), userClaims(now), keys.rsa1.N.Bytes())
			},
			wantErr: ErrAlgorithm,
		},
		{
			name: "ES256 header naming an RSA key",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, es256("rsa-1"), userClaims(now), keys.ec1)
			},
			wantErr: ErrAlgorithm,
		},
		{
			name: "RS256 header naming an EC key",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, rs256("ec-1"), userClaims(now), keys.rsa1)
			},
			wantErr: ErrAlgorithm,
		},
		{
			name: "RS256 without a kid",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, map[string]any{"alg": "RS256"}, userClaims(now), keys.rsa1)
			},
			wantErr: ErrUnknownKey,
		},
		{
			name: "RS256 signed by a key not in the set, under a listed kid",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, rs256("rsa-1"), userClaims(now), keys.rsa2)
			},
			wantErr: ErrSignature,
		},
		{
			name: "ES256 with a DER signature",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, es256("ec-1"), userClaims(now), derES256{keys.ec1})
			},
			wantErr: ErrSignature,
		},

		// Tampering.
		{
			name: "HS256 tampered payload",
			token: func(t *testing.T, now time.Time) string {
				tok := signToken(t, hs256(""), userClaims(now), secret)
				return replaceSegment(tok, 1, b64json(`{"sub":"`+testUserID+`","aud":"authenticated","role":"authenticated","exp":9999999999}`))
			},
			wantErr: ErrSignature,
		},
		{
			// The payload is swapped for another well-formed one (claims
			// JSON that does not parse is refused before the signature is
			// checked: see "tampered payload that is not JSON").
			name: "RS256 tampered payload",
			token: func(t *testing.T, now time.Time) string {
				return replaceSegment(signToken(t, rs256("rsa-1"), userClaims(now), keys.rsa1), 1, tamperedPayload(t, now))
			},
			wantErr: ErrSignature,
		},
		{
			name: "ES256 tampered payload",
			token: func(t *testing.T, now time.Time) string {
				return replaceSegment(signToken(t, es256("ec-1"), userClaims(now), keys.ec1), 1, tamperedPayload(t, now))
			},
			wantErr: ErrSignature,
		},
		{
			name: "tampered payload that is not JSON",
			token: func(t *testing.T, now time.Time) string {
				return flipMiddle(signToken(t, rs256("rsa-1"), userClaims(now), keys.rsa1), 1)
			},
			wantErr: ErrMalformed,
		},
		{
			name: "HS256 tampered signature",
			token: func(t *testing.T, now time.Time) string {
				return flipMiddle(signToken(t, hs256(""), userClaims(now), secret), 2)
			},
			wantErr: ErrSignature,
		},
		{
			name: "RS256 tampered signature",
			token: func(t *testing.T, now time.Time) string {
				return flipMiddle(signToken(t, rs256("rsa-1"), userClaims(now), keys.rsa1), 2)
			},
			wantErr: ErrSignature,
		},
		{
			name: "ES256 tampered signature",
			token: func(t *testing.T, now time.Time) string {
				return flipMiddle(signToken(t, es256("ec-1"), userClaims(now), keys.ec1), 2)
			},
			wantErr: ErrSignature,
		},
		{
			name: "truncated signature",
			token: func(t *testing.T, now time.Time) string {
				tok := signToken(t, hs256(""), userClaims(now), secret)
				return tok[:len(tok)-3] // 40 of 43 characters: still canonical base64
			},
			wantErr: ErrSignature,
		},
		{
			name: "empty signature on HS256",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), userClaims(now), nil)
			},
			wantErr: ErrSignature,
		},

		// Shape.
		{
			name:    "empty token",
			token:   func(*testing.T, time.Time) string { return "" },
			wantErr: ErrMalformed,
		},
		{
			name: "two segments",
			token: func(t *testing.T, now time.Time) string {
				tok := signToken(t, hs256(""), userClaims(now), secret)
				return tok[:strings.LastIndex(tok, ".")]
			},
			wantErr: ErrMalformed,
		},
		{
			name: "four segments",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), userClaims(now), secret) + ".AAAA"
			},
			wantErr: ErrMalformed,
		},
		{
			name:    "five segments (a JWE)",
			token:   func(*testing.T, time.Time) string { return "a.b.c.d.e" },
			wantErr: ErrMalformed,
		},
		{
			name: "bad base64 in the header",
			token: func(t *testing.T, now time.Time) string {
				return replaceSegment(signToken(t, hs256(""), userClaims(now), secret), 0, "eyJ!bGci")
			},
			wantErr: ErrMalformed,
		},
		{
			name: "bad base64 in the payload",
			token: func(t *testing.T, now time.Time) string {
				return replaceSegment(signToken(t, hs256(""), userClaims(now), secret), 1, "e30*")
			},
			wantErr: ErrMalformed,
		},
		{
			name: "bad base64 in the signature",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), userClaims(now), secret) + "+"
			},
			wantErr: ErrMalformed,
		},
		{
			name: "padded base64",
			token: func(t *testing.T, now time.Time) string {
				tok := signToken(t, hs256(""), userClaims(now), secret)
				// 16 bytes encode with "==" padding.
				return replaceSegment(tok, 0, base64.URLEncoding.EncodeToString([]byte(`{"alg": "HS256"}`)))
			},
			wantErr: ErrMalformed,
		},
		{
			name: "non-canonical base64 (trailing bits set)",
			token: func(t *testing.T, now time.Time) string {
				tok := signToken(t, hs256(""), userClaims(now), secret)
				// A 32-byte HMAC is 43 characters whose last carries 2
				// unused bits; set them.
				sig := strings.Split(tok, ".")[2]
				last := strings.IndexByte(base64URLAlphabet, sig[len(sig)-1])
				return replaceSegment(tok, 2, sig[:len(sig)-1]+string(base64URLAlphabet[last|1]))
			},
			wantErr: ErrMalformed,
		},
		{
			name: "header is not JSON",
			token: func(t *testing.T, now time.Time) string {
				return replaceSegment(signToken(t, hs256(""), userClaims(now), secret), 0, b64json("HS256"))
			},
			wantErr: ErrMalformed,
		},
		{
			name: "header has no alg",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, map[string]any{"typ": "JWT"}, userClaims(now), secret)
			},
			wantErr: ErrMalformed,
		},
		{
			name: "header alg is not a string",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, map[string]any{"alg": 256}, userClaims(now), secret)
			},
			wantErr: ErrMalformed,
		},
		{
			name: "header names a critical extension",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, map[string]any{"alg": "HS256", "crit": []string{"exp"}, "exp": 1}, userClaims(now), secret)
			},
			wantErr: ErrMalformed,
		},
		{
			name: "payload is JSON null",
			token: func(t *testing.T, now time.Time) string {
				tok := signToken(t, hs256(""), nil, secret) // json.Marshal(nil map) is null
				return tok
			},
			wantErr: ErrMalformed,
		},
		{
			name: "oversize token",
			token: func(t *testing.T, now time.Time) string {
				return signToken(t, hs256(""), with(userClaims(now), "pad", strings.Repeat("x", MaxTokenSize)), secret)
			},
			wantErr: ErrMalformed,
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t, tt.config)
			token := tt.token(t, f.clock.Now())
			claims, err := f.v.Verify(context.Background(), token)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if tt.check != nil {
					tt.check(t, claims)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify error = %v, want %v", err, tt.wantErr)
			}
			var verr *Error
			if !errors.As(err, &verr) {
				t.Fatalf("Verify error %T is not an *Error", err)
			}
			if claims != (Claims{}) {
				t.Errorf("Verify returned claims %+v with an error", claims)
			}
			assertNoTokenInError(t, err, token, 8)
		})
	}
}

const base64URLAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// assertNoTokenInError fails when the error text contains a segment of token
// of at least minLen characters (shorter ones may overlap by chance).
func assertNoTokenInError(t *testing.T, err error, token string, minLen int) {
	t.Helper()
	msg := err.Error()
	for _, seg := range strings.Split(token, ".") {
		if len(seg) >= minLen && strings.Contains(msg, seg) {
			t.Errorf("error %q contains a token segment", msg)
		}
	}
}

func mustSignHS256(t *testing.T, secret []byte, claims map[string]any) string {
	t.Helper()
	tok, err := SignHS256(secret, claims)
	if err != nil {
		t.Fatalf("SignHS256: %v", err)
	}
	return tok
}

func TestVerifyTokenAtSizeLimitIsRead(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	claims := userClaims(f.clock.Now())
	// Grow a padding claim until the token is exactly MaxTokenSize bytes.
	pad := ""
	var token string
	for {
		token = signToken(t, hs256(""), with(claims, "pad", pad), []byte(testSecret))
		if len(token) >= MaxTokenSize {
			break
		}
		pad += "x"
	}
	if len(token) != MaxTokenSize {
		// base64 grows in steps of 4 per 3 bytes; trim the claim to land exactly.
		for len(token) > MaxTokenSize {
			pad = pad[:len(pad)-1]
			token = signToken(t, hs256(""), with(claims, "pad", pad), []byte(testSecret))
		}
	}
	if _, err := f.v.Verify(context.Background(), token); err != nil {
		t.Fatalf("Verify of a %d-byte token: %v", len(token), err)
	}
}

func TestVerifyErrorMessages(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	now := f.clock.Now()
	token := signToken(t, hs256(""), with(userClaims(now), "exp", now.Add(-time.Hour).Unix()), []byte(testSecret))
	_, err := f.v.Verify(context.Background(), token)
	want := "access token expired: expired at 2026-03-01T11:00:00Z, 1h0m0s ago (leeway 30s)"
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}

	// A hostile sub is escaped and cut, so it cannot forge log lines.
	token = signToken(t, hs256(""), with(userClaims(now), "sub", "x\n"+strings.Repeat("A", 200)), []byte(testSecret))
	_, err = f.v.Verify(context.Background(), token)
	if err == nil || strings.Contains(err.Error(), "\n") || strings.Count(err.Error(), "A") > 64 {
		t.Errorf("error = %q, want the sub escaped and truncated", err)
	}
}
