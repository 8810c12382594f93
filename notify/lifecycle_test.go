package notify_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"html"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyworker/keyworker/notify"
)

// lifecycleNotice returns testNotice as a notice of event type typ, with
// the fields that type carries set as the jobs package sets them.
func lifecycleNotice(t *testing.T, typ string) notify.Notice {
	t.Helper()
	n := testNotice(t)
	n.Type = typ
	n.EventID = notify.EventID(typ, n.KeyID)
	n.OccurredAt = n.CreatedAt.Add(36 * time.Hour)
	at := n.OccurredAt
	if typ != notify.EventCreated {
		n.RevealExpiresAt, n.PickupURL = time.Time{}, ""
	}
	switch typ {
	case notify.EventRotated:
		n.RotatedTo = "2zVnewkeynewkeynewkeynewkey"
		later := at.Add(24 * time.Hour)
		n.RevokedAt = &later
	case notify.EventRevoked:
		n.RevokedAt = &at
	case notify.EventDisabled:
		n.DisabledAt = &at
	}
	return n
}

func TestEventIDs(t *testing.T) {
	t.Parallel()
	for typ, want := range map[string]string{
		"":                   "notice_K",
		notify.EventCreated:  "notice_K",
		notify.EventRotated:  "rotated_K",
		notify.EventRevoked:  "revoked_K",
		notify.EventDisabled: "disabled_K",
		notify.EventExpiring: "expiring_K",
		notify.EventExpired:  "expired_K",
	} {
		if got := notify.EventID(typ, "K"); got != want {
			t.Errorf("EventID(%q, K) = %q, want %q", typ, got, want)
		}
		if got := notify.OccurrenceEventID(typ, "K", ""); got != want {
			t.Errorf("OccurrenceEventID(%q, K, \"\") = %q, want %q", typ, got, want)
		}
	}
	if got := notify.OccurrenceEventID(notify.EventDisabled, "K", "1767225600000000"); got != "disabled_K_1767225600000000" {
		t.Errorf("OccurrenceEventID(disabled, K, 1767225600000000) = %q, want disabled_K_1767225600000000", got)
	}
	seen := map[string]bool{}
	for _, typ := range notify.EventTypes() {
		if !notify.KnownEventType(typ) {
			t.Errorf("KnownEventType(%q) = false", typ)
		}
		s := notify.Subject(typ)
		if seen[s] {
			t.Errorf("two event types share the subject %q", s)
		}
		seen[s] = true
	}
	if notify.KnownEventType("api_key.deleted") || notify.KnownEventType("") {
		t.Error("KnownEventType accepts an unknown or empty type")
	}
}

// TestWebhookPayloadPerEventType: each event type reaches a real HTTP
// receiver signed, with its type, the event's time as timestamp, its
// EventID as webhook-id and exactly the data keys that apply to it: the
// reveal endpoint and the pick-up page only for a created key.
func TestWebhookPayloadPerEventType(t *testing.T) {
	t.Parallel()
	base := []string{"created_at", "expires_at", "key_id", "last4", "prefix", "user_id"}
	wantExtra := map[string][]string{
		notify.EventCreated:  {"pickup_url", "reveal_expires_at", "reveal_url"},
		notify.EventRotated:  {"revoked_at", "rotated_to"},
		notify.EventRevoked:  {"revoked_at"},
		notify.EventDisabled: {"disabled_at"},
		notify.EventExpiring: nil,
		notify.EventExpired:  nil,
	}
	for _, typ := range notify.EventTypes() {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			secret := newSecret(t)
			rc := newReceiver(t, secret, status(http.StatusNoContent))
			wh := newWebhook(t, notify.WebhookConfig{URL: rc.URL, Secret: secret})
			n := lifecycleNotice(t, typ)
			if err := wh.Send(t.Context(), n); err != nil {
				t.Fatal(err)
			}
			got := rc.received()
			if len(got) != 1 || got[0].independent != nil || got[0].library != nil {
				t.Fatalf("receiver got %d requests (%+v)", len(got), got)
			}
			if id := got[0].header.Get("webhook-id"); id != notify.EventID(typ, n.KeyID) {
				t.Errorf("webhook-id = %q", id)
			}
			var p struct {
				Type      string         `json:"type"`
				Timestamp time.Time      `json:"timestamp"`
				Data      map[string]any `json:"data"`
			}
			if err := json.Unmarshal(got[0].body, &p); err != nil {
				t.Fatal(err)
			}
			if p.Type != typ {
				t.Errorf("type = %q, want %q", p.Type, typ)
			}
			if !p.Timestamp.Equal(n.OccurredAt) {
				t.Errorf("timestamp = %v, want the event's time %v", p.Timestamp, n.OccurredAt)
			}
			want := slices.Sorted(slices.Values(append(slices.Clone(base), wantExtra[typ]...)))
			if keys := sortedKeys(p.Data); !slices.Equal(keys, want) {
				t.Errorf("data keys = %v, want %v", keys, want)
			}
			if typ == notify.EventRotated && p.Data["rotated_to"] != n.RotatedTo {
				t.Errorf("rotated_to = %v", p.Data["rotated_to"])
			}
		})
	}
}

