package server

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/keyworker/keyworker/keystore"
)

// TestRevealedNeverPrintsTheKey: every fmt verb (and a wrapped error, and
// slog's text and JSON handlers) shows the redacted form of a Revealed, with
// no trace of its plaintext, while the JSON response still carries it.
func TestRevealedNeverPrintsTheKey(t *testing.T) {
	t.Parallel()
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	r := Revealed{Key: secretKey, KeyID: "2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA", Prefix: "sk", Last4: "2345", CreatedAt: exp.Add(-time.Hour), ExpiresAt: &exp}
	checkRedacted(t, r, `KeyID:"2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA"`, `Last4:"2345"`)
}

// TestNewKeyNeverPrintsTheKey: the same of a NewKey, the answer of create
// and rotate.
func TestNewKeyNeverPrintsTheKey(t *testing.T) {
	t.Parallel()
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	info := keystore.Info{ID: "2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA", UserID: "u", Name: "ci", Prefix: "sk", Last4: "2345", CreatedAt: exp.Add(-time.Hour), ExpiresAt: &exp, RotatedFrom: "2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzB"}
	n := NewKey{KeyInfo: KeyInfo{Info: info}, Key: secretKey, OldKeyRevokedAt: &exp}
	checkRedacted(t, n, `ID:"2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA"`, `Name:"ci"`, `RotatedFrom:"2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzB"`)
}

// checkRedacted checks that v, which carries secretKey, prints and logs
// only as "sk_2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA_…2345" (its %#v with goStringHas),
// and that its JSON carries the key.
func checkRedacted[T any](t *testing.T, v T, goStringHas ...string) {
	t.Helper()
	secret := secretKey[len("sk_2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA_"):]
	leaks := func(out string) bool {
		return strings.Contains(out, secret) || strings.Contains(out, secret[:12]) ||
			strings.Contains(strings.ToLower(out), hex.EncodeToString([]byte(secret[:12])))
	}
	const redacted = "sk_2ZqW3kQ1bTtW7bJ8n3mVqQ9xYzA_…2345"
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%20v", "%-60s", "%.5s", "%T"} {
		for _, arg := range []any{v, &v, []T{v}, map[string]T{"k": v}, struct{ R T }{v}} {
			out := fmt.Sprintf(verb, arg)
			if leaks(out) {
				t.Errorf("Sprintf(%q, %T) leaks the key: %s", verb, arg, out)
			}
		}
	}
	if got := fmt.Sprintf("%v", v); got != redacted {
		t.Errorf("%%v = %q, want %q", got, redacted)
	}
	if got := fmt.Sprint(v); got != redacted {
		t.Errorf("Sprint = %q, want %q", got, redacted)
	}
	for _, want := range goStringHas {
		if got := fmt.Sprintf("%#v", v); !strings.Contains(got, want) {
			t.Errorf("%%#v = %q, want the public fields (%s)", got, want)
		}
	}
	if err := fmt.Errorf("revealing %v: %w", v, errors.New("boom")); leaks(err.Error()) {
		t.Errorf("a wrapped error leaks the key: %s", err)
	}
	for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var buf bytes.Buffer
		log := slog.New(h(&buf))
		log.Info("revealed", "revealed", v, "ptr", &v, slog.Any("any", v))
		if leaks(buf.String()) {
			t.Errorf("slog %s leaks the key: %s", name, buf.String())
		}
		if !strings.Contains(buf.String(), "2345") {
			t.Errorf("slog %s does not show last4: %s", name, buf.String())
		}
	}
	b, err := json.Marshal(v)
	if err != nil || !strings.Contains(string(b), secretKey) {
		t.Errorf("the JSON response must carry the key: %s %v", b, err)
	}
}
