package accesstoken

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// SignHS256 is for tests and the demo: it signs an HS256 token over claims
// with secret, as Supabase Auth does with a project's legacy JWT secret, so
// that a Verifier configured with the same JWTSecret accepts it (given the
// claims it requires: exp, aud, sub). keyworker itself never issues tokens.
//
// The header is {"alg":"HS256","typ":"JWT"}. Claims are encoded with
// encoding/json; a claim that cannot be encoded is an error, as is an empty
// secret.
func SignHS256(secret []byte, claims map[string]any) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("signing access token: secret is empty")
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encoding access token claims: %w", err)
	}
	enc := base64.RawURLEncoding
	signingInput := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(payload)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signingInput))
	return signingInput + "." + enc.EncodeToString(mac.Sum(nil)), nil
}
