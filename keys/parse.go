package keys

import (
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"unicode"
	"unicode/utf8"
)

// Sentinel errors of Parse and ParseWithPrefix, for errors.Is. Each comes
// wrapped in a *ParseError that says what is wrong.
var (
	// ErrLength means the key is shorter or longer than any key can be.
	ErrLength = errors.New("API key has the wrong length")
	// ErrFormat means the key is not shaped like <prefix>_<id>_<secret><crc>:
	// a separator is missing, there is surrounding whitespace, or the id or
	// secret is out of range.
	ErrFormat = errors.New("API key is malformed")
	// ErrAlphabet means the id, secret or checksum has a character outside
	// the base62 alphabet 0-9, A-Z, a-z.
	ErrAlphabet = errors.New("API key has a character outside its alphabet")
	// ErrChecksum means the checksum does not match: the key was mistyped,
	// truncated or made up.
	ErrChecksum = errors.New("API key checksum does not match")
	// ErrPrefix means the prefix is invalid or not the expected one.
	ErrPrefix = errors.New("API key prefix is invalid")
)

// ParseError is the error of Parse. Its message says what is wrong without
// quoting the input or any part of it, so it can be logged and returned to
// clients.
type ParseError struct {
	// Err is the sentinel: ErrLength, ErrFormat, ErrAlphabet, ErrChecksum or
	// ErrPrefix.
	Err error
	// Reason says what is wrong in words.
	Reason string
}

func (e *ParseError) Error() string { return "invalid API key: " + e.Reason }

// Unwrap returns the sentinel, so errors.Is(err, ErrChecksum) works.
func (e *ParseError) Unwrap() error { return e.Err }

func parseError(err error, reason string) *ParseError {
	return &ParseError{Err: err, Reason: reason}
}

// Parsed is a key that Parse accepted: well formed, with a matching
// checksum. It says nothing about whether the key exists; see Verify.
//
// Like Key, a Parsed never prints its secret: String, Format, GoString and
// LogValue show "<prefix>_<id>_…<last4>", and its fields are unexported. The
// zero Parsed is no key; Verify reports it as StatusNotFound.
type Parsed struct {
	token  string
	prefix int // length of the prefix in token
}

// Prefix returns the key's prefix, e.g. "sk".
func (p Parsed) Prefix() string { return p.token[:p.prefix] }

// ID returns the key's KSUID, the id of its row.
func (p Parsed) ID() string {
	if p.token == "" {
		return ""
	}
	return p.token[p.prefix+1 : p.prefix+1+idLen]
}

// Secret returns the 43 base62 characters of the key's secret, the text that
// HashSecret hashes. Do not log it.
func (p Parsed) Secret() string {
	if p.token == "" {
		return ""
	}
	n := len(p.token)
	return p.token[n-crcLen-secretLen : n-crcLen]
}

// Last4 returns the last 4 characters of the key, which may be shown.
func (p Parsed) Last4() string {
	if p.token == "" {
		return ""
	}
	return p.token[len(p.token)-4:]
}

// Plaintext returns the whole key, exactly the string Parse accepted.
func (p Parsed) Plaintext() string { return p.token }

// String returns the redacted form "<prefix>_<id>_…<last4>".
func (p Parsed) String() string { return redacted(p.Prefix(), p.ID(), p.Last4()) }

// GoString returns a Go-syntax representation without the secret, for %#v.
func (p Parsed) GoString() string {
	return fmt.Sprintf("keys.Parsed{ID:%q, Prefix:%q, Last4:%q}", p.ID(), p.Prefix(), p.Last4())
}

// Format makes every fmt verb print the redacted form (GoString for %#v).
func (p Parsed) Format(f fmt.State, verb rune) { format(f, verb, p.String(), p.GoString()) }

// LogValue logs the key as a group of id, prefix and last4.
func (p Parsed) LogValue() slog.Value { return logValue(p.ID(), p.Prefix(), p.Last4()) }

