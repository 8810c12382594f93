package keys

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// testTime is the clock of deterministic generators.
var testTime = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// testGenerator returns a Generator whose randomness is a ChaCha8 stream
// seeded with seed and whose clock is stopped at testTime, so tests are
// reproducible. It is for tests only: ChaCha8 with a known seed is no
// source of secrets.
func testGenerator(seed byte) Generator {
	return Generator{
		Rand: rand.NewChaCha8([32]byte{seed}),
		Now:  func() time.Time { return testTime },
	}
}

// mustGenerate generates a key with g or fails the test.
func mustGenerate(t testing.TB, g Generator, prefix string) *Key {
	t.Helper()
	k, err := g.Generate(prefix)
	if err != nil {
		t.Fatalf("Generate(%q): %v", prefix, err)
	}
	return k
}

// assertNoSecret fails when out contains the plaintext, the secret, or any
// 8-character window of the secret.
func assertNoSecret(t *testing.T, what, out, plaintext, secret string) {
	t.Helper()
	if l := leak(out, plaintext, secret); l != "" {
		t.Errorf("%s contains %s: %s", what, l, out)
	}
}

// leak says which part of a key out contains, or returns "".
func leak(out, plaintext, secret string) string {
	if plaintext != "" && strings.Contains(out, plaintext) {
		return "the plaintext key"
	}
	for i := 0; i+8 <= len(secret); i++ {
		if strings.Contains(out, secret[i:i+8]) {
			return fmt.Sprintf("part of the secret (%q at offset %d)", secret[i:i+8], i)
		}
	}
	return ""
}

// seq returns n bytes 0, 1, 2, ...
func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func TestLeakDetectsPartsOfTheSecret(t *testing.T) {
	t.Parallel()
	// The redaction tests are only as good as leak.
	for _, tc := range []struct {
		out, plaintext, secret string
		leaks                  bool
	}{
		{"sk_id_ABCDEFGH12", "sk_id_ABCDEFGH12", "ABCDEFGH", true},
		{"prefix ABCDEFGHxyz", "", "zzABCDEFGHzz", true},
		{"prefix ABCDEFGxyz", "", "zzABCDEFGHzz", false},
		{"", "k", "zzABCDEFGHzz", false},
	} {
		if got := leak(tc.out, tc.plaintext, tc.secret) != ""; got != tc.leaks {
			t.Errorf("leak(%q, %q, %q) = %v, want %v", tc.out, tc.plaintext, tc.secret, got, tc.leaks)
		}
	}
}
