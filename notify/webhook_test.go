package notify_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/notify"
)

// delivery is one request as the receiver saw it, with the verdicts of both
// signature checks.
type delivery struct {
	header      http.Header
	body        []byte
	independent error // the test's own HMAC check
	library     error // notify.VerifyWebhook
}

// receiver is a webhook endpoint that records and verifies what it gets and
// answers as told.
type receiver struct {
	*httptest.Server
	secret string

	mu         sync.Mutex
	deliveries []delivery
	respond    func(w http.ResponseWriter, r *http.Request)
}

func newReceiver(t *testing.T, secret string, respond func(w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{secret: secret, respond: respond}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		d := delivery{header: r.Header.Clone(), body: body}
		if err != nil {
			d.independent = err
			d.library = err
		} else {
			d.independent = testenv.CheckWebhookSignature(secret, r.Header, body, time.Minute)
			d.library = notify.VerifyWebhook(secret, r.Header, body, time.Minute, time.Now())
		}
		rc.mu.Lock()
		rc.deliveries = append(rc.deliveries, d)
		rc.mu.Unlock()
		if rc.respond != nil {
			rc.respond(w, r)
		}
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) received() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.deliveries)
}

func status(code int, header ...string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(code)
		if code != http.StatusNoContent && code != http.StatusNotModified {
			_, _ = io.WriteString(w, "receiver says "+http.StatusText(code))
		}
	}
}

func newWebhook(t *testing.T, cfg notify.WebhookConfig) *notify.Webhook {
	t.Helper()
	wh, err := notify.NewWebhook(cfg)
	if err != nil {
		t.Fatalf("NewWebhook: %v", err)
	}
	return wh
}

func TestWebhookDeliversSignedNoticeOn2xx(t *testing.T) {
	t.Parallel()
	for _, code := range []int{http.StatusOK, http.StatusAccepted, http.StatusNoContent} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			t.Parallel()
			secret := newSecret(t)
			rc := newReceiver(t, secret, status(code))
			wh := newWebhook(t, notify.WebhookConfig{URL: rc.URL + "/hooks/keys", Secret: secret})
			n := testNotice(t)

			if err := wh.Send(t.Context(), n); err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := rc.received()
			if len(got) != 1 {
				t.Fatalf("receiver got %d requests, want 1", len(got))
			}
			d := got[0]
			if d.independent != nil {
				t.Errorf("independent signature check: %v", d.independent)
			}
			if d.library != nil {
				t.Errorf("VerifyWebhook: %v", d.library)
			}
			if id := d.header.Get("webhook-id"); id != n.EventID {
				t.Errorf("webhook-id = %q, want %q", id, n.EventID)
			}
			if ct := d.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if ua := d.header.Get("User-Agent"); ua != notify.DefaultUserAgent {
				t.Errorf("User-Agent = %q, want %q", ua, notify.DefaultUserAgent)
			}
			if !strings.HasPrefix(d.header.Get("webhook-signature"), "v1,") {
				t.Errorf("webhook-signature = %q, want v1,...", d.header.Get("webhook-signature"))
			}
			checkPayload(t, d.body, n)
			if bytes.Contains(d.body, []byte(secret)) || bytes.Contains(d.body, []byte(strings.TrimPrefix(secret, "whsec_"))) {
				t.Error("payload contains the webhook secret")
			}
		})
	}
}

