package keys

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzParse checks that Parse never panics, that every error is a
// *ParseError with one of the sentinels and without the secret region of
// the input, and that an accepted string is a well-formed key that formats
// back to itself. Seeds live in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add("sk_2xuDjWzV4cUB2ZOszBVyd4gsiwZ_3oDH4mEVFvp7u7ED6UzpF5eHPrBI5AHumY7UBpOQIJz3adg63")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T) is not a *ParseError", err, err)
			}
			n := 0
			for _, sentinel := range sentinels {
				if errors.Is(err, sentinel) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("error %v matches %d sentinels, want 1", err, n)
			}
			if p != (Parsed{}) {
				t.Fatalf("Parse returned a non-zero Parsed with an error")
			}
			// The error never quotes the input or where its secret would be
			// (fixed text could contain a short input by chance, so short
			// inputs are left out).
			if len(s) >= MinLen {
				secret := s[len(s)-crcLen-secretLen : len(s)-crcLen]
				if strings.Contains(err.Error(), s) || strings.Contains(err.Error(), secret) {
					t.Fatalf("error %q contains the input", err)
				}
			}
			return
		}
		if got := p.Plaintext(); got != s {
			t.Fatalf("Parse(%q).Plaintext() = %q", s, got)
		}
		if got := p.Prefix() + "_" + p.ID() + "_" + p.Secret(); withCRC(got) != s {
			t.Fatalf("parts of %q reassemble to %q", s, withCRC(got))
		}
		if err := ValidatePrefix(p.Prefix()); err != nil {
			t.Fatalf("accepted prefix is invalid: %v", err)
		}
		if len(p.ID()) != idLen || len(p.Secret()) != secretLen || len(p.Last4()) != 4 {
			t.Fatalf("parts have the wrong lengths: %#v", p)
		}
		// An accepted secret is the encoding of 32 bytes, and re-encoding
		// them gives the same text: one spelling per key.
		b, ok := decodeSecret(p.Secret())
		if !ok {
			t.Fatalf("accepted secret does not decode")
		}
		var re [secretLen]byte
		encodeSecret(&re, b[:])
		if string(re[:]) != p.Secret() {
			t.Fatalf("secret re-encodes to %q, was %q", re, p.Secret())
		}
		if str := p.String(); str != redacted(p.Prefix(), p.ID(), p.Last4()) || strings.Contains(str, p.Secret()) {
			t.Fatalf("String() = %q is not the redacted form", str)
		}
		// Verify never panics on what Parse accepts, and finds nothing
		// without a row.
		if st := Verify(p, nil, time.Now()); st != StatusNotFound {
			t.Fatalf("Verify(nil row) = %v", st)
		}
	})
}

// fuzzSealingKey is the sealing key of FuzzOpen. The valid boxes in
// testdata/fuzz/FuzzOpen were sealed with it.
var fuzzSealingKey = bytes.Repeat([]byte{0x42}, SealingKeySize)

// fuzzUserID is the user id of FuzzOpen's boxes (version 1 boxes do not
// bind one).
const fuzzUserID = "00000000-0000-4000-8000-000000000042"

// FuzzOpen checks that Open never panics and fails with ErrOpen on
// anything but a real box, and that Seal and Open round-trip any input.
// Seeds, among them valid boxes, live in testdata/fuzz/FuzzOpen.
func FuzzOpen(f *testing.F) {
	f.Add("2xuDjWzV4cUB2ZOszBVyd4gsiwZ", []byte{1, 2, 3})
	s, err := NewSealer(fuzzSealingKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, keyID string, box []byte) {
		pt, err := s.Open(keyID, fuzzUserID, box)
		if err != nil {
			if !errors.Is(err, ErrOpen) || pt != nil {
				t.Fatalf("Open = %q, %v; want nil, ErrOpen", pt, err)
			}
		} else if (len(box) != 1+12+len(pt)+16 || box[0] != 1) && (len(box) != 1+8+12+len(pt)+16 || box[0] != 2) {
			t.Fatalf("Open accepted a %d-byte box with version %d", len(box), box[0])
		}
		if keyID == "" || len(keyID) > 255 {
			return
		}
		// Any bytes seal and open again, under the same key id and user only.
		sealed, err := s.Seal(keyID, fuzzUserID, box)
		if err != nil {
			t.Fatal(err)
		}
		back, err := s.Open(keyID, fuzzUserID, sealed)
		if err != nil || !bytes.Equal(back, box) {
			t.Fatalf("Open(Seal(x)) = %q, %v; want %q", back, err, box)
		}
		if _, err := s.Open(keyID+"x", fuzzUserID, sealed); !errors.Is(err, ErrOpen) {
			t.Fatalf("a box opened under another key id")
		}
		if _, err := s.Open(keyID, fuzzUserID+"x", sealed); !errors.Is(err, ErrOpen) {
			t.Fatalf("a box opened for another user id")
		}
	})
}

// readSeed returns the values of a seed file in testdata/fuzz/<target>,
// which holds only string(...) and []byte(...) lines.
func readSeed(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if lines[0] != "go test fuzz v1" {
		t.Fatalf("%s: not a fuzz seed file", path)
	}
	var vals []string
	for _, l := range lines[1:] {
		lit := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(l, "string("), "[]byte("), ")")
		v, err := strconv.Unquote(lit)
		if err != nil {
			t.Fatalf("%s: %q: %v", path, l, err)
		}
		vals = append(vals, v)
	}
	return vals
}

func TestFuzzSeedsAreWhatTheirNamesSay(t *testing.T) {
	t.Parallel()
	// Seeds named valid_* must be accepted, so that the fuzzers start from
	// inputs that reach the end of Parse and Open; the rest must not.
	s, err := NewSealer(fuzzSealingKey)
	if err != nil {
		t.Fatal(err)
	}
	for target, accepts := range map[string]func([]string) bool{
		"FuzzParse": func(v []string) bool { _, err := Parse(v[0]); return err == nil },
		"FuzzOpen":  func(v []string) bool { _, err := s.Open(v[0], fuzzUserID, []byte(v[1])); return err == nil },
	} {
		paths, err := filepath.Glob(filepath.Join("testdata", "fuzz", target, "*"))
		if err != nil {
			t.Fatal(err)
		}
		if len(paths) < 10 {
			t.Errorf("%s has %d seeds, want at least 10", target, len(paths))
		}
		for _, path := range paths {
			want := strings.HasPrefix(filepath.Base(path), "valid_")
			if got := accepts(readSeed(t, path)); got != want {
				t.Errorf("%s: accepted = %v, want %v", path, got, want)
			}
		}
	}
}
