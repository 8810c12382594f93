package accesstoken

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestSignHS256(t *testing.T) {
	t.Parallel()
	secret := []byte(testSecret)
	now := time.Now()

	token, err := SignHS256(secret, userClaims(now))
	if err != nil {
		t.Fatalf("SignHS256: %v", err)
	}
	v, err := New(Config{JWTSecret: secret})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	claims, err := v.Verify(context.Background(), token)
	if err != nil {
		t.Fatalf("Verify of a SignHS256 token: %v", err)
	}
	if claims.Subject != testUserID {
		t.Errorf("Subject = %q, want %q", claims.Subject, testUserID)
	}

	// A different secret does not verify it.
	other, err := New(Config{JWTSecret: []byte(strings.Repeat("o", 32))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := other.Verify(context.Background(), token); err == nil {
		t.Error("Verify with another secret: got nil error")
	}

	if _, err := SignHS256(nil, userClaims(now)); err == nil {
		t.Error("SignHS256 with an empty secret: got nil error")
	}
	if _, err := SignHS256(secret, map[string]any{"bad": func() {}}); err == nil {
		t.Error("SignHS256 with an unencodable claim: got nil error")
	}
}
