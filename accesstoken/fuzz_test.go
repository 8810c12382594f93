package accesstoken

import (
	"context"
	"errors"
	"testing"
)

// FuzzVerify guards the parser: no input panics, every rejection is an
// *Error that does not repeat the token, and whatever is accepted has a
// canonical user id. The key set is fetched once up front and the clock
// stands still, so fuzzed kids never reach the JWKS server again. `go test` runs the seeds; `go test -fuzz=FuzzVerify
// ./accesstoken/` explores.
func FuzzVerify(f *testing.F) {
	keys := testKeys()
	fx := setup(f, nil)
	ctx := context.Background()
	if err := fx.v.RefreshKeys(ctx); err != nil {
		f.Fatalf("RefreshKeys: %v", err)
	}
	now := fx.clock.Now()
	secret := []byte(testSecret)
	for _, seed := range []string{
		signToken(f, hs256("kid"), userClaims(now), secret),
		signToken(f, rs256("rsa-1"), userClaims(now), keys.rsa1),
		signToken(f, es256("ec-1"), userClaims(now), keys.ec1),
		signToken(f, map[string]any{"alg": "none"}, userClaims(now), nil),
		"", ".", "..", "a.b.c", "e30.e30.", "eyJhbGciOiJIUzI1NiJ9.bnVsbA.",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		claims, err := fx.v.Verify(ctx, token)
		if err != nil {
			var verr *Error
			if !errors.As(err, &verr) {
				t.Fatalf("Verify error %T (%v) is not an *Error", err, err)
			}
			// Values quoted from a token are cut to 64 bytes, so a
			// longer segment can only appear if it leaked verbatim.
			assertNoTokenInError(t, err, token, 65)
			return
		}
		if got, ok := canonicalUUID(claims.Subject); !ok || got != claims.Subject {
			t.Fatalf("accepted token with Subject %q, not a canonical UUID", claims.Subject)
		}
	})
}
