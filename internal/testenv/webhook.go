package testenv

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// CheckWebhookSignature verifies a Standard Webhooks signature from the
// specification, sharing no code with package notify, so that a test of a
// sender does not trust the sender's own signing: HMAC-SHA256 keyed with the
// base64-decoded secret (after "whsec_") over
// "<webhook-id>.<webhook-timestamp>.<body>", base64 in one of the
// space-separated "v1,<sig>" entries of webhook-signature, and a timestamp
// within maxSkew of now. It returns nil or what is wrong.
func CheckWebhookSignature(secret string, h http.Header, body []byte, maxSkew time.Duration) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return fmt.Errorf("decoding the test's webhook secret: %w", err)
	}
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return fmt.Errorf("missing webhook headers: id %q, timestamp %q, signature %q", id, ts, sigs)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q: %w", ts, err)
	}
	if d := time.Since(time.Unix(sec, 0)); d > maxSkew || d < -maxSkew {
		return fmt.Errorf("webhook-timestamp %d is %s away", sec, d)
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.", id, ts)
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, sig := range strings.Fields(sigs) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return nil
		}
	}
	return fmt.Errorf("no signature in %q matches", sigs)
}
