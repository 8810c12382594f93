package keys

import "encoding/binary"

// base62Alphabet is KSUID's alphabet, in ASCII order, so that fixed-width
// base62 strings sort like the numbers they encode.
const base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// notBase62 marks bytes outside the alphabet in base62Value.
const notBase62 = 0xff

// base62Value maps a byte to its digit value, or to notBase62.
var base62Value = func() (t [256]byte) {
	for i := range t {
		t[i] = notBase62
	}
	for i := 0; i < len(base62Alphabet); i++ {
		t[base62Alphabet[i]] = byte(i)
	}
	return t
}()

// isBase62 reports whether every byte of s is in the base62 alphabet.
func isBase62(s string) bool {
	for i := 0; i < len(s); i++ {
		if base62Value[s[i]] == notBase62 {
			return false
		}
	}
	return true
}

// encodeBase62 writes the big-endian number in words as exactly len(dst)
// base62 digits, left-padded with '0'. It consumes words (they end up zero
// when the number fits, which the callers guarantee by their widths).
func encodeBase62(dst []byte, words []uint32) {
	for i := len(dst) - 1; i >= 0; i-- {
		var rem uint64
		for j := range words {
			v := rem<<32 | uint64(words[j])
			words[j] = uint32(v / 62)
			rem = v % 62
		}
		dst[i] = base62Alphabet[rem]
	}
}

// Widths of the fixed-width base62 fields: 62^43 > 2^256, 62^27 > 2^160 and
// 62^6 > 2^32, each the smallest such width.
const (
	secretBytes = 32
	secretLen   = 43
	idBytes     = 20
	idLen       = 27
	crcLen      = 6
)

// encodeSecret writes the 32 bytes of b as 43 base62 digits.
func encodeSecret(dst *[secretLen]byte, b []byte) {
	var w [secretBytes / 4]uint32
	for i := range w {
		w[i] = binary.BigEndian.Uint32(b[4*i:])
	}
	encodeBase62(dst[:], w[:])
}

// The largest id and secret: 2^160-1 (ksuid.Max) and 2^256-1. Fixed-width
// base62 in an alphabet in ASCII order sorts like the numbers it encodes,
// so a string comparison is a range check.
const (
	maxID     = "aWgEPTl1tmebfsQzFP4bxwgy80V"
	maxSecret = "yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1"
)

// idInRange reports whether the 27 base62 digits of s encode a number that
// fits in a 20-byte KSUID.
func idInRange(s string) bool { return len(s) == idLen && s <= maxID }

// secretInRange reports whether the 43 base62 digits of s encode a number
// that fits in 32 bytes.
func secretInRange(s string) bool { return len(s) == secretLen && s <= maxSecret }

// encodeCRC writes c as 6 base62 digits.
func encodeCRC(dst *[crcLen]byte, c uint32) {
	for i := crcLen - 1; i >= 0; i-- {
		dst[i] = base62Alphabet[c%62]
		c /= 62
	}
}
