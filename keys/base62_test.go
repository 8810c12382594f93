package keys

import (
	"bytes"
	"encoding/binary"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/segmentio/ksuid"
)

// bigBase62 is an independent oracle: b as a number, in base62, left-padded
// to width, using math/big.
func bigBase62(b []byte, width int) string {
	n := new(big.Int).SetBytes(b)
	s := n.Text(62) // math/big's digits are 0-9a-zA-Z; swap the cases.
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return r
	}, s)
	return strings.Repeat("0", width-len(s)) + s
}

// decodeBase62 is the inverse of encodeBase62, for tests. It reads the base62 digits of src into words as a big-endian
// number. It reports false when the number does not fit in words. src must
// be base62 (see isBase62).
func decodeBase62(words []uint32, src string) bool {
	clear(words)
	for i := 0; i < len(src); i++ {
		carry := uint64(base62Value[src[i]])
		for j := len(words) - 1; j >= 0; j-- {
			v := uint64(words[j])*62 + carry
			words[j] = uint32(v)
			carry = v >> 32
		}
		if carry != 0 {
			return false
		}
	}
	return true
}

// decodeSecret returns the 32 bytes that the 43 base62 digits of s encode,
// or false when s encodes a number of 2^256 or more.
func decodeSecret(s string) (b [secretBytes]byte, ok bool) {
	var w [secretBytes / 4]uint32
	if !decodeBase62(w[:], s) {
		return b, false
	}
	for i := range w {
		binary.BigEndian.PutUint32(b[4*i:], w[i])
	}
	return b, true
}

func TestEncodeSecretIsFixedWidth(t *testing.T) {
	t.Parallel()
	one := make([]byte, 32)
	one[31] = 1
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"all zero", make([]byte, 32), strings.Repeat("0", 43)},
		{"one", one, strings.Repeat("0", 42) + "1"},
		{"all 0xFF", bytes.Repeat([]byte{0xff}, 32), "yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1"},
		{"0 to 31", seq(32), bigBase62(seq(32), 43)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got [secretLen]byte
			encodeSecret(&got, tc.in)
			if string(got[:]) != tc.want {
				t.Fatalf("encodeSecret = %q, want %q", got, tc.want)
			}
			if o := bigBase62(tc.in, 43); o != tc.want {
				t.Fatalf("math/big oracle = %q, want %q", o, tc.want)
			}
			back, ok := decodeSecret(string(got[:]))
			if !ok || !bytes.Equal(back[:], tc.in) {
				t.Fatalf("decodeSecret(%q) = %x, %v; want %x", got, back, ok, tc.in)
			}
		})
	}
}

func TestEncodeSecretMatchesMathBig(t *testing.T) {
	t.Parallel()
	r := rand.NewChaCha8([32]byte{1})
	b := make([]byte, 32)
	for range 1000 {
		_, _ = r.Read(b)
		// Short numbers exercise the padding.
		clear(b[:r.Uint64()%33])
		var got [secretLen]byte
		encodeSecret(&got, b)
		if want := bigBase62(b, 43); string(got[:]) != want {
			t.Fatalf("encodeSecret(%x) = %q, want %q", b, got, want)
		}
	}
}

func TestDecodeSecretRejectsOutOfRange(t *testing.T) {
	t.Parallel()
	// 2^256-1 is the largest secret; one more does not fit in 32 bytes.
	if _, ok := decodeSecret("yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1"); !ok {
		t.Error("decodeSecret rejected 2^256-1")
	}
	for _, s := range []string{
		"yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp2",
		strings.Repeat("z", 43),
		"z" + strings.Repeat("0", 42),
	} {
		if _, ok := decodeSecret(s); ok {
			t.Errorf("decodeSecret(%q) accepted a number of 2^256 or more", s)
		}
	}
}

