package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
)

// Rotation overlaps of POST /v1/keys/{id}/rotate.
const (
	// DefaultRotateOverlap is how long the old key keeps working after a
	// rotation that names no overlap.
	DefaultRotateOverlap = 24 * time.Hour
	// MaxRotateOverlap bounds the overlap a user may ask for.
	MaxRotateOverlap = 720 * time.Hour
	// MaxKeyLifetime bounds the expiry a user may give a key (100 years);
	// a key may also never expire.
	MaxKeyLifetime = 100 * 365 * 24 * time.Hour
)

// KeyService is what the keys API does with a user's keys; the daemon
// implements it over keystore. Every method acts only on userID's own keys:
// another user's key id must give keystore.ErrNotFound, exactly as a missing
// one does. remoteAddr is for the audit trail. The server answers the
// errors (wrapped or not) as follows: keystore.ErrNotFound 404
// key_not_found; keystore.ErrLimitReached 409 key_limit_reached, with the
// error's message; keystore.ErrRevoked 409 key_revoked; keystore.ErrInvalid
// 422 invalid_request, with the error's message; anything else 500
// internal, logged. So messages must never hold a secret. Implementations
// must be safe for concurrent use.
type KeyService interface {
	// List returns the user's keys, newest first.
	List(ctx context.Context, userID string) ([]keystore.Info, error)
	// Create makes a key for the user (source user) and returns it with
	// its plaintext; keystore.ErrLimitReached past the live-key limit.
	Create(ctx context.Context, userID string, r CreateKey, remoteAddr string) (NewKey, error)
	// Rotate replaces the user's key keyID with a new one and schedules the
	// old one's revocation overlap from now (or at its expiry if sooner);
	// the NewKey's RotatedFrom is keyID and OldKeyRevokedAt that time.
	Rotate(ctx context.Context, userID, keyID string, overlap time.Duration, remoteAddr string) (NewKey, error)
	// SetDisabled disables (true) or enables (false) the user's key and
	// returns it after; doing it twice is not an error.
	// keystore.ErrRevoked for a revoked key.
	SetDisabled(ctx context.Context, userID, keyID string, disabled bool, remoteAddr string) (keystore.Info, error)
	// Revoke revokes the user's key now and returns it after; revoking a
	// revoked key is not an error.
	Revoke(ctx context.Context, userID, keyID, remoteAddr string) (keystore.Info, error)
	// Verify checks a presented key, as keystore.Store.Verify does (same
	// work and answer for an unknown id and a wrong secret).
	Verify(ctx context.Context, key string) (keystore.Verification, error)
}

// CreateKey is what POST /v1/keys asks for, checked: ExpiresAt is in the
// future.
type CreateKey struct {
	// Name labels the key; empty means keystore.DefaultName.
	Name string
	// ExpiresAt is when the key stops working (expires_at, or now plus
	// expires_in); nil means never.
	ExpiresAt *time.Time
}

// KeyInfo is a key as the API shows it: keystore.Info (never a hash or
// salt) and its status when answered.
type KeyInfo struct {
	keystore.Info
	// Status is the key's status at the time of the answer (the server
	// sets it): valid, revoked, expired or disabled.
	Status keys.Status `json:"status"`
}

// NewKey is a key just made (POST /v1/keys, rotate), with its plaintext.
// Key reaches only the 201 answer's body: String, Format (every fmt verb,
// %#v included), GoString and LogValue show the redacted form
// "<prefix>_<key_id>_…<last4>", as Revealed does. encoding/json, which
// writes the answer, still sees Key.
type NewKey struct {
	KeyInfo
	// Key is the plaintext.
	Key string `json:"key"`
	// OldKeyRevokedAt is, for a rotation, when the replaced key
	// (RotatedFrom) stops working.
	OldKeyRevokedAt *time.Time `json:"old_key_revoked_at,omitempty"`
}

// String is the redacted form: the prefix, the key id and the last 4.
func (n NewKey) String() string { return redactedKey(n.Prefix, n.ID, n.Last4) }

// GoString is a Go-syntax representation without the key, for %#v.
func (n NewKey) GoString() string {
	return fmt.Sprintf("server.NewKey{ID:%q, Name:%q, Prefix:%q, Last4:%q, CreatedAt:%s, ExpiresAt:%v, RotatedFrom:%q, OldKeyRevokedAt:%v}",
		n.ID, n.Name, n.Prefix, n.Last4, n.CreatedAt.Format(time.RFC3339), n.ExpiresAt, n.RotatedFrom, n.OldKeyRevokedAt)
}

