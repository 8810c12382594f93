package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

// TestRevealSealedUnderAnotherKeyIsNotTryAgain guards the answer for a key
// no retry can open: 500 with its own code, a message that does not ask to
// try again, and a log line with the cause (the fingerprints).
func TestRevealSealedUnderAnotherKeyIsNotTryAgain(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	h := testServer(t, Config{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Reveal: func(ctx context.Context, userID, addr string) (Revealed, error) {
			return Revealed{}, fmt.Errorf("revealing key 2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA: %w: box under fingerprint 0011223344556677, this worker has 8899aabbccddeeff", ErrSealedUnderAnotherKey)
		},
	}).Handler()
	rec := do(h, "POST", "/v1/keys/reveal", map[string]string{"Authorization": "Bearer good"})
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500", rec.Code)
	}
	if code := errCode(t, rec); code != "sealed_under_another_key" {
		t.Fatalf("code %q, want sealed_under_another_key", code)
	}
	body := rec.Body.String()
	if strings.Contains(body, "try again") || !strings.Contains(body, "retrying will not help") {
		t.Errorf("body %s asks to try again", body)
	}
	if strings.Contains(body, "0011223344556677") {
		t.Errorf("body %s shows the worker's fingerprints to the user", body)
	}
	if l := logs.String(); !strings.Contains(l, "sealed under another sealing key") || !strings.Contains(l, "0011223344556677") || !strings.Contains(l, "8899aabbccddeeff") {
		t.Errorf("log does not name the fingerprints: %s", l)
	}
}