func TestEncodeCRCIsFixedWidth(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   uint32
		want string
	}{
		{0, "000000"},
		{1, "000001"},
		{61, "00000z"},
		{62, "000010"},
		{0xffffffff, "4gfFC3"},
	} {
		var got [crcLen]byte
		encodeCRC(&got, tc.in)
		if string(got[:]) != tc.want {
			t.Errorf("encodeCRC(%#x) = %q, want %q", tc.in, got, tc.want)
		}
		if o := bigBase62([]byte{byte(tc.in >> 24), byte(tc.in >> 16), byte(tc.in >> 8), byte(tc.in)}, 6); o != tc.want {
			t.Errorf("math/big oracle for %#x = %q, want %q", tc.in, o, tc.want)
		}
	}
}

func TestBase62MatchesKSUID(t *testing.T) {
	t.Parallel()
	// Keys' ids come from the ksuid package and are parsed here; both sides
	// must agree on alphabet, width and range.
	ids := []ksuid.KSUID{ksuid.Nil, ksuid.Max}
	r := rand.NewChaCha8([32]byte{2})
	for range 200 {
		var id ksuid.KSUID
		_, _ = r.Read(id[:])
		ids = append(ids, id)
	}
	for _, id := range ids {
		var w [5]uint32
		for i := range w {
			w[i] = uint32(id[4*i])<<24 | uint32(id[4*i+1])<<16 | uint32(id[4*i+2])<<8 | uint32(id[4*i+3])
		}
		var got [idLen]byte
		encodeBase62(got[:], w[:])
		if string(got[:]) != id.String() {
			t.Fatalf("encodeBase62(%x) = %q, ksuid says %q", id[:], got, id.String())
		}
		if !idInRange(id.String()) {
			t.Fatalf("idInRange(%q) = false for a real KSUID", id.String())
		}
	}
}

func TestRangeChecksAgreeWithArithmetic(t *testing.T) {
	t.Parallel()
	// Parse checks ranges by comparing strings; decoding is the
	// arithmetic truth.
	r := rand.NewChaCha8([32]byte{3})
	near := func(max string) []string {
		out := []string{max, strings.Repeat("0", len(max)), strings.Repeat("z", len(max))}
		for i := range max {
			for _, c := range []byte(base62Alphabet) {
				b := []byte(max)
				b[i] = c
				out = append(out, string(b))
			}
		}
		for range 1000 {
			b := make([]byte, len(max))
			for i := range b {
				b[i] = base62Alphabet[r.Uint64()%62]
			}
			out = append(out, string(b))
		}
		return out
	}
	for _, s := range near(maxSecret) {
		_, ok := decodeSecret(s)
		if got := secretInRange(s); got != ok {
			t.Errorf("secretInRange(%q) = %v, decoding says %v", s, got, ok)
		}
	}
	for _, s := range near(maxID) {
		var w [idBytes / 4]uint32
		ok := decodeBase62(w[:], s)
		if got := idInRange(s); got != ok {
			t.Errorf("idInRange(%q) = %v, decoding says %v", s, got, ok)
		}
	}
	if ksuid.Max.String() != maxID {
		t.Errorf("maxID = %q, ksuid.Max is %q", maxID, ksuid.Max.String())
	}
	var max [secretLen]byte
	encodeSecret(&max, bytes.Repeat([]byte{0xff}, 32))
	if string(max[:]) != maxSecret {
		t.Errorf("maxSecret = %q, 2^256-1 is %q", maxSecret, max)
	}
}

func TestIsBase62(t *testing.T) {
	t.Parallel()
	if !isBase62(base62Alphabet) {
		t.Error("isBase62 rejected the alphabet")
	}
	for c := 0; c < 256; c++ {
		want := strings.IndexByte(base62Alphabet, byte(c)) >= 0
		if got := isBase62(string([]byte{byte(c)})); got != want {
			t.Errorf("isBase62(%q) = %v, want %v", byte(c), got, want)
		}
	}
}
