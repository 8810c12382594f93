package keys

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"
)

func TestHashSecretDefinition(t *testing.T) {
	t.Parallel()
	// The SQL side computes sha256(convert_to(secret, 'UTF8') || salt). This
	// vector is shared with it: in psql,
	//   SELECT encode(sha256(convert_to('abc', 'UTF8') || '\x000102030405060708090a0b0c0d0e0f'::bytea), 'hex');
	// and in a shell,
	//   printf 'abc\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f' | sha256sum
	const want = "d3cf82474f34c5da65cd1b10502d8919bb6fe7eadc7d7c1ffe8acf759ea824f2"
	if got := hex.EncodeToString(HashSecret("abc", seq(16))); got != want {
		t.Errorf("HashSecret(abc, 00..0f) = %s, want %s", got, want)
	}
	secret, salt := "3oDH4mEVFvp7u7ED6UzpF5eHPrBI5AHumY7UBpOQIJz", seq(64)[48:]
	sum := sha256.Sum256(append([]byte(secret), salt...))
	if got := HashSecret(secret, salt); !bytes.Equal(got, sum[:]) {
		t.Errorf("HashSecret is not sha256(secret || salt)")
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	now := testTime
	past, future := now.Add(-time.Hour), now.Add(time.Hour)
	k := mustGenerate(t, testGenerator(10), "sk")
	other := mustGenerate(t, testGenerator(11), "sk")
	// impostor carries k's id and prefix with other's secret, and a valid
	// checksum: what an attacker who knows an id can build.
	impostor, err := Parse(withCRC("sk_" + k.ID + "_" + other.secret))
	if err != nil {
		t.Fatal(err)
	}
	live := mustGenerate(t, testGenerator(10), "sk_live") // same id and secret, other prefix
	stored := func(mod func(*Stored)) *Stored {
		s := &Stored{Prefix: k.Prefix, Salt: k.Salt, Hash: k.Hash, HashVersion: k.HashVersion}
		if mod != nil {
			mod(s)
		}
		return s
	}
	right := mustParse(t, k.Plaintext())
	for _, tc := range []struct {
		name   string
		key    Parsed
		stored *Stored
		want   Status
	}{
		{"valid", right, stored(nil), StatusValid},
		{"valid, expiring later", right, stored(func(s *Stored) { s.ExpiresAt = &future }), StatusValid},
		{"wrong secret", impostor, stored(nil), StatusNotFound},
		{"another key's row", mustParse(t, other.Plaintext()), stored(nil), StatusNotFound},
		{"unknown id", right, nil, StatusNotFound},
		{"unknown id, zero key", Parsed{}, nil, StatusNotFound},
		{"zero key", Parsed{}, stored(nil), StatusNotFound},
		{"other prefix", mustParse(t, live.Plaintext()), stored(nil), StatusNotFound},
		{"unknown hash version", right, stored(func(s *Stored) { s.HashVersion = 2 }), StatusNotFound},
		{"no hash version", right, stored(func(s *Stored) { s.HashVersion = 0 }), StatusNotFound},
		{"other salt", right, stored(func(s *Stored) { s.Salt = other.Salt }), StatusNotFound},
		{"truncated hash", right, stored(func(s *Stored) { s.Hash = k.Hash[:31] }), StatusNotFound},
		{"empty hash", right, stored(func(s *Stored) { s.Hash = nil }), StatusNotFound},
		{"revoked", right, stored(func(s *Stored) { s.RevokedAt = &past }), StatusRevoked},
		{"revoked, wrong secret", impostor, stored(func(s *Stored) { s.RevokedAt = &past }), StatusNotFound},
		{"revocation scheduled for later", right, stored(func(s *Stored) { s.RevokedAt = &future }), StatusValid},
		{"revoked and expired", right, stored(func(s *Stored) { s.RevokedAt = &past; s.ExpiresAt = &past }), StatusRevoked},
		{"expired", right, stored(func(s *Stored) { s.ExpiresAt = &past }), StatusExpired},
		{"expires this instant", right, stored(func(s *Stored) { s.ExpiresAt = &now }), StatusExpired},
		{"expired, wrong secret", impostor, stored(func(s *Stored) { s.ExpiresAt = &past }), StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := Verify(tc.key, tc.stored, now); got != tc.want {
				t.Errorf("Verify = %v, want %v", got, tc.want)
			}
		})
	}
}

func mustParse(t testing.TB, s string) Parsed {
	t.Helper()
	p, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStatusText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		s    Status
		want string
	}{
		{StatusValid, "valid"},
		{StatusNotFound, "not_found"},
		{StatusRevoked, "revoked"},
		{StatusExpired, "expired"},
		{StatusDisabled, "disabled"},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("Status(%d).String() = %q, want %q", int(tc.s), got, tc.want)
		}
		b, err := json.Marshal(tc.s)
		if err != nil || string(b) != `"`+tc.want+`"` {
			t.Errorf("json.Marshal(%v) = %s, %v", tc.s, b, err)
		}
		var back Status = -1
		if err := back.UnmarshalText([]byte(tc.want)); err != nil || back != tc.s {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", tc.want, back, err, tc.s)
		}
	}
	// The values are stored and compared as numbers: new ones go at the end.
	if StatusNotFound != 0 || StatusValid != 1 || StatusRevoked != 2 || StatusExpired != 3 || StatusDisabled != 4 {
		t.Error("a Status constant changed its value")
	}
	if got := Status(9).String(); got != "Status(9)" {
		t.Errorf("Status(9).String() = %q", got)
	}
	if _, err := json.Marshal(Status(9)); err == nil {
		t.Error("json.Marshal(Status(9)) succeeded")
	}
	var s Status
	if err := s.UnmarshalText([]byte("ok")); err == nil {
		t.Error(`UnmarshalText("ok") succeeded`)
	}
	if s != StatusNotFound {
		t.Errorf("zero Status = %v, want not_found", s)
	}
}