// Parse checks that s is a key, "<prefix>_<ksuid>_<secret><crc>", and splits
// it. It reads from the right, since the prefix may contain "_": the last 6
// characters are the checksum, the 43 before them the secret, then "_", the
// 27-character KSUID, "_", and the prefix, which must pass ValidatePrefix.
// The id, secret and checksum must be base62, the checksum must be the
// CRC-32 of everything before it, and the id and secret must be in range (a
// 20-byte KSUID, a 32-byte secret), so that a string parses only if
// Generate could have made it.
//
// Parse does not trim: a key with leading or trailing whitespace is
// rejected with ErrFormat and a message saying so. Callers that take keys
// from headers or forms strip them first.
//
// Errors are *ParseError wrapping ErrLength, ErrFormat, ErrAlphabet,
// ErrChecksum or ErrPrefix; they never contain s or any part of it. Parse
// does no lookup, and a Parsed shares s's memory.
func Parse(s string) (Parsed, error) {
	n := len(s)
	if n == 0 {
		return Parsed{}, parseError(ErrLength, "the key is empty")
	}
	if hasSpaceAround(s) {
		return Parsed{}, parseError(ErrFormat, "the key has leading or trailing whitespace; remove it")
	}
	if n < MinLen || n > MaxLen {
		return Parsed{}, parseError(ErrLength, fmt.Sprintf("the key is %d bytes long, want %d to %d", n, MinLen, MaxLen))
	}
	crcText := s[n-crcLen:]
	secret := s[n-crcLen-secretLen : n-crcLen]
	id := s[n-tailLen+1 : n-tailLen+1+idLen]
	prefix := s[:n-tailLen]
	if s[n-tailLen] != '_' || s[n-crcLen-secretLen-1] != '_' {
		return Parsed{}, parseError(ErrFormat, `the key is not "<prefix>_<id>_<secret>": a "_" separator is missing`)
	}
	if problem := prefixProblem(prefix); problem != "" {
		return Parsed{}, parseError(ErrPrefix, "the prefix is invalid: "+problem)
	}
	switch {
	case !isBase62(id):
		return Parsed{}, parseError(ErrAlphabet, "the id has a character outside 0-9, A-Z, a-z")
	case !isBase62(secret):
		return Parsed{}, parseError(ErrAlphabet, "the secret has a character outside 0-9, A-Z, a-z")
	case !isBase62(crcText):
		return Parsed{}, parseError(ErrAlphabet, "the checksum has a character outside 0-9, A-Z, a-z")
	}
	var want [crcLen]byte
	encodeCRC(&want, crc32.ChecksumIEEE([]byte(s[:n-crcLen])))
	if string(want[:]) != crcText {
		return Parsed{}, parseError(ErrChecksum, "the checksum does not match: the key was mistyped, truncated or altered")
	}
	// Only a string built to pass the checksum gets here out of range.
	if !idInRange(id) {
		return Parsed{}, parseError(ErrFormat, "the id is not a valid KSUID")
	}
	if !secretInRange(secret) {
		return Parsed{}, parseError(ErrFormat, "the secret is out of range")
	}
	return Parsed{token: s, prefix: len(prefix)}, nil
}

// ParseWithPrefix is Parse, and also requires the key's prefix to be want.
// A key with another prefix gets a *ParseError wrapping ErrPrefix.
func ParseWithPrefix(s, want string) (Parsed, error) {
	p, err := Parse(s)
	if err != nil {
		return Parsed{}, err
	}
	if p.Prefix() != want {
		return Parsed{}, parseError(ErrPrefix, fmt.Sprintf("the prefix is not the expected %q", want))
	}
	return p, nil
}

// hasSpaceAround reports whether s starts or ends with Unicode whitespace.
func hasSpaceAround(s string) bool {
	first, _ := utf8.DecodeRuneInString(s)
	last, _ := utf8.DecodeLastRuneInString(s)
	return unicode.IsSpace(first) || unicode.IsSpace(last)
}