// checkPayload checks the body is exactly the documented event: these keys,
// these values, nothing more (so no secret can ride along).
func checkPayload(t *testing.T, body []byte, n notify.Notice) {
	t.Helper()
	var payload map[string]json.RawMessage
	if err := json.Unmarshal(body, &payload); err != nil {
		t.Fatalf("payload is not JSON: %v\n%s", err, body)
	}
	if keys := sortedKeys(payload); !slices.Equal(keys, []string{"data", "timestamp", "type"}) {
		t.Errorf("payload keys = %v", keys)
	}
	var data map[string]any
	if err := json.Unmarshal(payload["data"], &data); err != nil {
		t.Fatalf("data: %v", err)
	}
	wantKeys := []string{"created_at", "expires_at", "key_id", "last4", "pickup_url", "prefix", "reveal_expires_at", "reveal_url", "user_id"}
	if keys := sortedKeys(data); !slices.Equal(keys, wantKeys) {
		t.Errorf("data keys = %v, want exactly %v", keys, wantKeys)
	}
	var typ, ts string
	_ = json.Unmarshal(payload["type"], &typ)
	_ = json.Unmarshal(payload["timestamp"], &ts)
	if typ != "api_key.created" {
		t.Errorf("type = %q", typ)
	}
	if parsed, err := time.Parse(time.RFC3339, ts); err != nil || !parsed.Equal(n.CreatedAt) {
		t.Errorf("timestamp = %q (%v), want RFC 3339 of %v", ts, err, n.CreatedAt)
	}
	want := map[string]string{
		"key_id":            n.KeyID,
		"user_id":           n.UserID,
		"prefix":            n.Prefix,
		"last4":             n.Last4,
		"reveal_url":        n.RevealURL,
		"pickup_url":        n.PickupURL,
		"created_at":        n.CreatedAt.Format(time.RFC3339),
		"expires_at":        n.ExpiresAt.Format(time.RFC3339),
		"reveal_expires_at": n.RevealExpiresAt.Format(time.RFC3339),
	}
	for k, v := range want {
		if data[k] != v {
			t.Errorf("data.%s = %v, want %q", k, data[k], v)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func TestWebhookNoExpirySendsNull(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	rc := newReceiver(t, secret, status(http.StatusOK))
	wh := newWebhook(t, notify.WebhookConfig{URL: rc.URL, Secret: secret})
	n := testNotice(t)
	n.ExpiresAt = nil
	if err := wh.Send(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	var payload struct {
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal(rc.received()[0].body, &payload); err != nil {
		t.Fatal(err)
	}
	if v, ok := payload.Data["expires_at"]; !ok || v != nil {
		t.Errorf("expires_at = %v (present %v), want null", v, ok)
	}
}

func TestWebhookIDAndBodyStableAcrossRetries(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	var calls int
	var mu sync.Mutex
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		c := calls
		mu.Unlock()
		if c < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	wh := newWebhook(t, notify.WebhookConfig{URL: rc.URL, Secret: secret})
	n := testNotice(t)
	for i := range 3 {
		err := wh.Send(t.Context(), n)
		if i < 2 && err == nil {
			t.Fatalf("attempt %d: want an error from a 503", i+1)
		}
		if i == 2 && err != nil {
			t.Fatalf("attempt 3: %v", err)
		}
	}
	got := rc.received()
	if len(got) != 3 {
		t.Fatalf("receiver got %d requests, want 3", len(got))
	}
	for i, d := range got {
		if id := d.header.Get("webhook-id"); id != n.EventID {
			t.Errorf("attempt %d: webhook-id = %q, want %q", i+1, id, n.EventID)
		}
		if !bytes.Equal(d.body, got[0].body) {
			t.Errorf("attempt %d: body differs from the first:\n%s\n%s", i+1, d.body, got[0].body)
		}
		if d.independent != nil || d.library != nil {
			t.Errorf("attempt %d: signature: %v / %v", i+1, d.independent, d.library)
		}
	}
}

func TestWebhookRetryableAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		respond   func(w http.ResponseWriter, r *http.Request)
		status    string
		wantAfter func(time.Duration) bool
	}{
		{"500", status(500), "500 Internal Server Error", zero},
		{"503", status(503), "503 Service Unavailable", zero},
		{"408", status(408), "408 Request Timeout", zero},
		{"425", status(425), "425 Too Early", zero},
		{"429 no Retry-After", status(429), "429 Too Many Requests", zero},
		{"429 Retry-After seconds", status(429, "Retry-After", "7"), "429 Too Many Requests", exactly(7 * time.Second)},
		{"503 Retry-After HTTP-date", func(w http.ResponseWriter, r *http.Request) {
			status(503, "Retry-After", time.Now().Add(30*time.Second).UTC().Format(http.TimeFormat))(w, r)
		}, "503 Service Unavailable", between(25*time.Second, 30*time.Second)},
		{"503 Retry-After capped", status(503, "Retry-After", "86400"), "503 Service Unavailable", exactly(notify.MaxRetryAfter)},
		{"503 Retry-After garbage", status(503, "Retry-After", "soon"), "503 Service Unavailable", zero},
		{"599 unknown 5xx", status(599), "599", zero},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			secret := newSecret(t)
			rc := newReceiver(t, secret, tt.respond)
			wh := newWebhook(t, notify.WebhookConfig{URL: rc.URL + "/hook", Secret: secret})

			err := wh.Send(t.Context(), testNotice(t))
			var re *notify.RetryableError
			if !errors.As(err, &re) {
				t.Fatalf("Send = %v, want a RetryableError", err)
			}
			var pe *notify.PermanentError
			if errors.As(err, &pe) {
				t.Errorf("error is also a PermanentError: %v", err)
			}
			if !tt.wantAfter(re.RetryAfter) {
				t.Errorf("RetryAfter = %s", re.RetryAfter)
			}
			want := fmt.Sprintf("webhook %s/hook answered %s", rc.URL, tt.status)
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
			if !strings.Contains(err.Error(), "temporary failure") {
				t.Errorf("error %q does not say it is temporary", err)
			}
		})
	}
}

func zero(d time.Duration) bool { return d == 0 }

func exactly(want time.Duration) func(time.Duration) bool {
	return func(d time.Duration) bool { return d == want }
}

func between(lo, hi time.Duration) func(time.Duration) bool {
	return func(d time.Duration) bool { return d >= lo && d <= hi }
}

func TestWebhookPermanentAnswers(t *testing.T) {
	t.Parallel()
	for _, code := range []int{400, 401, 403, 404, 410, 422, 301, 307} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			t.Parallel()
			secret := newSecret(t)
			// A redirect points at a second receiver that must never be hit.
			elsewhere := newReceiver(t, secret, status(http.StatusOK))
			rc := newReceiver(t, secret, status(code, "Location", elsewhere.URL, "Retry-After", "5"))
			wh := newWebhook(t, notify.WebhookConfig{URL: rc.URL + "/hook", Secret: secret})

			err := wh.Send(t.Context(), testNotice(t))
			var pe *notify.PermanentError
			if !errors.As(err, &pe) {
				t.Fatalf("Send = %v, want a PermanentError", err)
			}
			var re *notify.RetryableError
			if errors.As(err, &re) {
				t.Errorf("error is also a RetryableError: %v", err)
			}
			want := fmt.Sprintf("webhook %s/hook answered %d %s", rc.URL, code, http.StatusText(code))
			if !strings.Contains(err.Error(), want) || !strings.HasSuffix(err.Error(), "permanent failure, not retried") {
				t.Errorf("error = %q, want it to contain %q and end in the verdict", err, want)
			}
			if n := len(elsewhere.received()); n != 0 {
				t.Errorf("redirect was followed: %d requests elsewhere", n)
			}
		})
	}
}

