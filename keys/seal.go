package keys

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// SealingKeySize is the length in bytes of a sealing key (AES-256).
const SealingKeySize = 32

// Box versions: the first byte of a box.
const (
	// sealV1 boxes (made before fingerprints) are the version byte, the
	// nonce and the ciphertext; the associated data is the version byte and
	// the key id. Open still opens them; Seal no longer makes them.
	sealV1 byte = 1
	// sealV2 boxes add the sealing key's fingerprint after the version
	// byte and bind the user id too.
	sealV2 byte = 2
)

// fingerprintSize is the length in bytes of a sealing key's fingerprint,
// as a version 2 box carries it.
const fingerprintSize = 8

// fingerprintLabel is the message of the fingerprint's HMAC.
const fingerprintLabel = "keyworker sealing key fingerprint v1"

// Sentinel errors of Sealer.Open.
var (
	// ErrOpen is the error of Sealer.Open for any box it cannot open: a
	// wrong key id or user id, a tampered, truncated or unknown box, or a
	// sealing key it does not hold. Which of the first ones it was is not
	// told apart, on purpose; a box sealed under a key the Sealer does not
	// hold is also ErrSealedUnderAnotherKey.
	ErrOpen = errors.New("opening sealed key: wrong sealing key, wrong key id or user id, or damaged box")

	// ErrSealedUnderAnotherKey means the box was sealed under a sealing key
	// the Sealer does not hold: no retry can open it, only a worker started
	// with that key (as the current or the previous key). The error is a
	// *SealedUnderAnotherKeyError, which names the fingerprints.
	ErrSealedUnderAnotherKey = errors.New("sealed under another sealing key")
)

// SealedUnderAnotherKeyError is Open's error for a box sealed under a key
// the Sealer does not hold. It wraps ErrSealedUnderAnotherKey and ErrOpen.
// It names fingerprints only, never a key.
type SealedUnderAnotherKeyError struct {
	// Box is the fingerprint of the key that sealed the box; empty for a
	// version 1 box, which does not record it (and which then opened under
	// none of the Sealer's keys: another key, or damage).
	Box string
	// Have are the Sealer's fingerprints, the current key's first.
	Have []string
}

func (e *SealedUnderAnotherKeyError) Error() string {
	have := strings.Join(e.Have, ", previous ")
	if e.Box == "" {
		return fmt.Sprintf("sealed under another sealing key: the box predates recorded fingerprints and opens under none of this worker's keys (fingerprint %s), so another key sealed it (or it is damaged)", have)
	}
	return fmt.Sprintf("sealed under another sealing key: the box was sealed under the key of fingerprint %s, this worker has %s; start it with that key (as the current or the previous sealing key)", e.Box, have)
}

// Unwrap makes errors.Is match ErrSealedUnderAnotherKey and ErrOpen.
func (e *SealedUnderAnotherKeyError) Unwrap() []error {
	return []error{ErrSealedUnderAnotherKey, ErrOpen}
}

// Fingerprint returns the fingerprint of a sealing key: the first 8 bytes of
// HMAC-SHA256(key, "keyworker sealing key fingerprint v1"), as 16 lowercase
// hex digits. It identifies the key in logs, error messages, the database
// and the header of the boxes it seals, and reveals nothing about it: it is
// a pseudorandom function of a 256-bit random key, which no one can guess
// to test against it.
func Fingerprint(key []byte) string {
	fp := fingerprint(key)
	return hex.EncodeToString(fp[:])
}

func fingerprint(key []byte) [fingerprintSize]byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(fingerprintLabel))
	var fp [fingerprintSize]byte
	copy(fp[:], m.Sum(nil))
	return fp
}

