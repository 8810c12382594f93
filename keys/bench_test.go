package keys

import (
	"testing"
	"time"
)

func BenchmarkGenerate(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Generate(DefaultPrefix); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	s := mustGenerate(b, testGenerator(30), DefaultPrefix).Plaintext()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	k := mustGenerate(b, testGenerator(31), DefaultPrefix)
	p := mustParse(b, k.Plaintext())
	stored := &Stored{Prefix: k.Prefix, Salt: k.Salt, Hash: k.Hash, HashVersion: k.HashVersion}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if Verify(p, stored, now) != StatusValid {
			b.Fatal("not valid")
		}
	}
}

func BenchmarkVerifyUnknown(b *testing.B) {
	p := mustParse(b, mustGenerate(b, testGenerator(32), DefaultPrefix).Plaintext())
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if Verify(p, nil, now) != StatusNotFound {
			b.Fatal("found")
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	k := mustGenerate(b, testGenerator(33), DefaultPrefix)
	s := newTestSealer(b, testSealingKey)
	pt := []byte(k.Plaintext())
	b.ReportAllocs()
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		if _, err := s.Seal(k.ID, testUserID, pt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	k := mustGenerate(b, testGenerator(34), DefaultPrefix)
	s := newTestSealer(b, testSealingKey)
	box, err := s.Seal(k.ID, testUserID, []byte(k.Plaintext()))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(k.Plaintext())))
	for b.Loop() {
		if _, err := s.Open(k.ID, testUserID, box); err != nil {
			b.Fatal(err)
		}
	}
}
