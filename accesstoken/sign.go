package accesstoken

import (
	"errors"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// SignHS256 is for tests and the demo: it signs an HS256 token over claims
// with secret, as Supabase Auth does with a project's legacy JWT secret, so
// that a Verifier configured with the same JWTSecret accepts it (given the
// claims it requires: exp, aud, sub, and iss when the Verifier has an
// Issuer). keyworker itself never issues tokens.
//
// The header is {"alg":"HS256","typ":"JWT"}. Claims are encoded with
// encoding/json; a claim that cannot be encoded is an error, as is an empty
// secret.
func SignHS256(secret []byte, claims map[string]any) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("signing access token: secret is empty")
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(claims)).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("signing access token: %w", err)
	}
	return tok, nil
}