// Format makes every fmt verb print String's redacted form (GoString for
// %#v), keeping the verb's flags, width and precision.
func (n NewKey) Format(f fmt.State, verb rune) { formatRedacted(f, verb, n.String(), n.GoString) }

// LogValue keeps the key out of logs.
func (n NewKey) LogValue() slog.Value { return redactedLogValue(n.Prefix, n.ID, n.Last4) }

func (s *Server) keyInfo(i keystore.Info) KeyInfo { return KeyInfo{Info: i, Status: i.Status(s.now())} }

// keysUser signs the keys API's caller in; on failure it has answered.
func (s *Server) keysUser(w http.ResponseWriter, r *http.Request) (userID, addr string, ok bool) {
	if s.cfg.VerifyToken == nil || s.cfg.Keys == nil {
		writeError(w, http.StatusServiceUnavailable, "keys_disabled", "the keys API is not configured on this server: it has no way to verify access tokens")
		return "", "", false
	}
	userID, addr, failure := s.signIn(w, r, s.keysLimits)
	return userID, addr, failure == ""
}

// listKeys is GET /v1/keys.
func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	userID, _, ok := s.keysUser(w, r)
	if !ok {
		return
	}
	infos, err := s.cfg.Keys.List(r.Context(), userID)
	if err != nil {
		s.keyError(w, r, err, "listing keys", userID, "")
		return
	}
	out := make([]KeyInfo, len(infos))
	for i, info := range infos {
		out[i] = s.keyInfo(info)
	}
	writeJSON(w, http.StatusOK, struct {
		Keys []KeyInfo `json:"keys"`
	}{out})
}

type createKeyRequest struct {
	Name      string  `json:"name"`
	ExpiresAt *string `json:"expires_at"`
	ExpiresIn *string `json:"expires_in"`
}

// createKey is POST /v1/keys.
func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	userID, addr, ok := s.keysUser(w, r)
	if !ok {
		return
	}
	var req createKeyRequest
	if !readJSON(w, r, &req, true) {
		return
	}
	ck := CreateKey{Name: req.Name}
	now := s.now()
	switch {
	case req.ExpiresAt != nil && req.ExpiresIn != nil:
		writeError(w, http.StatusUnprocessableEntity, "invalid_request", "give expires_at or expires_in, not both")
		return
	case req.ExpiresAt != nil:
		t, err := time.Parse(time.RFC3339, *req.ExpiresAt)
		if err != nil {
			writeError(w, http.StatusUnprocessableEntity, "invalid_request", fmt.Sprintf("expires_at must be an RFC 3339 time such as 2030-01-02T15:04:05Z, got %q", shorten(*req.ExpiresAt)))
			return
		}
		if !t.After(now) || t.Sub(now) > MaxKeyLifetime {
			writeError(w, http.StatusUnprocessableEntity, "invalid_request", fmt.Sprintf("expires_at must be in the future and at most %s away, got %s (now is %s)", fmtHours(MaxKeyLifetime), t.Format(time.RFC3339), now.UTC().Format(time.RFC3339)))
			return
		}
		ck.ExpiresAt = &t
	case req.ExpiresIn != nil:
		d, err := time.ParseDuration(*req.ExpiresIn)
		if err != nil || d <= 0 || d > MaxKeyLifetime {
			writeError(w, http.StatusUnprocessableEntity, "invalid_request", fmt.Sprintf("expires_in must be a positive duration of at most %s, such as 720h or 90m, got %q", fmtHours(MaxKeyLifetime), shorten(*req.ExpiresIn)))
			return
		}
		t := now.Add(d)
		ck.ExpiresAt = &t
	}
	nk, err := s.cfg.Keys.Create(r.Context(), userID, ck, addr)
	if err != nil {
		s.keyError(w, r, err, "creating a key", userID, "")
		return
	}
	nk.Status = nk.Info.Status(now)
	s.cfg.Logger.Info("key created", "component", "http", "user_id", userID, "key", nk)
	writeJSON(w, http.StatusCreated, nk)
}

type rotateRequest struct {
	Overlap *string `json:"overlap"`
}

