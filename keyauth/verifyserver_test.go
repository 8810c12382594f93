package keyauth_test

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/keyworker/keyworker/keyauth"
	"github.com/keyworker/keyworker/keys"
)

// verifyServer is a real HTTP server implementing keyworker's verify
// contract (POST /v1/keys/verify, service token, the answers of the spec)
// over keystore.Store.Verify on the test's database. override, when set,
// answers instead, for answers the daemon would give only when something
// is wrong.
type verifyServer struct {
	*httptest.Server
	f        *fixture
	token    string
	path     string
	requests atomic.Int64
	override atomic.Pointer[http.HandlerFunc]
}

const serviceToken = "kwvt_test-service-token-0123456789"

func newVerifyServer(t testing.TB, f *fixture, prefix string) *verifyServer {
	t.Helper()
	s := &verifyServer{f: f, token: serviceToken, path: prefix + keyauth.VerifyPath}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *verifyServer) answerWith(h http.HandlerFunc) { s.override.Store(&h) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, code int, c, msg string) {
	writeJSON(w, code, map[string]string{"error": msg, "code": c})
}

func (s *verifyServer) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if h := s.override.Load(); h != nil {
		(*h)(w, r)
		return
	}
	if r.URL.Path != s.path {
		apiError(w, http.StatusNotFound, "not_found", "no such endpoint")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		apiError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(s.token)) != 1 {
		apiError(w, http.StatusUnauthorized, "invalid_service_token", "the service token is not one of the verify tokens")
		return
	}
	var req struct {
		Key string `json:"key"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", "the body must be {\"key\": \"...\"}")
		return
	}
	v, err := s.f.store.Verify(r.Context(), s.f.db, req.Key)
	if err != nil {
		apiError(w, http.StatusInternalServerError, "internal", "internal error")
		return
	}
	ans := map[string]any{"valid": v.Status == keys.StatusValid, "status": v.Status.String()}
	if v.Status != keys.StatusNotFound {
		ans["user_id"], ans["key_id"] = v.UserID, v.KeyID
	}
	writeJSON(w, http.StatusOK, ans)
}
