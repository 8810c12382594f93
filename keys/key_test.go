package keys

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/segmentio/ksuid"
)

func TestGenerateGolden(t *testing.T) {
	t.Parallel()
	// Pinned output for fixed randomness (bytes 0..63) and a fixed clock.
	// The expected values were computed independently (Python: int.to_bytes,
	// zlib.crc32, hashlib.sha256), so this test guards the format that the
	// SQL side and already issued keys depend on.
	for _, tc := range []struct {
		prefix, want string
	}{
		{"sk", "sk_2xuDjWzV4cUB2ZOszBVyd4gsiwZ_3oDH4mEVFvp7u7ED6UzpF5eHPrBI5AHumY7UBpOQIJz3adg63"},
		{"acme_live", "acme_live_2xuDjWzV4cUB2ZOszBVyd4gsiwZ_3oDH4mEVFvp7u7ED6UzpF5eHPrBI5AHumY7UBpOQIJz14ZNEM"},
	} {
		g := Generator{Rand: bytes.NewReader(seq(64)), Now: func() time.Time { return testTime }}
		k := mustGenerate(t, g, tc.prefix)
		if k.Plaintext() != tc.want {
			t.Errorf("Generate(%q) = %q, want %q", tc.prefix, k.Plaintext(), tc.want)
		}
		if k.ID != "2xuDjWzV4cUB2ZOszBVyd4gsiwZ" {
			t.Errorf("ID = %q", k.ID)
		}
		if k.Prefix != tc.prefix {
			t.Errorf("Prefix = %q, want %q", k.Prefix, tc.prefix)
		}
		if k.secret != "3oDH4mEVFvp7u7ED6UzpF5eHPrBI5AHumY7UBpOQIJz" {
			t.Errorf("secret = %q", k.secret)
		}
		if want := tc.want[len(tc.want)-4:]; k.Last4 != want {
			t.Errorf("Last4 = %q, want %q", k.Last4, want)
		}
		if !bytes.Equal(k.Salt, seq(64)[48:]) {
			t.Errorf("Salt = %x, want bytes 48..63 of the random stream", k.Salt)
		}
		if got := hex.EncodeToString(k.Hash); got != "2afc65c3d054d7c71487a171980764e99062903ce13df3ea45662023a5d3c1c0" {
			t.Errorf("Hash = %s", got)
		}
		if k.HashVersion != HashVersion {
			t.Errorf("HashVersion = %d, want %d", k.HashVersion, HashVersion)
		}
	}
}

func TestGenerateProducesParsableKeys(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"sk", "acme_live", "a", "a1", strings.Repeat("p", 32)} {
		t.Run(prefix, func(t *testing.T) {
			t.Parallel()
			k, err := Generate(prefix) // crypto/rand and the real clock
			if err != nil {
				t.Fatal(err)
			}
			s := k.Plaintext()
			if len(s) != len(prefix)+78 {
				t.Errorf("len = %d, want %d", len(s), len(prefix)+78)
			}
			if want := prefix + "_" + k.ID + "_" + k.secret; !strings.HasPrefix(s, want) {
				t.Errorf("key %q does not start with prefix_id_secret", s)
			}
			id, err := ksuid.Parse(k.ID)
			if err != nil {
				t.Fatalf("ID %q is not a KSUID: %v", k.ID, err)
			}
			if d := time.Since(id.Time()); d < -time.Second || d > time.Minute {
				t.Errorf("KSUID time %v is not now", id.Time())
			}
			if len(k.Salt) != SaltSize {
				t.Errorf("salt is %d bytes, want %d", len(k.Salt), SaltSize)
			}
			sum := sha256.Sum256(append([]byte(k.secret), k.Salt...))
			if !bytes.Equal(k.Hash, sum[:]) {
				t.Errorf("Hash is not sha256(secret || salt)")
			}
			p, err := Parse(s)
			if err != nil {
				t.Fatalf("Parse(Generate()) failed: %v", err)
			}
			if p.Prefix() != prefix || p.ID() != k.ID || p.Secret() != k.secret || p.Last4() != k.Last4 || p.Plaintext() != s {
				t.Errorf("Parse gave %#v (secret ok: %v), want the generated parts", p, p.Secret() == k.secret)
			}
		})
	}
}

