package keys

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"slices"
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

const testUserID = "0b5d3a4e-6f1c-4e8a-9b2d-7c3e5f6a8b9c"

func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	s := newTestSealer(t, testSealingKey)
	k := mustGenerate(t, testGenerator(12), "sk")
	for _, pt := range [][]byte{[]byte(k.Plaintext()), {}, nil, bytes.Repeat([]byte{0}, 1000)} {
		box, err := s.Seal(k.ID, testUserID, pt)
		if err != nil {
			t.Fatal(err)
		}
		if box[0] != 2 {
			t.Errorf("box version = %d, want 2", box[0])
		}
		if fp, ok := BoxFingerprint(box); !ok || fp != Fingerprint(testSealingKey) || fp != s.Fingerprint() {
			t.Errorf("box records fingerprint %q, %v; want %s", fp, ok, Fingerprint(testSealingKey))
		}
		if want := 1 + 8 + 12 + len(pt) + 16; len(box) != want {
			t.Errorf("box is %d bytes, want %d", len(box), want)
		}
		if len(pt) >= 8 && bytes.Contains(box, pt[:8]) {
			t.Error("box contains the plaintext")
		}
		got, err := s.Open(k.ID, testUserID, box)
		if err != nil {
			t.Fatalf("Open(Seal()) = %v", err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("Open(Seal(%q)) = %q", pt, got)
		}
		if !s.SealedByCurrent(box) {
			t.Error("SealedByCurrent(Seal()) = false")
		}
	}
	// The user id is a uuid's text: its case does not matter.
	box, _ := s.Seal(k.ID, strings.ToUpper(testUserID), []byte("x"))
	if _, err := s.Open(k.ID, testUserID, box); err != nil {
		t.Errorf("Open with the lowercase user id of an uppercase seal = %v", err)
	}
	a, _ := s.Seal(k.ID, testUserID, []byte("same"))
	b, _ := s.Seal(k.ID, testUserID, []byte("same"))
	if bytes.Equal(a, b) {
		t.Error("two seals of the same plaintext are equal: the nonce is not random")
	}
}

func TestSealRejectsEmptyIDs(t *testing.T) {
	t.Parallel()
	s := newTestSealer(t, testSealingKey)
	if box, err := s.Seal("", testUserID, []byte("x")); err == nil {
		t.Errorf("Seal with an empty key id = %x, want an error", box)
	}
	if box, err := s.Seal("id", "", []byte("x")); err == nil {
		t.Errorf("Seal with an empty user id = %x, want an error", box)
	}
}

// openFails checks that Open rejects box with ErrOpen and no plaintext.
func openFails(t *testing.T, s *Sealer, keyID, userID string, box []byte, what string) {
	t.Helper()
	pt, err := s.Open(keyID, userID, box)
	if !errors.Is(err, ErrOpen) {
		t.Errorf("%s: Open = %q, %v; want ErrOpen", what, pt, err)
	}
	if pt != nil {
		t.Errorf("%s: Open returned plaintext with its error", what)
	}
}

