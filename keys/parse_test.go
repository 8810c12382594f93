package keys

import (
	"errors"
	"hash/crc32"
	"strings"
	"testing"
)

var sentinels = []error{ErrLength, ErrFormat, ErrAlphabet, ErrChecksum, ErrPrefix}

// withCRC returns body (prefix_id_secret) with its correct checksum, to
// build strings that pass the checksum and fail for another reason.
func withCRC(body string) string {
	var c [crcLen]byte
	encodeCRC(&c, crc32.ChecksumIEEE([]byte(body)))
	return body + string(c[:])
}

// checkParseError checks that err is a *ParseError wrapping exactly want,
// and that its message contains no part of the input or its secret.
func checkParseError(t *testing.T, err, want error, input, secret string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Parse accepted the input, want %v", want)
	}
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Errorf("error %v (%T) is not a *ParseError", err, err)
	}
	for _, s := range sentinels {
		if got := errors.Is(err, s); got != (s == want) {
			t.Errorf("errors.Is(%q, %q) = %v, want %v", err, s, got, s == want)
		}
	}
	if len(input) >= 8 && strings.Contains(err.Error(), input) {
		t.Errorf("error %q contains the input", err)
	}
	assertNoSecret(t, "error", err.Error(), input, secret)
}

func TestParseErrorsMapToSentinels(t *testing.T) {
	t.Parallel()
	k := mustGenerate(t, testGenerator(5), "sk")
	s := k.Plaintext()
	n := len(s)
	secret := k.secret
	body := s[:n-crcLen]  // sk_id_secret
	tail := s[len("sk"):] // _id_secret+crc
	id := k.ID
	other := mustGenerate(t, testGenerator(6), "sk").Plaintext()
	for _, tc := range []struct {
		name  string
		input string
		want  error
	}{
		{"empty", "", ErrLength},
		{"too short", s[:MinLen-1], ErrLength},
		{"only the secret", secret, ErrLength},
		{"prefix of 33 characters", strings.Repeat("a", 33) + tail, ErrLength},
		{"much too long", s + strings.Repeat("x", 1000), ErrLength},
		{"leading space", " " + s, ErrFormat},
		{"trailing newline", s + "\n", ErrFormat},
		{"trailing tab", s + "\t", ErrFormat},
		{"leading no-break space", "\u00a0" + s, ErrFormat},
		{"dashes for separators", strings.ReplaceAll(s, "_", "-"), ErrFormat},
		{"missing second separator", withCRC("sk_" + id + "x" + secret), ErrFormat},
		{"missing first separator", withCRC("skx" + id + "_" + secret), ErrFormat},
		{"id out of range", withCRC("sk_zzzzzzzzzzzzzzzzzzzzzzzzzzz_" + secret), ErrFormat},
		{"secret out of range", withCRC("sk_" + id + "_" + strings.Repeat("z", 43)), ErrFormat},
		{"uppercase prefix", withCRC("Sk" + body[2:]), ErrPrefix},
		{"prefix with a digit first", withCRC("1sk" + body[2:]), ErrPrefix},
		{"prefix ending in _", withCRC("sk__" + id + "_" + secret), ErrPrefix},
		{"prefix with __", withCRC("a__b" + body[2:]), ErrPrefix},
		{"prefix with a dash", withCRC("sk-x" + body[2:]), ErrPrefix},
		{"unicode prefix", withCRC("ké" + body[2:]), ErrPrefix},
		{"dash in id", withCRC("sk_-" + body[4:]), ErrAlphabet},
		{"underscore in id", withCRC("sk__" + body[4:]), ErrAlphabet},
		{"dash in secret", withCRC(body[:n-crcLen-1] + "-"), ErrAlphabet},
		{"non-ASCII in secret", withCRC(body[:n-crcLen-2] + "é"), ErrAlphabet},
		{"dash in checksum", body + "-" + s[n-5:], ErrAlphabet},
		{"wrong checksum", body + "000000", ErrChecksum},
		{"checksum of another key", body + other[len(other)-crcLen:], ErrChecksum},
		{"last character changed", s[:n-1] + string(rune(s[n-1]^1)), ErrChecksum},
		{"secret character changed", s[:n-10] + changed(s[n-10]) + s[n-9:], ErrChecksum},
		{"prefix changed", "sj" + s[2:], ErrChecksum},
		{"prefix dropped", s[3:], ErrLength},
		{"last character dropped", s[:n-1], ErrFormat},
		{"character doubled", s[:40] + s[39:], ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := Parse(tc.input)
			if err == nil {
				t.Fatalf("Parse accepted %q as %v, want %v", tc.input, p, tc.want)
			}
			if p != (Parsed{}) {
				t.Errorf("Parse returned a non-zero Parsed with its error")
			}
			checkParseError(t, err, tc.want, tc.input, secret)
		})
	}
}

