package keys

import (
	"crypto/rand"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"time"

	"github.com/segmentio/ksuid"
)

// Sizes of the parts of a key.
const (
	// SaltSize is the length in bytes of Key.Salt.
	SaltSize = 16
	// tailLen is everything after the prefix: "_" id "_" secret crc.
	tailLen = 1 + idLen + 1 + secretLen + crcLen
	// MinLen and MaxLen bound the length of a key (a 1-byte and a 32-byte
	// prefix).
	MinLen = 1 + tailLen
	MaxLen = MaxPrefixLen + tailLen
)

// ksuidEpoch is KSUID's epoch (2014-05-13T16:53:20Z), in Unix seconds; a
// KSUID counts seconds from it in 32 bits.
const ksuidEpoch = 1_400_000_000

// Key is a newly generated API key: its public parts, the values to store,
// and the plaintext, which is for its owner only.
//
// A Key never prints its plaintext: String, Format (every fmt verb, %#v
// included), GoString and LogValue show the redacted form
// "<prefix>_<id>_…<last4>", and encoding/json sees only the exported fields,
// none of which holds the secret. The plaintext is available only from
// Plaintext.
type Key struct {
	// ID is the key's KSUID: 27 base62 characters, time-sortable, public. It
	// is the row id.
	ID string
	// Prefix is the prefix the key was generated with, e.g. "sk".
	Prefix string
	// Salt is SaltSize random bytes, stored next to Hash.
	Salt []byte
	// Hash is HashSecret(secret, Salt): what is stored instead of the secret.
	Hash []byte
	// HashVersion is the version of the hash scheme of Hash (HashVersion).
	HashVersion int
	// Last4 is the last 4 characters of the key (checksum digits, so they
	// tell nothing about the secret). It may be shown and logged.
	Last4 string

	token  string
	secret string
}

// Plaintext returns the whole key, e.g. "sk_<id>_<secret><crc>". It is the
// only way to get it: show it to its owner once, seal it, never log or store
// it.
func (k Key) Plaintext() string { return k.token }

// String returns the redacted form of the key, "<prefix>_<id>_…<last4>",
// which identifies it and may be logged.
func (k Key) String() string { return redacted(k.Prefix, k.ID, k.Last4) }

// GoString returns a Go-syntax representation without the secret, for %#v.
func (k Key) GoString() string {
	return fmt.Sprintf("keys.Key{ID:%q, Prefix:%q, Last4:%q, HashVersion:%d}", k.ID, k.Prefix, k.Last4, k.HashVersion)
}

// Format makes every fmt verb print the redacted form (GoString for %#v).
func (k Key) Format(f fmt.State, verb rune) { format(f, verb, k.String(), k.GoString()) }

// LogValue logs the key as a group of id, prefix and last4.
func (k Key) LogValue() slog.Value { return logValue(k.ID, k.Prefix, k.Last4) }

// redacted is the form in which keys are shown: the id and the last 4
// characters, never the secret.
func redacted(prefix, id, last4 string) string {
	return prefix + "_" + id + "_…" + last4
}

// format writes s (or goString for %#v) under any fmt verb, keeping the
// verb's flags, width and precision.
func format(f fmt.State, verb rune, s, goString string) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, goString)
		return
	}
	_, _ = fmt.Fprintf(f, fmt.FormatString(f, verb), s)
}

func logValue(id, prefix, last4 string) slog.Value {
	return slog.GroupValue(
		slog.String("id", id),
		slog.String("prefix", prefix),
		slog.String("last4", last4),
	)
}

// Generator makes keys from a source of randomness and a clock. The zero
// value is ready to use: crypto/rand and the system clock. A Generator is
// safe for concurrent use when its Rand is (crypto/rand.Reader is).
type Generator struct {
	// Rand supplies the KSUID payload, the secret and the salt. Defaults to
	// crypto/rand.Reader. Tests inject a fixed reader; production code must
	// not.
	Rand io.Reader
	// Now is the clock of the KSUID's timestamp. Defaults to time.Now.
	Now func() time.Time
}

// Generate returns a new key with the given prefix, using crypto/rand and
// the system clock. See Generator.Generate.
func Generate(prefix string) (*Key, error) {
	return Generator{}.Generate(prefix)
}

// Generate returns a new key "<prefix>_<ksuid>_<secret><crc>" with its salt
// and hash. It fails when the prefix is invalid (the error wraps ErrPrefix),
// when Rand fails, or when the clock is outside KSUID's range (2014 to
// 2150).
func (g Generator) Generate(prefix string) (*Key, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	r := g.Rand
	if r == nil {
		r = rand.Reader
	}
	now := time.Now
	if g.Now != nil {
		now = g.Now
	}

	// One read for everything: KSUID payload, secret, salt.
	var buf [16 + secretBytes + SaltSize]byte
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return nil, fmt.Errorf("generating key: reading random bytes: %w", err)
	}
	t := now()
	if s := t.Unix(); s < ksuidEpoch || s > ksuidEpoch+math.MaxUint32 {
		return nil, fmt.Errorf("generating key: clock time %s is outside the range of a KSUID (2014-05-13 to 2150-06-19)", t.UTC().Format(time.RFC3339))
	}
	id, err := ksuid.FromParts(t, buf[:16])
	if err != nil {
		return nil, fmt.Errorf("generating key: making KSUID: %w", err)
	}
	var secret [secretLen]byte
	encodeSecret(&secret, buf[16:16+secretBytes])
	salt := make([]byte, SaltSize)
	copy(salt, buf[16+secretBytes:])
	clear(buf[:])

	ids := id.String()
	token := assemble(prefix, ids, secret[:])
	sec := token[len(token)-crcLen-secretLen : len(token)-crcLen]
	return &Key{
		ID:          ids,
		Prefix:      prefix,
		Salt:        salt,
		Hash:        HashSecret(sec, salt),
		HashVersion: HashVersion,
		Last4:       token[len(token)-4:],
		token:       token,
		secret:      sec,
	}, nil
}

// assemble returns prefix "_" id "_" secret followed by the checksum of all
// of that.
func assemble(prefix, id string, secret []byte) string {
	b := make([]byte, 0, len(prefix)+tailLen)
	b = append(b, prefix...)
	b = append(b, '_')
	b = append(b, id...)
	b = append(b, '_')
	b = append(b, secret...)
	var crc [crcLen]byte
	encodeCRC(&crc, crc32.ChecksumIEEE(b))
	b = append(b, crc[:]...)
	return string(b)
}
