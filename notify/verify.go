package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultVerifyTolerance is the tolerance VerifyWebhook applies when given 0.
const DefaultVerifyTolerance = 5 * time.Minute

var (
	// ErrWebhookSignature is wrapped by VerifyWebhook's error when the
	// signature header is missing or no signature in it matches.
	ErrWebhookSignature = errors.New("webhook signature does not match")

	// ErrWebhookTimestamp is wrapped by VerifyWebhook's error when the
	// webhook-timestamp header is missing, malformed, or further from now
	// than the tolerance.
	ErrWebhookTimestamp = errors.New("webhook timestamp is not acceptable")
)

// VerifyWebhook checks a request signed as Webhook signs them, for receivers
// and tests. secret is the "whsec_" secret, headers and body the request as
// received. It accepts the request when webhook-timestamp is within tolerance
// of now (DefaultVerifyTolerance when tolerance is 0) and one of the
// space-separated "v1,<base64>" signatures in webhook-signature matches, by
// constant-time comparison. It returns nil on success, otherwise an error
// wrapping ErrWebhookTimestamp or ErrWebhookSignature (or describing a bad
// secret).
//
// It does not reuse the signing code, so a bug in one does not hide in the
// other.
func VerifyWebhook(secret string, headers http.Header, body []byte, tolerance time.Duration, now time.Time) error {
	key, err := decodeWebhookSecret(secret)
	if err != nil {
		return fmt.Errorf("verifying webhook: secret %w", err)
	}
	if tolerance <= 0 {
		tolerance = DefaultVerifyTolerance
	}

	id := headers.Get("webhook-id")
	if id == "" {
		return fmt.Errorf("verifying webhook: missing webhook-id header: %w", ErrWebhookSignature)
	}
	rawTimestamp := headers.Get("webhook-timestamp")
	sent, err := strconv.ParseInt(rawTimestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("verifying webhook: webhook-timestamp %q is not Unix seconds: %w", cleanText(rawTimestamp, 32), ErrWebhookTimestamp)
	}
	if tol, at := int64(tolerance/time.Second), now.Unix(); sent < at-tol || sent > at+tol {
		return fmt.Errorf("verifying webhook: webhook-timestamp %d is more than %s from now (%d): %w", sent, tolerance, at, ErrWebhookTimestamp)
	}

	// HMAC over "<id>.<timestamp>.<body>", exactly as received.
	signed := make([]byte, 0, len(id)+len(rawTimestamp)+len(body)+2)
	signed = append(signed, id...)
	signed = append(signed, '.')
	signed = append(signed, rawTimestamp...)
	signed = append(signed, '.')
	signed = append(signed, body...)
	mac := hmac.New(sha256.New, key)
	mac.Write(signed)
	expected := mac.Sum(nil)

	header := headers.Get("webhook-signature")
	if header == "" {
		return fmt.Errorf("verifying webhook: missing webhook-signature header: %w", ErrWebhookSignature)
	}
	for _, candidate := range strings.Fields(header) {
		version, encoded, ok := strings.Cut(candidate, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(encoded)
		if err != nil {
			continue
		}
		if hmac.Equal(got, expected) {
			return nil
		}
	}
	return fmt.Errorf("verifying webhook: %w", ErrWebhookSignature)
}