func TestGenerateUsesItsClock(t *testing.T) {
	t.Parallel()
	k := mustGenerate(t, testGenerator(1), "sk")
	id, err := ksuid.Parse(k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !id.Time().Equal(testTime) {
		t.Errorf("KSUID time = %v, want %v", id.Time(), testTime)
	}
}

func TestGenerateIsRandom(t *testing.T) {
	t.Parallel()
	a, b := mustGenerate(t, Generator{}, "sk"), mustGenerate(t, Generator{}, "sk")
	if a.ID == b.ID || a.secret == b.secret || bytes.Equal(a.Salt, b.Salt) {
		t.Errorf("two keys share an id, secret or salt: %v %v", a, b)
	}
}

func TestGenerateFails(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		g      Generator
		prefix string
		want   string
		is     error
	}{
		{"invalid prefix", Generator{}, "Sk", `key prefix "Sk" is invalid`, ErrPrefix},
		{"randomness fails", Generator{Rand: iotest.ErrReader(io.ErrClosedPipe)}, "sk", "generating key: reading random bytes", io.ErrClosedPipe},
		{"randomness runs short", Generator{Rand: bytes.NewReader(seq(63))}, "sk", "generating key: reading random bytes", io.ErrUnexpectedEOF},
		{"clock before 2014", Generator{Now: func() time.Time { return time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) }}, "sk", "outside the range of a KSUID", nil},
		{"clock after 2150", Generator{Now: func() time.Time { return time.Date(2151, 1, 1, 0, 0, 0, 0, time.UTC) }}, "sk", "outside the range of a KSUID", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			k, err := tc.g.Generate(tc.prefix)
			if err == nil {
				t.Fatalf("Generate = %v, want an error", k)
			}
			if k != nil {
				t.Errorf("Generate returned a key with its error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.is)
			}
		})
	}
}

// formatted returns v under every fmt verb and flag combination that might
// reveal fields.
func formatted(v any) map[string]string {
	out := map[string]string{}
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3s", "%T"} {
		out[f] = fmt.Sprintf(f, v)
	}
	out["Sprint"] = fmt.Sprint(v)
	out["Sprintln"] = fmt.Sprintln(v)
	out["in a struct %+v"] = fmt.Sprintf("%+v", struct{ K any }{v})
	out["in a slice %v"] = fmt.Sprintf("%v", []any{v})
	return out
}

// logged returns v logged through slog's JSON and text handlers.
func logged(v any) map[string]string {
	out := map[string]string{}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("msg", "key", v)
	out["slog JSON"] = buf.String()
	buf.Reset()
	slog.New(slog.NewTextHandler(&buf, nil)).Info("msg", "key", v)
	out["slog text"] = buf.String()
	buf.Reset()
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("msg", slog.Any("key", v), slog.Group("g", "key", v))
	out["slog JSON grouped"] = buf.String()
	return out
}

func TestKeyAndParsedNeverPrintTheSecret(t *testing.T) {
	t.Parallel()
	k := mustGenerate(t, testGenerator(3), "acme_live")
	p, err := Parse(k.Plaintext())
	if err != nil {
		t.Fatal(err)
	}
	redactedForm := "acme_live_" + k.ID + "_…" + k.Last4
	for _, tc := range []struct {
		name string
		v    any
	}{
		{"Key", *k},
		{"*Key", k},
		{"Parsed", p},
		{"*Parsed", &p},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			outs := formatted(tc.v)
			for name, out := range logged(tc.v) {
				outs[name] = out
			}
			b, err := json.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			outs["encoding/json"] = string(b)
			for name, out := range outs {
				assertNoSecret(t, name, out, k.Plaintext(), k.secret)
			}
			// The redacted form is what shows instead, so the tests above
			// are looking at real output.
			for _, name := range []string{"%v", "%+v", "%s", "Sprint"} {
				if outs[name] != redactedForm {
					t.Errorf("%s = %q, want %q", name, outs[name], redactedForm)
				}
			}
			if !strings.Contains(outs["%#v"], `ID:"`+k.ID+`"`) {
				t.Errorf("%%#v = %q, want the id in Go syntax", outs["%#v"])
			}
			if want := `"key":{"id":"` + k.ID + `","prefix":"acme_live","last4":"` + k.Last4 + `"}`; !strings.Contains(outs["slog JSON"], want) {
				t.Errorf("slog JSON = %q, want it to contain %q", outs["slog JSON"], want)
			}
		})
	}
}

func TestStringIsRedacted(t *testing.T) {
	t.Parallel()
	k := mustGenerate(t, testGenerator(4), "sk")
	if got, want := k.String(), "sk_"+k.ID+"_…"+k.Last4; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if k.String() == k.Plaintext() {
		t.Error("String() returns the plaintext")
	}
}
