package notify_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/keyworker/keyworker/notify"
)

func TestLogWritesOneLinePerNotice(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := notify.NewLog(slog.New(slog.NewJSONHandler(&buf, nil)))
	if l.Name() != "log" {
		t.Errorf("Name = %q", l.Name())
	}
	n := testNotice(t)
	if err := l.Send(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want 1:\n%s", len(lines), buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"component":  "notify",
		"sink":       "log",
		"key_id":     n.KeyID,
		"user_id":    n.UserID,
		"prefix":     n.Prefix,
		"last4":      n.Last4,
		"reveal_url": n.RevealURL,
		"level":      "INFO",
	}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %v, want %q", k, rec[k], v)
		}
	}
	if strings.Contains(lines[0], n.Email) {
		t.Errorf("log line has the user's email address: %s", lines[0])
	}
}

func TestLogRejectsIncompleteNotice(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := notify.NewLog(slog.New(slog.NewJSONHandler(&buf, nil)))
	n := testNotice(t)
	n.KeyID = ""
	var pe *notify.PermanentError
	if err := l.Send(t.Context(), n); !errors.As(err, &pe) {
		t.Errorf("Send = %v, want a PermanentError", err)
	}
	if buf.Len() != 0 {
		t.Errorf("logged an incomplete notice: %s", buf.String())
	}
}

func TestSenderNames(t *testing.T) {
	t.Parallel()
	wh := newWebhook(t, notify.WebhookConfig{URL: "https://hooks.example.com/k", Secret: newSecret(t)})
	em := newEmail(t, notify.SMTPConfig{URL: "smtp://mail.example.com"})
	for want, s := range map[string]notify.Sender{"webhook": wh, "email": em, "log": notify.NewLog(nil)} {
		if s.Name() != want {
			t.Errorf("Name = %q, want %q", s.Name(), want)
		}
	}
}