func TestWebhookErrorMessageIsBoundedAndClean(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, "upstream\r\nX-Injected: yes\x1b[31m"+strings.Repeat("z", 10_000))
	})
	wh := newWebhook(t, notify.WebhookConfig{URL: rc.URL, Secret: secret})
	err := wh.Send(t.Context(), testNotice(t))
	if err == nil {
		t.Fatal("want an error")
	}
	msg := err.Error()
	if strings.ContainsFunc(msg, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		t.Errorf("error has control characters: %q", msg)
	}
	if !strings.Contains(msg, "upstream X-Injected: yes") {
		t.Errorf("error lost the start of the body: %q", msg)
	}
	if len(msg) > 1400 {
		t.Errorf("error is %d bytes, want the body cut near 1 KiB", len(msg))
	}
}

func TestWebhookErrorsHideSecrets(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	rc := newReceiver(t, secret, status(http.StatusInternalServerError))
	u := strings.Replace(rc.URL, "http://", "http://hookuser:hookpass@", 1) + "/hook?token=tok3n"
	wh := newWebhook(t, notify.WebhookConfig{URL: u, Secret: secret})

	err := wh.Send(t.Context(), testNotice(t))
	if err == nil {
		t.Fatal("want an error")
	}
	got := rc.received()
	if len(got) != 1 || got[0].library != nil {
		t.Fatalf("receiver: %+v", got)
	}
	for _, s := range []string{"hookpass", "tok3n", secret, strings.TrimPrefix(secret, "whsec_"), got[0].header.Get("webhook-signature")} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q contains %q", err, s)
		}
	}
}