// rotateKey is POST /v1/keys/{id}/rotate.
func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request) {
	userID, addr, ok := s.keysUser(w, r)
	if !ok {
		return
	}
	var req rotateRequest
	if !readJSON(w, r, &req, true) {
		return
	}
	overlap := DefaultRotateOverlap
	if req.Overlap != nil {
		d, err := time.ParseDuration(*req.Overlap)
		if err != nil || d < 0 || d > MaxRotateOverlap {
			writeError(w, http.StatusUnprocessableEntity, "invalid_request", fmt.Sprintf("overlap must be a duration from 0s to %s such as 24h, got %q", fmtHours(MaxRotateOverlap), shorten(*req.Overlap)))
			return
		}
		overlap = d
	}
	id := r.PathValue("id")
	nk, err := s.cfg.Keys.Rotate(r.Context(), userID, id, overlap, addr)
	if err != nil {
		s.keyError(w, r, err, "rotating a key", userID, id)
		return
	}
	nk.Status = nk.Info.Status(s.now())
	s.cfg.Logger.Info("key rotated", "component", "http", "user_id", userID, "rotated_from", id, "key", nk, "overlap", overlap)
	writeJSON(w, http.StatusCreated, nk)
}

// disableKey is POST /v1/keys/{id}/disable.
func (s *Server) disableKey(w http.ResponseWriter, r *http.Request) { s.setDisabled(w, r, true) }

// enableKey is POST /v1/keys/{id}/enable.
func (s *Server) enableKey(w http.ResponseWriter, r *http.Request) { s.setDisabled(w, r, false) }

func (s *Server) setDisabled(w http.ResponseWriter, r *http.Request, disabled bool) {
	userID, addr, ok := s.keysUser(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	what, done := "enabling a key", "key enabled"
	if disabled {
		what, done = "disabling a key", "key disabled"
	}
	info, err := s.cfg.Keys.SetDisabled(r.Context(), userID, id, disabled, addr)
	if err != nil {
		s.keyError(w, r, err, what, userID, id)
		return
	}
	s.cfg.Logger.Info(done, "component", "http", "user_id", userID, "key_id", id)
	writeJSON(w, http.StatusOK, s.keyInfo(info))
}

// revokeKey is DELETE /v1/keys/{id}.
func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	userID, addr, ok := s.keysUser(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	info, err := s.cfg.Keys.Revoke(r.Context(), userID, id, addr)
	if err != nil {
		s.keyError(w, r, err, "revoking a key", userID, id)
		return
	}
	s.cfg.Logger.Info("key revoked", "component", "http", "user_id", userID, "key_id", id)
	writeJSON(w, http.StatusOK, s.keyInfo(info))
}

// keyError answers a KeyService error (see KeyService for the mapping).
func (s *Server) keyError(w http.ResponseWriter, r *http.Request, err error, what, userID, keyID string) {
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		writeError(w, http.StatusNotFound, "key_not_found", "you have no key with this id")
	case errors.Is(err, keystore.ErrLimitReached):
		writeError(w, http.StatusConflict, "key_limit_reached", err.Error())
	case errors.Is(err, keystore.ErrRevoked):
		writeError(w, http.StatusConflict, "key_revoked", "the key is revoked, which cannot be undone: it cannot be rotated, disabled or enabled; create a new one with POST /v1/keys")
	case errors.Is(err, keystore.ErrRevocationScheduled):
		writeError(w, http.StatusConflict, "key_rotated", "the key was rotated already and stops working when its overlap ends: rotate its successor (the key whose rotated_from is this key's id) instead")
	case errors.Is(err, keystore.ErrInvalid):
		// The store's message without its sentinel's words ("invalid
		// argument: "), which mean nothing to the API's caller.
		msg := err.Error()
		if _, after, ok := strings.Cut(msg, keystore.ErrInvalid.Error()+": "); ok {
			msg = after
		}
		writeError(w, http.StatusUnprocessableEntity, "invalid_request", msg)
	default:
		attrs := []any{"component", "http", "user_id", userID, "error", err}
		if keyID != "" {
			attrs = append(attrs, "key_id", keyID)
		}
		s.cfg.Logger.ErrorContext(r.Context(), what+" failed", attrs...)
		writeError(w, http.StatusInternalServerError, "internal", what+" failed on the server (the error is logged): try again")
	}
}

// shorten bounds what of a request is quoted back in a message.
func shorten(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// fmtHours writes a whole number of hours as "720h".
func fmtHours(d time.Duration) string { return fmt.Sprintf("%dh", int(d.Hours())) }
