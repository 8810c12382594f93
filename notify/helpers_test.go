package notify_test

import (
	"crypto/rand"
	"encoding/base64"
	"testing"
	"time"

	"github.com/keyworker/keyworker/notify"
)

// newSecret returns a fresh "whsec_" secret of 32 random bytes.
func newSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// testNotice returns a complete notice, distinct per call.
func testNotice(t *testing.T) notify.Notice {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	keyID := "2zV" + base64.RawURLEncoding.EncodeToString(b)
	created := time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)
	expires := created.AddDate(1, 0, 0)
	return notify.Notice{
		EventID:         "notice_" + keyID,
		KeyID:           keyID,
		UserID:          "6f1c0c3e-5b7a-4c53-9a53-0f3f1f8e2a11",
		Prefix:          "sk",
		Last4:           "x9Qz",
		CreatedAt:       created,
		ExpiresAt:       &expires,
		RevealURL:       "https://api.example.com/v1/keys/reveal",
		PickupURL:       "https://app.example.com/keys/pickup?key_id=" + keyID + "&from=email",
		RevealExpiresAt: created.Add(72 * time.Hour),
		Email:           "ada@example.com",
	}
}
