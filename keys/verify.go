package keys

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"time"
)

// HashVersion is the version of the hash scheme that HashSecret implements
// and Generate records in Key.HashVersion. Verify accepts only this version.
const HashVersion = 1

// HashSecret returns sha256(secret || salt): the UTF-8 bytes of the secret
// text (43 base62 characters, so plain ASCII) followed by the salt bytes. In
// SQL (PostgreSQL 11 or newer, no extension needed) the same value is
//
//	sha256(convert_to(secret, 'UTF8') || salt)
//
// Do not write digest(secret || salt, 'sha256'): text || bytea concatenates
// the salt's text form ('\x...'), not its bytes.
func HashSecret(secret string, salt []byte) []byte {
	h := sha256.New()
	_, _ = h.Write([]byte(secret))
	_, _ = h.Write(salt)
	return h.Sum(make([]byte, 0, sha256.Size))
}

// Status is the outcome of verifying a key. The zero Status is
// StatusNotFound, so a forgotten assignment never reads as valid.
type Status int

// Statuses of Verify, and of the SQL function verify_api_key, which uses the
// same names.
const (
	// StatusNotFound: no key with this id, or a wrong secret or prefix. The
	// two are indistinguishable on purpose.
	StatusNotFound Status = iota
	// StatusValid: the key exists, the secret is right, and it is neither
	// revoked nor expired.
	StatusValid
	// StatusRevoked: the secret is right but the key was revoked.
	StatusRevoked
	// StatusExpired: the secret is right but the key has expired.
	StatusExpired
	// StatusDisabled: the secret is right but the key is disabled (it can
	// be enabled again, unlike a revoked key).
	StatusDisabled
)

var statusNames = [...]string{
	StatusNotFound: "not_found",
	StatusValid:    "valid",
	StatusRevoked:  "revoked",
	StatusExpired:  "expired",
	StatusDisabled: "disabled",
}

// String returns "valid", "not_found", "revoked" or "expired", or
// "Status(n)" for a value that is none of them.
func (s Status) String() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// MarshalText encodes s as its String, for JSON and logs.
func (s Status) MarshalText() ([]byte, error) {
	if s < 0 || int(s) >= len(statusNames) {
		return nil, fmt.Errorf("marshaling key status: unknown status %d", int(s))
	}
	return []byte(statusNames[s]), nil
}

// UnmarshalText decodes a status name, e.g. the status column that the SQL
// function verify_api_key returns.
func (s *Status) UnmarshalText(b []byte) error {
	for i, name := range statusNames {
		if string(b) == name {
			*s = Status(i)
			return nil
		}
	}
	return fmt.Errorf("unmarshaling key status: %q is not one of valid, not_found, revoked, expired", b)
}

// Stored is what the database holds about a key, as far as verification
// needs it.
type Stored struct {
	// Prefix is the prefix the key was made with; the presented key must
	// carry the same one.
	Prefix string
	// Salt and Hash are Key.Salt and Key.Hash.
	Salt []byte
	Hash []byte
	// HashVersion is Key.HashVersion; only HashVersion is accepted.
	HashVersion int
	// ExpiresAt, when set, is the instant from which the key is expired.
	ExpiresAt *time.Time
	// RevokedAt, when set, is the instant from which the key is revoked. A
	// future time is a scheduled revocation (a rotated key's overlap): the
	// key stays valid until then.
	RevokedAt *time.Time
}

// dummySalt and dummyHash stand in for the row of an unknown id, so that
// an unknown id costs the same hashing and comparison as a known one.
var (
	dummySalt = [SaltSize]byte{0x6b, 0x65, 0x79, 0x77, 0x6f, 0x72, 0x6b, 0x65, 0x72, 0x2d, 0x64, 0x75, 0x6d, 0x6d, 0x79, 0x00}
	dummyHash [sha256.Size]byte
)

// Verify checks the parsed key p against stored, the row found by p.ID(),
// or nil when there is none, at time now.
//
// The secret is compared in constant time. A nil stored does the same
// hashing and comparison against a fixed dummy salt and hash, so an unknown
// id and a wrong secret take the same work and both give StatusNotFound, as
// do a different prefix and an unknown HashVersion. Only a key whose secret
// is right is reported as StatusRevoked (RevokedAt set and not after now)
// or StatusExpired (ExpiresAt set and not after now), in that order;
// otherwise it is StatusValid. The SQL function verify_api_key applies the
// same rules.
func Verify(p Parsed, stored *Stored, now time.Time) Status {
	salt, want, prefix := dummySalt[:], dummyHash[:], p.Prefix()
	if stored != nil {
		salt, want, prefix = stored.Salt, stored.Hash, stored.Prefix
	}
	got := HashSecret(p.Secret(), salt)
	match := subtle.ConstantTimeCompare(got, want) &
		subtle.ConstantTimeCompare([]byte(p.Prefix()), []byte(prefix))
	if stored == nil || match != 1 || stored.HashVersion != HashVersion || p.token == "" {
		return StatusNotFound
	}
	switch {
	case stored.RevokedAt != nil && !now.Before(*stored.RevokedAt):
		return StatusRevoked
	case stored.ExpiresAt != nil && !now.Before(*stored.ExpiresAt):
		return StatusExpired
	}
	return StatusValid
}
