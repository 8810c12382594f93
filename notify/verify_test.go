package notify_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyworker/keyworker/notify"
)

// signedRequest has the Webhook sign a real request and returns it as the
// receiver saw it.
func signedRequest(t *testing.T, secret string) (http.Header, []byte) {
	t.Helper()
	rc := newReceiver(t, secret, status(http.StatusOK))
	wh := newWebhook(t, notify.WebhookConfig{URL: rc.URL, Secret: secret})
	if err := wh.Send(t.Context(), testNotice(t)); err != nil {
		t.Fatal(err)
	}
	d := rc.received()[0]
	return d.header, d.body
}

func TestVerifyWebhook(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	header, body := signedRequest(t, secret)
	sent, err := strconv.ParseInt(header.Get("webhook-timestamp"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	sentAt := time.Unix(sent, 0)
	validSig := header.Get("webhook-signature")

	with := func(name, value string) http.Header {
		h := header.Clone()
		if value == "" {
			h.Del(name)
		} else {
			h.Set(name, value)
		}
		return h
	}
	tampered := append([]byte(nil), body...)
	tampered[len(tampered)/2] ^= 0x01

	tests := []struct {
		name    string
		secret  string
		header  http.Header
		body    []byte
		now     time.Time
		wantErr error // nil: accepted
	}{
		{"as sent", secret, header, body, sentAt, nil},
		{"at the edge of the tolerance", secret, header, body, sentAt.Add(time.Minute), nil},
		{"several signatures, one valid", secret, with("webhook-signature", "v1,AAAA v2,whatever "+validSig+" v1,!!!"), body, sentAt, nil},
		{"tampered body", secret, header, tampered, sentAt, notify.ErrWebhookSignature},
		{"extra byte", secret, header, append(body, ' '), sentAt, notify.ErrWebhookSignature},
		{"wrong secret", newSecret(t), header, body, sentAt, notify.ErrWebhookSignature},
		{"other id", secret, with("webhook-id", "notice_other"), body, sentAt, notify.ErrWebhookSignature},
		{"other timestamp", secret, with("webhook-timestamp", strconv.FormatInt(sent+1, 10)), body, sentAt, notify.ErrWebhookSignature},
		{"stale", secret, header, body, sentAt.Add(time.Minute + time.Second), notify.ErrWebhookTimestamp},
		{"from the future", secret, header, body, sentAt.Add(-time.Minute - time.Second), notify.ErrWebhookTimestamp},
		{"no timestamp", secret, with("webhook-timestamp", ""), body, sentAt, notify.ErrWebhookTimestamp},
		{"timestamp not a number", secret, with("webhook-timestamp", "yesterday"), body, sentAt, notify.ErrWebhookTimestamp},
		{"no signature", secret, with("webhook-signature", ""), body, sentAt, notify.ErrWebhookSignature},
		{"no id", secret, with("webhook-id", ""), body, sentAt, notify.ErrWebhookSignature},
		{"unversioned signature", secret, with("webhook-signature", strings.TrimPrefix(validSig, "v1,")), body, sentAt, notify.ErrWebhookSignature},
		{"other version only", secret, with("webhook-signature", "v2,"+strings.TrimPrefix(validSig, "v1,")), body, sentAt, notify.ErrWebhookSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := notify.VerifyWebhook(tt.secret, tt.header, tt.body, time.Minute, tt.now)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("VerifyWebhook = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("VerifyWebhook = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestVerifyWebhookDefaultTolerance(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	header, body := signedRequest(t, secret)
	sent, _ := strconv.ParseInt(header.Get("webhook-timestamp"), 10, 64)
	at := time.Unix(sent, 0)
	if err := notify.VerifyWebhook(secret, header, body, 0, at.Add(notify.DefaultVerifyTolerance)); err != nil {
		t.Errorf("at the default tolerance: %v", err)
	}
	if err := notify.VerifyWebhook(secret, header, body, 0, at.Add(notify.DefaultVerifyTolerance+time.Second)); !errors.Is(err, notify.ErrWebhookTimestamp) {
		t.Errorf("past the default tolerance: %v", err)
	}
}

func TestVerifyWebhookBadSecret(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	header, body := signedRequest(t, secret)
	bare := strings.TrimPrefix(secret, "whsec_")
	err := notify.VerifyWebhook(bare, header, body, time.Minute, time.Now())
	if err == nil || errors.Is(err, notify.ErrWebhookSignature) {
		t.Fatalf("VerifyWebhook with a bare secret = %v, want a secret error", err)
	}
	if strings.Contains(err.Error(), bare) {
		t.Errorf("error shows the secret: %v", err)
	}
}

// FuzzVerifyWebhook checks that VerifyWebhook accepts a request only when
// one of its signatures is the one the specification computes, and never
// panics on hostile headers.
func FuzzVerifyWebhook(f *testing.F) {
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	now := time.Unix(1_767_225_600, 0)
	sign := func(id, ts string, body []byte) string {
		mac := hmac.New(sha256.New, key)
		fmt.Fprintf(mac, "%s.%s.%s", id, ts, body)
		return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	f.Add("notice_1", ts, sign("notice_1", ts, []byte(`{}`)), []byte(`{}`))
	f.Add("notice_1", ts, "v1,AAAA v1,"+strings.Repeat("=", 44), []byte(`{}`))
	f.Add("", "-9223372036854775808", "v1,", []byte{})
	f.Add("x", "+"+ts, "v1 , v1,,", []byte("\x00"))
	f.Fuzz(func(t *testing.T, id, ts, sigs string, body []byte) {
		h := http.Header{}
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", ts)
		h.Set("webhook-signature", sigs)
		err := notify.VerifyWebhook(secret, h, body, time.Hour, now)
		if err != nil {
			return
		}
		want := sign(h.Get("webhook-id"), h.Get("webhook-timestamp"), body)
		for _, s := range strings.Fields(h.Get("webhook-signature")) {
			if s == want {
				return
			}
		}
		t.Fatalf("accepted id=%q ts=%q sigs=%q without a valid signature", id, ts, sigs)
	})
}