func TestOpenRejectsWrongKeyWrongIDsAndDamage(t *testing.T) {
	t.Parallel()
	s := newTestSealer(t, testSealingKey)
	const id = "2xuDjWzV4cUB2ZOszBVyd4gsiwZ"
	box, err := s.Seal(id, testUserID, []byte("sk_secret_plaintext"))
	if err != nil {
		t.Fatal(err)
	}
	otherKey := bytes.Clone(testSealingKey)
	otherKey[0] ^= 1
	openFails(t, newTestSealer(t, otherKey), id, testUserID, box, "other sealing key")
	openFails(t, s, "2xuDjWzV4cUB2ZOszBVyd4gsiwA", testUserID, box, "other key id")
	openFails(t, s, "", testUserID, box, "empty key id")
	openFails(t, s, id+"x", testUserID, box, "longer key id")
	openFails(t, s, id, "0b5d3a4e-6f1c-4e8a-9b2d-7c3e5f6a8b9d", box, "other user id")
	openFails(t, s, id, "", box, "empty user id")
	// The key id's length is bound: moving a character from the key id to
	// the user id does not give the same associated data.
	openFails(t, s, id[:len(id)-1], id[len(id)-1:]+testUserID, box, "key id and user id spliced")
	for i := range box {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			b := bytes.Clone(box)
			b[i] ^= mask
			openFails(t, s, id, testUserID, b, "byte flipped")
		}
	}
	for n := range len(box) {
		openFails(t, s, id, testUserID, box[:n], "truncated")
		openFails(t, s, id, testUserID, box[n+1:], "head cut off")
	}
	openFails(t, s, id, testUserID, append(bytes.Clone(box), 0), "byte appended")
	openFails(t, s, id, testUserID, nil, "nil")
	v3 := bytes.Clone(box)
	v3[0] = 3
	openFails(t, s, id, testUserID, v3, "unknown version")
	// The untouched box still opens: the failures above are the damage.
	if _, err := s.Open(id, testUserID, box); err != nil {
		t.Fatalf("Open of the original box = %v", err)
	}
}

// sealV1Box makes a box as Seal did before version 2: the version byte 1,
// a random nonce, the ciphertext, with the version byte and the key id as
// associated data.
func sealV1Box(t *testing.T, key []byte, keyID string, plaintext []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		t.Fatal(err)
	}
	return aead.Seal([]byte{1}, nil, plaintext, append([]byte{1}, keyID...))
}

// TestVersion1BoxesStillOpen guards the boxes sealed before fingerprints
// and user binding: they open under whichever key sealed them, for any
// user id, and only for their key id.
func TestVersion1BoxesStillOpen(t *testing.T) {
	t.Parallel()
	const id = "2xuDjWzV4cUB2ZOszBVyd4gsiwZ"
	oldKey := bytes.Repeat([]byte{7}, SealingKeySize)
	box := sealV1Box(t, oldKey, id, []byte("sk_old"))
	for name, s := range map[string]*Sealer{
		"as the current key":  newTestSealer(t, oldKey),
		"as the previous key": mustSealer(t, testSealingKey, oldKey),
	} {
		got, err := s.Open(id, testUserID, box)
		if err != nil || string(got) != "sk_old" {
			t.Errorf("%s: Open(v1 box) = %q, %v", name, got, err)
		}
		if s.SealedByCurrent(box) {
			t.Errorf("%s: SealedByCurrent(v1 box) = true: a re-seal would skip it", name)
		}
		openFails(t, s, "2xuDjWzV4cUB2ZOszBVyd4gsiwA", testUserID, box, name+": other key id")
	}
	if _, ok := BoxFingerprint(box); ok {
		t.Error("a version 1 box records a fingerprint")
	}
	// Under none of the Sealer's keys, the error says so.
	_, err := newTestSealer(t, testSealingKey).Open(id, testUserID, box)
	var another *SealedUnderAnotherKeyError
	if !errors.As(err, &another) || !errors.Is(err, ErrSealedUnderAnotherKey) || !errors.Is(err, ErrOpen) || another.Box != "" {
		t.Fatalf("Open(v1 box of another key) = %v, want a SealedUnderAnotherKeyError without a box fingerprint", err)
	}
}

