// Package accesstoken verifies Supabase access tokens: the JWT a signed-in
// user sends as "Authorization: Bearer <token>" to POST /v1/keys/reveal.
//
// A Verifier is built from a Config with New and checks tokens with Verify,
// which returns the user's Claims (the user id in Subject). It supports both
// ways a Supabase project signs tokens, together during a migration:
//
//   - the legacy JWT secret (HS256), Config.JWTSecret, used as the raw bytes
//     of the secret string exactly as Supabase Auth uses it;
//   - signing keys (RS256, ES256 on P-256), published at Config.JWKSURL,
//     https://<project>.supabase.co/auth/v1/.well-known/jwks.json.
//
// # What Verify checks
//
// Tokens are parsed and their signatures checked by github.com/golang-jwt/jwt/v5;
// the key set is decoded by github.com/MicahParks/jwkset. This package adds
// Supabase's rules and its own key set cache. In order, stopping at the first
// failure:
//
//  1. Size (at most MaxTokenSize) and shape: three segments of strict,
//     unpadded base64url; a JSON object header with a string alg and no
//     crit member, and a JSON object payload (the library decodes both before
//     the signature is checked, so a payload that is not JSON is ErrMalformed
//     whatever its signature; no claim is acted on until the signature
//     verifies).
//  2. Algorithm: HS256 only with a JWT secret; RS256 and ES256 only with a
//     JWKS URL, only with a kid, and only with a key of that algorithm (an
//     RSA key never checks an ES256 token, the JWT secret never checks an
//     RS256 token, and a public key is never used as an HMAC secret). "none"
//     and every other alg are rejected. Keys are never taken from the token:
//     jwk, jku and x5u headers are ignored.
//  3. Signature. HMAC comparison is constant-time. ES256 signatures must be
//     the 64-byte r||s form of RFC 7518, not DER.
//  4. Claims, read by exact member name: exp required and not passed; nbf and
//     iat, when present, not in the future; all three with Config.Leeway of
//     tolerance. iss equal to Config.Issuer: set it, or with a JWKS URL it is
//     derived (https://<project>.supabase.co/auth/v1 for
//     https://<project>.supabase.co/auth/v1/.well-known/jwks.json); with only
//     a JWT secret and no Issuer, iss is not checked. aud (a string or an
//     array) containing Config.Audience ("authenticated"). role not "anon"
//     (the project's anon key is a JWT, but not a user). sub present and a
//     non-nil UUID, returned in lowercase.
//
// Every rejection is an *Error wrapping a sentinel (ErrMalformed,
// ErrAlgorithm, ErrUnknownKey, ErrJWKSUnavailable, ErrSignature, ErrExpired,
// ErrNotYetValid, ErrAudience, ErrIssuer, ErrSubject, ErrRole), so callers
// branch with errors.Is: ErrJWKSUnavailable is the server's fault (503), the
// others the caller's (401). Messages never contain the token; values quoted
// from it (kid, aud, iss, sub) are escaped and cut to 64 bytes. They are for
// logs: an HTTP answer should not repeat them.
//
// # The key set
//
// The JWK set is fetched lazily, on the first RS256 or ES256 token (or by
// RefreshKeys, which a daemon can call at start to fail fast), with a GET
// bounded by Config.JWKSTimeout. RSA keys of 2048 to 8192 bits and EC P-256
// keys are kept; keys with another kty or curve, an alg other than RS256 or
// ES256, use other than "sig", key_ops without "verify", or no kid are
// skipped. The set is refetched when it is older than Config.JWKSRefresh and
// when a token names a kid it does not hold, in both cases at most once per
// MinJWKSRefetchInterval (30s), so tokens with made-up kids cannot turn into
// a flood of requests to Supabase. When a fetch fails the last good set stays
// in use, but only until it is Config.JWKSMaxStaleness (1h) old: after that,
// RS256 and ES256 tokens are refused with ErrJWKSUnavailable until a fetch
// succeeds, so a key revoked while Supabase was out of reach does not verify
// forever. A fetch failure surfaces as the Cause of an ErrUnknownKey or
// ErrJWKSUnavailable rejection. A key that disappears from a fetched set (a
// revoked key) stops verifying at once.
//
// The cache is this package's rather than jwkset's HTTP client: that client
// refreshes on a timer of its own and on the wall clock, keeps no time of its
// last success (so staleness cannot be bounded), and makes a reader with an
// unknown kid wait on its rate limiter.
//
// A Verifier is safe for concurrent use. Lookups in a fresh set take no lock;
// at most one fetch runs at a time, and callers waiting for it give up when
// their context ends.
//
// SignHS256 mints HS256 tokens for tests and the demo; keyworker never issues
// tokens.
package accesstoken