// ParseSealingKey decodes a sealing key from base64: standard or URL
// alphabet, with or without padding, surrounding whitespace ignored (a key
// read from a file usually ends with a newline). It must decode to exactly
// SealingKeySize bytes. The error says how many bytes it got and never
// contains the key.
func ParseSealingKey(b64 string) ([]byte, error) {
	s := strings.TrimSpace(b64)
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding,
	} {
		key, err := enc.Strict().DecodeString(s)
		if err != nil {
			continue
		}
		if len(key) != SealingKeySize {
			return nil, fmt.Errorf("sealing key must be %d bytes of base64 (e.g. openssl rand -base64 32), got %d bytes", SealingKeySize, len(key))
		}
		return key, nil
	}
	return nil, fmt.Errorf("sealing key must be %d bytes of base64 (e.g. openssl rand -base64 32), got text that is not base64", SealingKeySize)
}

// GenerateSealingKey returns a new random sealing key as standard base64,
// the form ParseSealingKey reads, for operators and `worker demo`.
func GenerateSealingKey() (string, error) {
	key := make([]byte, SealingKeySize)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("generating sealing key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(key), nil
}

// Sealer encrypts key plaintexts that wait for pick-up, with AES-256-GCM
// under a sealing key that lives with the worker, not in the database. It
// seals under its current key and opens boxes of the current key and of
// previous keys (rotation). A Sealer is safe for concurrent use.
//
// A box Seal makes (version 2) is one version byte (2), the 8-byte
// fingerprint of the sealing key (see Fingerprint), a random 12-byte nonce,
// and the ciphertext with its 16-byte tag. The associated data is the
// version byte, the fingerprint, the key id's length (a uvarint), the key
// id and the lowercased user id, so a box opens only for the key and the user it was
// sealed for: a box copied to another row, or to another user, fails. Open
// picks the sealing key by the fingerprint. Version 1 boxes (one version
// byte, the nonce, the ciphertext; the version byte and the key id as
// associated data) still open, under whichever key opens them.
//
// With random nonces, one sealing key must not seal more than 2^32 boxes.
type Sealer struct {
	current  sealingKey
	previous []sealingKey
}

type sealingKey struct {
	fp   [fingerprintSize]byte
	aead cipher.AEAD
}

// NewSealer returns a Sealer that seals under key and also opens boxes
// sealed under the previous keys, each SealingKeySize bytes (see
// ParseSealingKey). A previous key equal to key, or given twice, is an
// error. It does not keep a reference to the keys.
func NewSealer(key []byte, previous ...[]byte) (*Sealer, error) {
	cur, err := newSealingKey(key)
	if err != nil {
		return nil, err
	}
	s := &Sealer{current: cur}
	seen := map[[fingerprintSize]byte]bool{cur.fp: true}
	for _, p := range previous {
		if len(p) != SealingKeySize {
			return nil, fmt.Errorf("previous sealing key must be %d bytes, got %d bytes", SealingKeySize, len(p))
		}
		k, err := newSealingKey(p)
		if err != nil {
			return nil, err
		}
		if seen[k.fp] {
			if k.fp == cur.fp {
				return nil, fmt.Errorf("previous sealing key is the current one (fingerprint %x): give the previous key only while rotating to a new one", k.fp)
			}
			return nil, fmt.Errorf("previous sealing key of fingerprint %x is given twice", k.fp)
		}
		seen[k.fp] = true
		s.previous = append(s.previous, k)
	}
	return s, nil
}

func newSealingKey(key []byte) (sealingKey, error) {
	if len(key) != SealingKeySize {
		return sealingKey{}, fmt.Errorf("sealing key must be %d bytes, got %d bytes", SealingKeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return sealingKey{}, fmt.Errorf("creating sealer: %w", err)
	}
	// The nonce is random and prepended to the ciphertext by Seal.
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return sealingKey{}, fmt.Errorf("creating sealer: %w", err)
	}
	return sealingKey{fp: fingerprint(key), aead: aead}, nil
}

// Fingerprint returns the current sealing key's fingerprint.
func (s *Sealer) Fingerprint() string { return hex.EncodeToString(s.current.fp[:]) }

// Fingerprints returns the fingerprints of every key the Sealer holds, the
// current key's first, then the previous keys' in the order given.
func (s *Sealer) Fingerprints() []string {
	out := []string{s.Fingerprint()}
	for _, p := range s.previous {
		out = append(out, hex.EncodeToString(p.fp[:]))
	}
	return out
}

// Seal encrypts plaintext for the key keyID of the user userID under the
// current sealing key and returns the box. keyID (at most 255 bytes) and
// userID must not be empty; userID is compared case-insensitively (a uuid's
// text).
func (s *Sealer) Seal(keyID, userID string, plaintext []byte) ([]byte, error) {
	if keyID == "" {
		return nil, errors.New("sealing key: key id is empty")
	}
	if len(keyID) > 255 {
		return nil, errors.New("sealing key: key id is longer than 255 bytes")
	}
	if userID == "" {
		return nil, errors.New("sealing key: user id is empty")
	}
	box := make([]byte, 0, 1+fingerprintSize+len(plaintext)+s.current.aead.Overhead())
	box = append(box, sealV2)
	box = append(box, s.current.fp[:]...)
	return s.current.aead.Seal(box, nil, plaintext, sealADv2(s.current.fp, keyID, userID)), nil
}

// Open decrypts a box that Seal made for keyID and userID (userID is not
// part of a version 1 box). A box sealed under a key the Sealer does not
// hold is a *SealedUnderAnotherKeyError; any other failure is ErrOpen. Open
// never panics, whatever box holds.
func (s *Sealer) Open(keyID, userID string, box []byte) ([]byte, error) {
	if len(box) == 0 {
		return nil, ErrOpen
	}
	switch box[0] {
	case sealV2:
		if len(box) < 1+fingerprintSize+s.current.aead.Overhead() || len(keyID) > 255 {
			return nil, ErrOpen
		}
		var fp [fingerprintSize]byte
		copy(fp[:], box[1:1+fingerprintSize])
		k, ok := s.key(fp)
		if !ok {
			return nil, &SealedUnderAnotherKeyError{Box: hex.EncodeToString(fp[:]), Have: s.Fingerprints()}
		}
		plaintext, err := k.aead.Open(nil, nil, box[1+fingerprintSize:], sealADv2(fp, keyID, userID))
		if err != nil {
			return nil, ErrOpen
		}
		return plaintext, nil
	case sealV1:
		if len(box) < 1+s.current.aead.Overhead() {
			return nil, ErrOpen
		}
		ad := append([]byte{sealV1}, keyID...)
		for _, k := range s.all() {
			if plaintext, err := k.aead.Open(nil, nil, box[1:], ad); err == nil {
				return plaintext, nil
			}
		}
		return nil, &SealedUnderAnotherKeyError{Have: s.Fingerprints()}
	}
	return nil, ErrOpen
}

// SealedByCurrent reports whether box is a version 2 box whose header names
// the current sealing key: what a re-seal would leave as it is. It does not
// check that the box opens.
func (s *Sealer) SealedByCurrent(box []byte) bool {
	return len(box) > fingerprintSize && box[0] == sealV2 && bytes.Equal(box[1:1+fingerprintSize], s.current.fp[:])
}

// BoxFingerprint returns the fingerprint a version 2 box records, and false
// for a box that records none (version 1, or not a box).
func BoxFingerprint(box []byte) (string, bool) {
	if len(box) <= fingerprintSize || box[0] != sealV2 {
		return "", false
	}
	return hex.EncodeToString(box[1 : 1+fingerprintSize]), true
}

func (s *Sealer) key(fp [fingerprintSize]byte) (sealingKey, bool) {
	for _, k := range s.all() {
		if k.fp == fp {
			return k, true
		}
	}
	return sealingKey{}, false
}

func (s *Sealer) all() []sealingKey {
	return append([]sealingKey{s.current}, s.previous...)
}

// sealADv2 is the associated data of a version 2 box: the version byte,
// the fingerprint, the key id's length and the key id, and the lowercased
// user id (the rest, so the encoding is unambiguous).
func sealADv2(fp [fingerprintSize]byte, keyID, userID string) []byte {
	ad := make([]byte, 0, 1+fingerprintSize+1+len(keyID)+len(userID))
	ad = append(ad, sealV2)
	ad = append(ad, fp[:]...)
	ad = binary.AppendUvarint(ad, uint64(len(keyID)))
	ad = append(ad, keyID...)
	return append(ad, strings.ToLower(userID)...)
}