func TestWebhookTimeoutIsRetryable(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	release := make(chan struct{})
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request) {
		select { // hang until the client gives up
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before rc.Close
	wh := newWebhook(t, notify.WebhookConfig{URL: rc.URL, Secret: secret, Timeout: 100 * time.Millisecond})

	start := time.Now()
	err := wh.Send(t.Context(), testNotice(t))
	var re *notify.RetryableError
	if !errors.As(err, &re) {
		t.Fatalf("Send = %v, want a RetryableError", err)
	}
	if !strings.Contains(err.Error(), "timed out after 100ms") {
		t.Errorf("error %q does not name the timeout", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Send took %s with a 100ms timeout", elapsed)
	}
}

func TestWebhookConnectionRefusedIsRetryable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	wh := newWebhook(t, notify.WebhookConfig{URL: "http://" + addr + "/hook", Secret: newSecret(t)})

	err = wh.Send(t.Context(), testNotice(t))
	var re *notify.RetryableError
	if !errors.As(err, &re) {
		t.Fatalf("Send = %v, want a RetryableError", err)
	}
	if !strings.Contains(err.Error(), "http://"+addr+"/hook") {
		t.Errorf("error %q does not name the webhook", err)
	}
}

func TestWebhookCallerCancellation(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	rc := newReceiver(t, secret, status(http.StatusOK))
	wh := newWebhook(t, notify.WebhookConfig{URL: rc.URL, Secret: secret})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	err := wh.Send(ctx, testNotice(t))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Send = %v, want it to wrap context.Canceled", err)
	}
	if len(rc.received()) != 0 {
		t.Error("a cancelled Send reached the receiver")
	}
}

func TestWebhookRejectsIncompleteNotice(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	rc := newReceiver(t, secret, status(http.StatusOK))
	wh := newWebhook(t, notify.WebhookConfig{URL: rc.URL, Secret: secret})
	n := testNotice(t)
	n.EventID = ""

	err := wh.Send(t.Context(), n)
	var pe *notify.PermanentError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "EventID") {
		t.Errorf("Send = %v, want a PermanentError naming EventID", err)
	}
	if len(rc.received()) != 0 {
		t.Error("an incomplete notice reached the receiver")
	}
}

func TestWebhookUsesGivenClientWithoutChangingIt(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	rc := newReceiver(t, secret, status(http.StatusOK))
	client := rc.Client()
	wh := newWebhook(t, notify.WebhookConfig{URL: rc.URL, Secret: secret, Client: client, UserAgent: "acme-keys/2"})
	if err := wh.Send(t.Context(), testNotice(t)); err != nil {
		t.Fatal(err)
	}
	if client.CheckRedirect != nil {
		t.Error("NewWebhook changed the caller's http.Client")
	}
	if ua := rc.received()[0].header.Get("User-Agent"); ua != "acme-keys/2" {
		t.Errorf("User-Agent = %q", ua)
	}
}

