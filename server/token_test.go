package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/keyworker/keyworker/internal/testenv"
)

// TestRevealKeySetUnavailableIs503: when tokens cannot be checked at all
// (the signing keys cannot be fetched), the caller is not told its token is
// bad: 503 with Retry-After, not 401.
func TestRevealKeySetUnavailableIs503(t *testing.T) {
	t.Parallel()
	var outcomes []string
	h := testServer(t, Config{
		VerifyToken: func(ctx context.Context, token string) (string, error) {
			return "", fmt.Errorf("verifying access token: %w: signing keys unavailable: fetching https://x.supabase.co/auth/v1/.well-known/jwks.json: 503", ErrTokenUnverifiable)
		},
		OnReveal: func(o string) { outcomes = append(outcomes, o) },
	}).Handler()
	rec := do(h, "POST", "/v1/keys/reveal", map[string]string{"Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln"})
	if rec.Code != 503 || errCode(t, rec) != "token_unverifiable" {
		t.Fatalf("reveal with the key set unavailable: %d %s, want 503 token_unverifiable", rec.Code, rec.Body)
	}
	if ra := rec.Header().Get("Retry-After"); ra != "30" {
		t.Errorf("Retry-After = %q, want 30", ra)
	}
	if rec.Header().Get("WWW-Authenticate") != "" {
		t.Errorf("a 503 carries WWW-Authenticate %q: the token is not what failed", rec.Header().Get("WWW-Authenticate"))
	}
	if strings.Contains(rec.Body.String(), "jwks") || strings.Contains(rec.Body.String(), "supabase.co") {
		t.Errorf("the 503 body carries the verifier's detail: %s", rec.Body)
	}
	if fmt.Sprint(outcomes) != "[error]" {
		t.Errorf("outcomes = %v, want [error]", outcomes)
	}
}

// TestRevealRejectionDetailIsLoggedNotSent: why a token was refused goes to
// the log, not to the client (which could be probing with forged tokens),
// and the token goes to neither.
func TestRevealRejectionDetailIsLoggedNotSent(t *testing.T) {
	t.Parallel()
	const detail = `access token signature invalid: RS256 signature does not match key "key-1"`
	const tok = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImtleS0xIn0.eyJzdWIiOiJ4In0.Zm9yZ2Vk"
	logs := &testenv.LogBuffer{}
	h := testServer(t, Config{
		VerifyToken: func(ctx context.Context, token string) (string, error) {
			if token == "expired" {
				return "", fmt.Errorf("%w: access token expired: expired at 2026-03-01T11:00:00Z", ErrTokenExpired)
			}
			return "", errors.New(detail)
		},
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}).Handler()

	rec := do(h, "POST", "/v1/keys/reveal", map[string]string{"Authorization": "Bearer " + tok})
	if rec.Code != 401 || errCode(t, rec) != "invalid_token" {
		t.Fatalf("reveal with a forged token: %d %s, want 401 invalid_token", rec.Code, rec.Body)
	}
	if body := rec.Body.String(); strings.Contains(body, "signature") || strings.Contains(body, "key-1") {
		t.Errorf("the 401 body carries the rejection's detail: %s", body)
	}
	rec = do(h, "POST", "/v1/keys/reveal", map[string]string{"Authorization": "Bearer expired"})
	if rec.Code != 401 || errCode(t, rec) != "token_expired" {
		t.Fatalf("reveal with an expired token: %d %s, want 401 token_expired", rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), "2026-03-01") {
		t.Errorf("the 401 body carries the rejection's detail: %s", rec.Body)
	}

	out := logs.String()
	if !strings.Contains(out, "access token rejected") || !strings.Contains(out, `does not match key \"key-1\"`) || !strings.Contains(out, "expired at 2026-03-01") {
		t.Errorf("the log does not say why the tokens were rejected:\n%s", out)
	}
	for _, seg := range strings.Split(tok, ".") {
		if strings.Contains(out, seg) {
			t.Errorf("the log carries the token segment %q:\n%s", seg, out)
		}
	}
}
