package keys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// SealingKeySize is the length in bytes of a sealing key (AES-256).
const SealingKeySize = 32

// sealVersion is the first byte of every box Seal makes.
const sealVersion byte = 1

// ErrOpen is the error of Sealer.Open for any box it cannot open: a wrong
// sealing key, a wrong key id, a tampered, truncated or unknown box. The
// causes are not told apart, on purpose.
var ErrOpen = errors.New("opening sealed key: wrong sealing key, wrong key id, or damaged box")

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
// under a sealing key that lives with the worker, not in the database. A
// Sealer is safe for concurrent use.
//
// A box is one version byte (1), a random 12-byte nonce, and the
// ciphertext with its 16-byte tag. The associated data is the version byte
// followed by the key id, so a box opens only for the key it was sealed for:
// a box copied to another row fails. With random nonces, one sealing key
// must not seal more than 2^32 boxes.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer returns a Sealer for a SealingKeySize-byte key (see
// ParseSealingKey). It does not keep a reference to key.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != SealingKeySize {
		return nil, fmt.Errorf("sealing key must be %d bytes, got %d bytes", SealingKeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("creating sealer: %w", err)
	}
	// The nonce is random and prepended to the ciphertext by Seal.
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("creating sealer: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plaintext for the key keyID and returns the box. keyID must
// not be empty.
func (s *Sealer) Seal(keyID string, plaintext []byte) ([]byte, error) {
	if keyID == "" {
		return nil, errors.New("sealing key: key id is empty")
	}
	box := make([]byte, 1, 1+len(plaintext)+s.aead.Overhead())
	box[0] = sealVersion
	return s.aead.Seal(box, nil, plaintext, sealAD(keyID)), nil
}

// Open decrypts a box that Seal made for keyID. Any failure is ErrOpen;
// Open never panics, whatever box holds.
func (s *Sealer) Open(keyID string, box []byte) ([]byte, error) {
	if len(box) < 1+s.aead.Overhead() || box[0] != sealVersion {
		return nil, ErrOpen
	}
	plaintext, err := s.aead.Open(nil, nil, box[1:], sealAD(keyID))
	if err != nil {
		return nil, ErrOpen
	}
	return plaintext, nil
}

// sealAD is the associated data of a box: the version byte and the key id.
func sealAD(keyID string) []byte {
	ad := make([]byte, 0, 1+len(keyID))
	ad = append(ad, sealVersion)
	return append(ad, keyID...)
}