// changed returns a base62 character other than c.
func changed(c byte) string {
	if c == '0' {
		return "1"
	}
	return "0"
}

func TestParseErrorMessages(t *testing.T) {
	t.Parallel()
	k := mustGenerate(t, testGenerator(7), "sk")
	s := k.Plaintext()
	for _, tc := range []struct {
		input, want string
	}{
		{"", "invalid API key: the key is empty"},
		{"sk_short", "invalid API key: the key is 8 bytes long, want 79 to 110"},
		{s + " ", "invalid API key: the key has leading or trailing whitespace; remove it"},
		{s[:len(s)-1] + "-", "invalid API key: the checksum has a character outside 0-9, A-Z, a-z"},
		{s[:len(s)-6] + "000000", "invalid API key: the checksum does not match: the key was mistyped, truncated or altered"},
	} {
		_, err := Parse(tc.input)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Parse error = %v, want %q", err, tc.want)
		}
	}
}

func TestParseRejectsEverySubstitution(t *testing.T) {
	t.Parallel()
	// CRC-32 detects every error burst of up to 32 bits, so no single
	// character typo may slip through, wherever it is.
	for _, prefix := range []string{"sk", "acme_live", "a", strings.Repeat("z", 32)} {
		t.Run(prefix, func(t *testing.T) {
			t.Parallel()
			for seed := range byte(3) {
				s := mustGenerate(t, testGenerator(seed), prefix).Plaintext()
				tried := 0
				b := []byte(s)
				for i := range b {
					orig := b[i]
					for _, c := range []byte(base62Alphabet + "_") {
						if c == orig {
							continue
						}
						b[i] = c
						if p, err := Parse(string(b)); err == nil {
							t.Fatalf("Parse accepted %q (position %d of %q changed to %q) as %v", b, i, s, c, p)
						}
						tried++
					}
					b[i] = orig
				}
				if want := len(s) * 62; tried != want {
					t.Fatalf("tried %d substitutions, want %d", tried, want)
				}
			}
		})
	}
}

func TestParseRejectsTranspositionsDeletionsAndInsertions(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"sk", "acme_live"} {
		s := mustGenerate(t, testGenerator(8), prefix).Plaintext()
		for i := 0; i+1 < len(s); i++ {
			if s[i] == s[i+1] {
				continue
			}
			b := []byte(s)
			b[i], b[i+1] = b[i+1], b[i]
			if _, err := Parse(string(b)); err == nil {
				t.Errorf("Parse accepted %q: positions %d and %d swapped", b, i, i+1)
			}
		}
		for i := range len(s) {
			if _, err := Parse(s[:i] + s[i+1:]); err == nil {
				t.Errorf("Parse accepted %q with position %d deleted", s, i)
			}
			if _, err := Parse(s[:i] + "a" + s[i:]); err == nil {
				t.Errorf("Parse accepted %q with an 'a' inserted at %d", s, i)
			}
		}
		for i := range len(s) {
			if _, err := Parse(s[:i]); err == nil {
				t.Errorf("Parse accepted the first %d characters of a key", i)
			}
		}
	}
}

func TestParseWithPrefix(t *testing.T) {
	t.Parallel()
	k := mustGenerate(t, testGenerator(9), "acme_live")
	if p, err := ParseWithPrefix(k.Plaintext(), "acme_live"); err != nil || p.ID() != k.ID {
		t.Errorf("ParseWithPrefix(key, its prefix) = %v, %v", p, err)
	}
	for _, want := range []string{"acme_test", "sk", "acme", ""} {
		p, err := ParseWithPrefix(k.Plaintext(), want)
		if err == nil {
			t.Errorf("ParseWithPrefix(key, %q) accepted a key with prefix acme_live as %v", want, p)
			continue
		}
		checkParseError(t, err, ErrPrefix, k.Plaintext(), k.secret)
	}
	// Errors of Parse come through unchanged.
	_, err := ParseWithPrefix(k.Plaintext()[:50], "acme_live")
	checkParseError(t, err, ErrLength, k.Plaintext()[:50], k.secret)
}

func TestZeroParsed(t *testing.T) {
	t.Parallel()
	var p Parsed
	if p.Prefix() != "" || p.ID() != "" || p.Secret() != "" || p.Last4() != "" || p.Plaintext() != "" {
		t.Errorf("zero Parsed has parts: %#v", p)
	}
	if got := p.String(); got != "__…" {
		t.Errorf("zero Parsed String() = %q", got)
	}
}
