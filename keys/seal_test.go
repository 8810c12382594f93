package keys

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"
)

// testSealingKey is a fixed 32-byte sealing key whose base64 has both "+"
// and "/" (standard alphabet) so that the URL alphabet spells it differently.
var testSealingKey = func() []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(0xf8 + i*3)
	}
	return k
}()

func newTestSealer(t testing.TB, key []byte) *Sealer {
	t.Helper()
	s, err := NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseSealingKey(t *testing.T) {
	t.Parallel()
	std := base64.StdEncoding.EncodeToString(testSealingKey)
	if !strings.ContainsAny(std, "+/") {
		t.Fatalf("test key %s does not exercise the alphabets", std)
	}
	for _, tc := range []struct {
		name, in string
		want     string // error substring; "" for success
	}{
		{"standard, padded", std, ""},
		{"standard, unpadded", base64.RawStdEncoding.EncodeToString(testSealingKey), ""},
		{"URL, padded", base64.URLEncoding.EncodeToString(testSealingKey), ""},
		{"URL, unpadded", base64.RawURLEncoding.EncodeToString(testSealingKey), ""},
		{"trailing newline (a file)", std + "\n", ""},
		{"surrounding spaces", "  " + std + "\r\n", ""},
		{"empty", "", "got 0 bytes"},
		{"31 bytes", base64.StdEncoding.EncodeToString(testSealingKey[:31]), "got 31 bytes"},
		{"33 bytes", base64.StdEncoding.EncodeToString(append(testSealingKey, 0)), "got 33 bytes"},
		{"24 bytes (openssl rand -base64 24)", base64.StdEncoding.EncodeToString(testSealingKey[:24]), "got 24 bytes"},
		{"hex, not base64", "f8fbfe0104070a0d101316191c1f2225282b2e3134373a3d404346494c4f5255", "got 48 bytes"},
		{"not base64", "this is not a base64 key at all!", "not base64"},
		{"mixed alphabets", strings.Replace(base64.URLEncoding.EncodeToString(testSealingKey), "-", "+", 1) + "_", "not base64"},
		{"inner space", std[:10] + " " + std[10:], "not base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			key, err := ParseSealingKey(tc.in)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ParseSealingKey = %v", err)
				}
				if !bytes.Equal(key, testSealingKey) {
					t.Fatalf("ParseSealingKey = %x, want %x", key, testSealingKey)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseSealingKey accepted %q as %x", tc.in, key)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "sealing key must be 32 bytes of base64 (e.g. openssl rand -base64 32)") {
				t.Errorf("error %q does not say %q and what is expected", msg, tc.want)
			}
			if s := strings.TrimSpace(tc.in); len(s) >= 8 && strings.Contains(msg, s[:8]) {
				t.Errorf("error %q echoes the key", msg)
			}
		})
	}
}

func TestGenerateSealingKey(t *testing.T) {
	t.Parallel()
	a, err := GenerateSealingKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateSealingKey()
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Error("two sealing keys are equal")
	}
	key, err := ParseSealingKey(a)
	if err != nil || len(key) != SealingKeySize {
		t.Fatalf("ParseSealingKey(GenerateSealingKey()) = %d bytes, %v", len(key), err)
	}
	if _, err := NewSealer(key); err != nil {
		t.Fatal(err)
	}
}

func TestNewSealerRejectsWrongSizes(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		_, err := NewSealer(make([]byte, n))
		if err == nil {
			t.Errorf("NewSealer accepted a %d-byte key", n)
		} else if !strings.Contains(err.Error(), "sealing key must be 32 bytes") {
			t.Errorf("NewSealer error %q does not say the size", err)
		}
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	s := newTestSealer(t, testSealingKey)
	k := mustGenerate(t, testGenerator(12), "sk")
	for _, pt := range [][]byte{[]byte(k.Plaintext()), {}, nil, bytes.Repeat([]byte{0}, 1000)} {
		box, err := s.Seal(k.ID, pt)
		if err != nil {
			t.Fatal(err)
		}
		if box[0] != 1 {
			t.Errorf("box version = %d, want 1", box[0])
		}
		if want := 1 + 12 + len(pt) + 16; len(box) != want {
			t.Errorf("box is %d bytes, want %d", len(box), want)
		}
		if len(pt) >= 8 && bytes.Contains(box, pt[:8]) {
			t.Error("box contains the plaintext")
		}
		got, err := s.Open(k.ID, box)
		if err != nil {
			t.Fatalf("Open(Seal()) = %v", err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("Open(Seal(%q)) = %q", pt, got)
		}
	}
	a, _ := s.Seal(k.ID, []byte("same"))
	b, _ := s.Seal(k.ID, []byte("same"))
	if bytes.Equal(a, b) {
		t.Error("two seals of the same plaintext are equal: the nonce is not random")
	}
}

func TestSealRejectsEmptyKeyID(t *testing.T) {
	t.Parallel()
	s := newTestSealer(t, testSealingKey)
	if box, err := s.Seal("", []byte("x")); err == nil {
		t.Errorf("Seal with an empty key id = %x, want an error", box)
	}
}

// openFails checks that Open rejects box with ErrOpen and no plaintext.
func openFails(t *testing.T, s *Sealer, keyID string, box []byte, what string) {
	t.Helper()
	pt, err := s.Open(keyID, box)
	if !errors.Is(err, ErrOpen) {
		t.Errorf("%s: Open = %q, %v; want ErrOpen", what, pt, err)
	}
	if pt != nil {
		t.Errorf("%s: Open returned plaintext with its error", what)
	}
}

func TestOpenRejectsWrongKeyWrongIDAndDamage(t *testing.T) {
	t.Parallel()
	s := newTestSealer(t, testSealingKey)
	const id = "2xuDjWzV4cUB2ZOszBVyd4gsiwZ"
	box, err := s.Seal(id, []byte("sk_secret_plaintext"))
	if err != nil {
		t.Fatal(err)
	}
	otherKey := bytes.Clone(testSealingKey)
	otherKey[0] ^= 1
	openFails(t, newTestSealer(t, otherKey), id, box, "other sealing key")
	openFails(t, s, "2xuDjWzV4cUB2ZOszBVyd4gsiwA", box, "other key id")
	openFails(t, s, "", box, "empty key id")
	openFails(t, s, id+"x", box, "longer key id")
	for i := range box {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			b := bytes.Clone(box)
			b[i] ^= mask
			openFails(t, s, id, b, "byte flipped")
		}
	}
	for n := range len(box) {
		openFails(t, s, id, box[:n], "truncated")
		openFails(t, s, id, box[n+1:], "head cut off")
	}
	openFails(t, s, id, append(bytes.Clone(box), 0), "byte appended")
	openFails(t, s, id, nil, "nil")
	v2 := bytes.Clone(box)
	v2[0] = 2
	openFails(t, s, id, v2, "unknown version")
	// The untouched box still opens: the failures above are the damage.
	if _, err := s.Open(id, box); err != nil {
		t.Fatalf("Open of the original box = %v", err)
	}
}

func TestSealerIsSafeForConcurrentUse(t *testing.T) {
	t.Parallel()
	s := newTestSealer(t, testSealingKey)
	const workers, rounds = 8, 200
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := string(rune('a' + w))
			pt := bytes.Repeat([]byte{byte(w)}, 40)
			for range rounds {
				box, err := s.Seal(id, pt)
				if err != nil {
					errs <- err
					return
				}
				got, err := s.Open(id, box)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, pt) {
					errs <- errors.New("round trip changed the plaintext")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