// TestWebhookEmptyTypeIsCreated: a Notice of an earlier version (no Type,
// no OccurredAt) sends what it always did.
func TestWebhookEmptyTypeIsCreated(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	rc := newReceiver(t, secret, status(http.StatusOK))
	wh := newWebhook(t, notify.WebhookConfig{URL: rc.URL, Secret: secret})
	n := testNotice(t)
	n.Type, n.OccurredAt = "", time.Time{}
	if err := wh.Send(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	checkPayload(t, rc.received()[0].body, n)
}

func TestUnknownEventTypeIsPermanent(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	rc := newReceiver(t, secret, status(http.StatusOK))
	wh := newWebhook(t, notify.WebhookConfig{URL: rc.URL, Secret: secret})
	srv := startSMTP(t, smtpOptions{})
	e := newEmail(t, notify.SMTPConfig{URL: "smtp://" + srv.addr + "?starttls=off"})
	n := testNotice(t)
	n.Type = "api_key.deleted"
	for _, s := range []notify.Sender{wh, e, notify.NewLog(slog.New(slog.DiscardHandler))} {
		err := s.Send(t.Context(), n)
		var perm *notify.PermanentError
		if !errors.As(err, &perm) || !strings.Contains(err.Error(), `unknown Type "api_key.deleted"`) {
			t.Errorf("%s: Send = %v, want a permanent error naming the type", s.Name(), err)
		}
	}
	if len(rc.received()) != 0 || len(srv.received()) != 0 {
		t.Error("a notice of an unknown type was sent")
	}
}

// TestEmailPerEventType: each type reaches a real SMTP server with its own
// subject and text, naming the key, never linking the reveal endpoint.
func TestEmailPerEventType(t *testing.T) {
	t.Parallel()
	wantText := map[string][]string{
		notify.EventCreated:  {"Your API key is ready", "Pick it up here, once:"},
		notify.EventRotated:  {"was replaced by a new key", "2zVnewkeynewkeynewkeynewkey", "keeps working until"},
		notify.EventRevoked:  {"was revoked at", "It no longer works."},
		notify.EventDisabled: {"was disabled at", "until it is enabled again"},
		notify.EventExpiring: {"expires at " + "2027-03-01 12:30 UTC"},
		notify.EventExpired:  {"expired at 2027-03-01 12:30 UTC", "It no longer works."},
	}
	srv := startSMTP(t, smtpOptions{})
	e := newEmail(t, notify.SMTPConfig{URL: "smtp://" + srv.addr + "?starttls=off"})
	for i, typ := range notify.EventTypes() {
		n := lifecycleNotice(t, typ)
		if err := e.Send(t.Context(), n); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		got := srv.received()
		if len(got) != i+1 {
			t.Fatalf("%s: server has %d messages, want %d", typ, len(got), i+1)
		}
		p := checkNoticeMessage(t, got[i], n)
		for ct, body := range p.parts {
			if ct == "text/html" {
				body = html.UnescapeString(body)
			}
			for _, want := range wantText[typ] {
				if !strings.Contains(strings.Join(strings.Fields(body), " "), want) {
					t.Errorf("%s %s part lacks %q:\n%s", typ, ct, want, body)
				}
			}
			if typ != notify.EventCreated && strings.Contains(body, "pick it up") {
				t.Errorf("%s %s part offers a pick-up:\n%s", typ, ct, body)
			}
		}
	}
}

// TestEmailPickUpWithoutPickupURL: with no pick-up page the created email
// says how to pick the key up, and links nothing (certainly not the
// POST-only reveal endpoint); a created key with nothing to pick up (made
// through the API) mentions no pick-up at all.
func TestEmailPickUpWithoutPickupURL(t *testing.T) {
	t.Parallel()
	srv := startSMTP(t, smtpOptions{})
	e := newEmail(t, notify.SMTPConfig{URL: "smtp://" + srv.addr + "?starttls=off"})
	n := testNotice(t)
	n.PickupURL = ""
	if err := e.Send(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	n2 := testNotice(t)
	n2.PickupURL, n2.RevealExpiresAt = "", time.Time{}
	if err := e.Send(t.Context(), n2); err != nil {
		t.Fatal(err)
	}
	got := srv.received()
	p := checkNoticeMessage(t, got[0], n)
	if !strings.Contains(strings.Join(strings.Fields(p.parts["text/plain"]), " "), "To pick it up, sign in to the application you signed up for") {
		t.Errorf("text part does not say how to pick the key up:\n%s", p.parts["text/plain"])
	}
	for ct, body := range p.parts {
		if strings.Contains(body, "http") && ct == "text/plain" || strings.Contains(body, "href") {
			t.Errorf("%s part links something without a pick-up page:\n%s", ct, body)
		}
	}
	p2 := checkNoticeMessage(t, got[1], n2)
	for ct, body := range p2.parts {
		if strings.Contains(strings.ToLower(body), "pick") {
			t.Errorf("%s part of a key with nothing to pick up mentions a pick-up:\n%s", ct, body)
		}
	}
}

// TestEmailCustomTemplateSeesType: a custom template gets .Type, set to
// api_key.created for a notice without one.
func TestEmailCustomTemplateSeesType(t *testing.T) {
	t.Parallel()
	srv := startSMTP(t, smtpOptions{})
	e := newEmail(t, notify.SMTPConfig{
		URL:          "smtp://" + srv.addr + "?starttls=off",
		TextTemplate: "{{.Type}} {{.KeyID}}{{if .RotatedTo}} -> {{.RotatedTo}}{{end}}\n",
		HTMLTemplate: `<p>{{.Type}}</p>`,
	})
	old := testNotice(t)
	old.Type = ""
	rot := lifecycleNotice(t, notify.EventRotated)
	for _, n := range []notify.Notice{old, rot} {
		if err := e.Send(t.Context(), n); err != nil {
			t.Fatal(err)
		}
	}
	got := srv.received()
	if p := parseMessage(t, got[0].data); p.parts["text/plain"] != "api_key.created "+old.KeyID+"\r\n" || p.header.Get("Subject") != notify.EmailSubject {
		t.Errorf("old notice: text %q, subject %q", p.parts["text/plain"], p.header.Get("Subject"))
	}
	if p := parseMessage(t, got[1].data); p.parts["text/plain"] != "api_key.rotated "+rot.KeyID+" -> "+rot.RotatedTo+"\r\n" || p.parts["text/html"] != "<p>api_key.rotated</p>" {
		t.Errorf("rotated notice: %q, %q", p.parts["text/plain"], p.parts["text/html"])
	}
}

// TestCustomTemplateErrorsNameTheType: a template that fails on one event
// type is refused when the sender is made.
func TestCustomTemplateErrorsNameTheType(t *testing.T) {
	t.Parallel()
	_, err := notify.NewEmail(notify.SMTPConfig{URL: "smtp://127.0.0.1:1", From: "k@example.com",
		TextTemplate: `{{if eq .Type "api_key.expired"}}{{.NoSuchField}}{{end}}`})
	if err == nil || !strings.Contains(err.Error(), "api_key.expired notice") || !strings.Contains(err.Error(), "NoSuchField") {
		t.Fatalf("NewEmail = %v, want an error naming the type and the field", err)
	}
}

func TestLogNamesTheType(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := notify.NewLog(slog.New(slog.NewJSONHandler(&buf, nil)))
	n := lifecycleNotice(t, notify.EventRevoked)
	if err := l.Send(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["type"] != notify.EventRevoked || rec["event_id"] != "revoked_"+n.KeyID {
		t.Errorf("log line %v", rec)
	}
	if _, ok := rec["reveal_url"]; ok {
		t.Errorf("a revoked notice logs the reveal endpoint: %v", rec)
	}
}