func TestNewWebhookValidation(t *testing.T) {
	t.Parallel()
	good := newSecret(t)
	short := "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 16))
	long := "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 65))
	tests := []struct {
		name string
		cfg  notify.WebhookConfig
		want string // in the error; "" means valid
	}{
		{"valid", notify.WebhookConfig{URL: "https://hooks.example.com/k", Secret: good}, ""},
		{"24 bytes", notify.WebhookConfig{URL: "https://h/k", Secret: "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 24))}, ""},
		{"64 bytes", notify.WebhookConfig{URL: "https://h/k", Secret: "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 64))}, ""},
		{"no URL", notify.WebhookConfig{Secret: good}, "URL is required"},
		{"bad scheme", notify.WebhookConfig{URL: "ftp://h/k", Secret: good}, `URL must use http or https, got scheme "ftp"`},
		{"no host", notify.WebhookConfig{URL: "https:///k", Secret: good}, "URL must have a host"},
		{"unparsable", notify.WebhookConfig{URL: "https://u:hunter2@h:port/k", Secret: good}, "URL is not a valid URL"},
		{"no secret", notify.WebhookConfig{URL: "https://h/k"}, "Secret is required"},
		{"no prefix", notify.WebhookConfig{URL: "https://h/k", Secret: strings.TrimPrefix(good, "whsec_")}, `Secret must start with "whsec_"`},
		{"not base64", notify.WebhookConfig{URL: "https://h/k", Secret: "whsec_not*base64*at*all"}, "standard base64"},
		{"too short", notify.WebhookConfig{URL: "https://h/k", Secret: short}, "between 24 and 64 bytes, got 16"},
		{"too long", notify.WebhookConfig{URL: "https://h/k", Secret: long}, "between 24 and 64 bytes, got 65"},
		{"negative timeout", notify.WebhookConfig{URL: "https://h/k", Secret: good, Timeout: -time.Second}, "Timeout must be between 1ms and 5m0s, got -1s"},
		{"huge timeout", notify.WebhookConfig{URL: "https://h/k", Secret: good, Timeout: time.Hour}, "Timeout must be between"},
		{"user agent CRLF", notify.WebhookConfig{URL: "https://h/k", Secret: good, UserAgent: "a\r\nX: y"}, "UserAgent"},
		// Plain http leaves this machine only when explicitly allowed.
		{"http to a remote host", notify.WebhookConfig{URL: "http://hooks.example.com/k", Secret: good}, "URL is http:// to hooks.example.com, which is not this machine"},
		{"http to a remote address", notify.WebhookConfig{URL: "http://203.0.113.9:8080/k", Secret: good}, "set AllowHTTP"},
		{"http to a remote host, allowed", notify.WebhookConfig{URL: "http://hooks.example.com/k", Secret: good, AllowHTTP: true}, ""},
		{"http to localhost", notify.WebhookConfig{URL: "http://localhost:9000/k", Secret: good}, ""},
		{"http to 127.0.0.1", notify.WebhookConfig{URL: "http://127.0.0.1:9000/k", Secret: good}, ""},
		{"http to ::1", notify.WebhookConfig{URL: "http://[::1]:9000/k", Secret: good}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := notify.NewWebhook(tt.cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("NewWebhook: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewWebhook = %v, want an error containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows a password: %v", err)
			}
			if s := tt.cfg.Secret; len(s) > len("whsec_") && strings.Contains(err.Error(), strings.TrimPrefix(s, "whsec_")) {
				t.Errorf("error shows the secret: %v", err)
			}
			if strings.HasPrefix(tt.want, "Secret") && !strings.Contains(err.Error(), "openssl rand -base64 32") {
				t.Errorf("error %q does not say how to make a secret", err)
			}
		})
	}
}
