package keys_test

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/keyworker/keyworker/keys"
)

// fixedRandom stands in for crypto/rand so that the examples print the same
// key every time. Real code leaves Generator.Rand nil.
func fixedRandom() *bytes.Reader {
	b := make([]byte, 64)
	for i := range b {
		b[i] = byte(i)
	}
	return bytes.NewReader(b)
}

func Example() {
	g := keys.Generator{
		Rand: fixedRandom(),
		Now:  func() time.Time { return time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) },
	}
	key, err := g.Generate(keys.DefaultPrefix)
	if err != nil {
		panic(err)
	}
	// Store key.ID, key.Prefix, key.Salt, key.Hash, key.HashVersion and
	// key.Last4; hand key.Plaintext() to its owner once.
	fmt.Println("to the owner:", key.Plaintext())
	fmt.Println("in logs:     ", key)

	// Later, a request presents the key.
	p, err := keys.Parse(key.Plaintext())
	if err != nil {
		panic(err)
	}
	row := &keys.Stored{Prefix: key.Prefix, Salt: key.Salt, Hash: key.Hash, HashVersion: key.HashVersion}
	fmt.Println(keys.Verify(p, row, time.Now()))
	fmt.Println(keys.Verify(p, nil, time.Now()))

	// A typo is caught without a lookup.
	_, err = keys.Parse("sk_2xuDjWzV4cUB2ZOszBVyd4gsiwZ_3oDH4mEVFvp7u7ED6UzpF5eHPrBI5AHumY7UBpOQIJZ3adg63")
	fmt.Println(err, errors.Is(err, keys.ErrChecksum))
	// Output:
	// to the owner: sk_2xuDjWzV4cUB2ZOszBVyd4gsiwZ_3oDH4mEVFvp7u7ED6UzpF5eHPrBI5AHumY7UBpOQIJz3adg63
	// in logs:      sk_2xuDjWzV4cUB2ZOszBVyd4gsiwZ_…dg63
	// valid
	// not_found
	// invalid API key: the checksum does not match: the key was mistyped, truncated or altered true
}

func ExampleSealer() {
	sealingKey, err := keys.ParseSealingKey("QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=")
	if err != nil {
		panic(err)
	}
	s, err := keys.NewSealer(sealingKey)
	if err != nil {
		panic(err)
	}
	const user = "0b5d3a4e-6f1c-4e8a-9b2d-7c3e5f6a8b9c"
	box, err := s.Seal("2xuDjWzV4cUB2ZOszBVyd4gsiwZ", user, []byte("sk_..."))
	if err != nil {
		panic(err)
	}
	plaintext, err := s.Open("2xuDjWzV4cUB2ZOszBVyd4gsiwZ", user, box)
	fmt.Printf("%s %v\n", plaintext, err)
	_, err = s.Open("2xuDjWzV4cUB2ZOszBVyd4gsiwA", user, box) // another key's row
	fmt.Println(errors.Is(err, keys.ErrOpen))
	fmt.Println(s.Fingerprint()) // logged and recorded; never the key
	// Output:
	// sk_... <nil>
	// true
	// 11cb12177ffa766d
}

func ExampleValidatePrefix() {
	fmt.Println(keys.ValidatePrefix("acme_live"))
	fmt.Println(keys.ValidatePrefix("Acme"))
	// Output:
	// <nil>
	// key prefix "Acme" is invalid: it contains an uppercase letter; use 1 to 32 lowercase letters, digits and "_", starting with a letter, with no "__" and no trailing "_" (e.g. "sk" or "acme_live")
}