func mustSealer(t *testing.T, key []byte, previous ...[]byte) *Sealer {
	t.Helper()
	s, err := NewSealer(key, previous...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRotation guards the previous key: a Sealer with new and old keys
// seals under the new key and opens boxes of both; one with the new key
// only tells that a box is sealed under another key, naming fingerprints.
func TestRotation(t *testing.T) {
	t.Parallel()
	const id = "2xuDjWzV4cUB2ZOszBVyd4gsiwZ"
	oldKey := bytes.Repeat([]byte{7}, SealingKeySize)
	newKey := testSealingKey
	old := newTestSealer(t, oldKey)
	oldBox, err := old.Seal(id, testUserID, []byte("sk_old"))
	if err != nil {
		t.Fatal(err)
	}
	both := mustSealer(t, newKey, oldKey)
	if both.Fingerprint() != Fingerprint(newKey) || !slices.Equal(both.Fingerprints(), []string{Fingerprint(newKey), Fingerprint(oldKey)}) {
		t.Fatalf("Fingerprints = %v", both.Fingerprints())
	}
	if got, err := both.Open(id, testUserID, oldBox); err != nil || string(got) != "sk_old" {
		t.Fatalf("Open(old box) with the old key as previous = %q, %v", got, err)
	}
	if both.SealedByCurrent(oldBox) {
		t.Error("an old box counts as sealed by the current key")
	}
	newBox, err := both.Seal(id, testUserID, []byte("sk_new"))
	if err != nil {
		t.Fatal(err)
	}
	if fp, _ := BoxFingerprint(newBox); fp != Fingerprint(newKey) {
		t.Errorf("new box sealed under %s, want the new key's %s", fp, Fingerprint(newKey))
	}
	if got, err := newTestSealer(t, newKey).Open(id, testUserID, newBox); err != nil || string(got) != "sk_new" {
		t.Errorf("the new key alone does not open a box sealed during rotation: %q, %v", got, err)
	}

	// The old key alone cannot open the new box, and says why.
	_, err = old.Open(id, testUserID, newBox)
	var another *SealedUnderAnotherKeyError
	if !errors.As(err, &another) || !errors.Is(err, ErrSealedUnderAnotherKey) || !errors.Is(err, ErrOpen) {
		t.Fatalf("Open under another key = %v, want a SealedUnderAnotherKeyError", err)
	}
	if another.Box != Fingerprint(newKey) || !slices.Equal(another.Have, []string{Fingerprint(oldKey)}) {
		t.Errorf("error names box %s and have %v", another.Box, another.Have)
	}
	msg := err.Error()
	if !strings.Contains(msg, Fingerprint(newKey)) || !strings.Contains(msg, Fingerprint(oldKey)) || !strings.Contains(msg, "sealed under another sealing key") {
		t.Errorf("error %q does not name both fingerprints", msg)
	}
	for _, k := range [][]byte{oldKey, newKey} {
		for _, enc := range []string{base64.StdEncoding.EncodeToString(k), hex.EncodeToString(k)} {
			if strings.Contains(msg, enc[:12]) {
				t.Errorf("error %q shows a key", msg)
			}
		}
	}
}

func TestNewSealerRejectsBadPreviousKeys(t *testing.T) {
	t.Parallel()
	other := bytes.Repeat([]byte{7}, SealingKeySize)
	for _, tc := range []struct {
		name     string
		previous [][]byte
		want     string
	}{
		{"short", [][]byte{make([]byte, 16)}, "previous sealing key must be 32 bytes, got 16 bytes"},
		{"the current key", [][]byte{testSealingKey}, "previous sealing key is the current one (fingerprint " + Fingerprint(testSealingKey) + ")"},
		{"twice", [][]byte{other, other}, "given twice"},
	} {
		if _, err := NewSealer(testSealingKey, tc.previous...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewSealer = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// TestFingerprint pins the fingerprint: HMAC-SHA256(key, label), first 8
// bytes in hex. Boxes and databases record it, so it must never change.
func TestFingerprint(t *testing.T) {
	t.Parallel()
	m := hmac.New(sha256.New, testSealingKey)
	m.Write([]byte("keyworker sealing key fingerprint v1"))
	want := hex.EncodeToString(m.Sum(nil)[:8])
	if got := Fingerprint(testSealingKey); got != want || len(got) != 16 {
		t.Fatalf("Fingerprint = %s, want %s", got, want)
	}
	if plain := sha256.Sum256(testSealingKey); strings.Contains(hex.EncodeToString(plain[:]), want) {
		t.Error("the fingerprint is a plain hash of the key")
	}
	if Fingerprint(bytes.Repeat([]byte{7}, 32)) == want {
		t.Error("two keys share a fingerprint")
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
				box, err := s.Seal(id, testUserID, pt)
				if err != nil {
					errs <- err
					return
				}
				got, err := s.Open(id, testUserID, box)
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
