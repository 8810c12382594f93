package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"

	"github.com/keyworker/keyworker/keys"
)

// MinVerifyTokenLen is the shortest service token VerifyTokens takes.
const MinVerifyTokenLen = 32

// verifyTokenSums checks VerifyTokens and returns their SHA-256 sums, which
// the server compares (in constant time, whatever the presented token's
// length) instead of the tokens. Blank entries are skipped.
func (c Config) verifyTokenSums() ([][32]byte, error) {
	var sums [][32]byte
	for i, tok := range c.VerifyTokens {
		if tok == "" {
			continue
		}
		if len(tok) < MinVerifyTokenLen {
			return nil, fmt.Errorf("VerifyTokens: token %d of %d is %d characters: use at least %d random ones, e.g. from openssl rand -hex 32", i+1, len(c.VerifyTokens), len(tok), MinVerifyTokenLen)
		}
		for _, b := range []byte(tok) {
			if b <= ' ' || b > '~' {
				return nil, fmt.Errorf("VerifyTokens: token %d of %d has a space, a control or a non-ASCII character: use printable ASCII only, e.g. from openssl rand -hex 32", i+1, len(c.VerifyTokens))
			}
		}
		if c.DashboardToken != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(c.DashboardToken)) == 1 {
			return nil, fmt.Errorf("VerifyTokens: token %d of %d is the dashboard's token (DashboardToken): give backends a token of their own", i+1, len(c.VerifyTokens))
		}
		sums = append(sums, sha256.Sum256([]byte(tok)))
	}
	return sums, nil
}

// serviceToken reports whether tok is one of VerifyTokens, comparing it
// with every one of them.
func (s *Server) serviceToken(tok string) bool {
	sum := sha256.Sum256([]byte(tok))
	match := 0
	for _, want := range s.verifyTokens {
		match |= subtle.ConstantTimeCompare(sum[:], want[:])
	}
	return match == 1
}

type verifyRequest struct {
	Key string `json:"key"`
}

// verifyAnswer is POST /v1/keys/verify's answer. The ids are left out for
// not_found, so an unknown id and a wrong secret give the same bytes.
type verifyAnswer struct {
	Valid  bool        `json:"valid"`
	Status keys.Status `json:"status"`
	UserID string      `json:"user_id,omitempty"`
	KeyID  string      `json:"key_id,omitempty"`
}

// verifyKey is POST /v1/keys/verify, for backends: a service token, never a
// user's; no CORS. Wrong service tokens are throttled per client address.
func (s *Server) verifyKey(w http.ResponseWriter, r *http.Request) {
	if len(s.verifyTokens) == 0 || s.cfg.Keys == nil {
		writeError(w, http.StatusServiceUnavailable, "verify_disabled", "checking keys over HTTP is not configured on this server: it has no service tokens")
		return
	}
	addr := s.clientAddr(r)
	client, now := rateKey(addr), s.now()
	if blocked, retry := s.verifyFailRate.blocked(client, now); blocked {
		w.Header().Set("Retry-After", retryAfter(retry))
		writeError(w, http.StatusTooManyRequests, "rate_limited", "too many wrong service tokens from this address; try again later")
		return
	}
	tok, ok := bearer(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="keyworker verify"`)
		writeError(w, http.StatusUnauthorized, "missing_service_token", "send one of this server's service tokens as Authorization: Bearer <token>")
		return
	}
	if !s.serviceToken(tok) {
		s.verifyFailRate.charge(client, now)
		s.cfg.Logger.Warn("service token rejected", "component", "http", "remote_addr", addr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="keyworker verify", error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, "invalid_service_token", "the bearer token is not one of this server's service tokens (an end user's access token is never accepted here)")
		return
	}
	var req verifyRequest
	if !readJSON(w, r, &req, false) {
		return
	}
	if req.Key == "" {
		writeError(w, http.StatusBadRequest, "bad_request", `field "key" is required: send {"key": "<the API key to check>"}`)
		return
	}
	v, err := s.cfg.Keys.Verify(r.Context(), req.Key)
	if err != nil {
		s.cfg.Logger.ErrorContext(r.Context(), "verifying a key failed", "component", "http", "error", err)
		writeError(w, http.StatusInternalServerError, "internal", "the key could not be checked (the error is logged): try again")
		return
	}
	ans := verifyAnswer{Valid: v.Status == keys.StatusValid, Status: v.Status}
	if v.Status != keys.StatusNotFound {
		ans.UserID, ans.KeyID = v.UserID, v.KeyID
	}
	writeJSON(w, http.StatusOK, ans)
}
