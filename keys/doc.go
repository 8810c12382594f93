// Package keys makes, parses, hashes, verifies and seals API keys. It is
// pure Go: no database, no River, no clock or randomness it does not let
// you replace.
//
// # Format
//
// A key is "<prefix>_<ksuid>_<secret><crc>", like this one (from Example):
//
//	sk_2xuDjWzV4cUB2ZOszBVyd4gsiwZ_3oDH4mEVFvp7u7ED6UzpF5eHPrBI5AHumY7UBpOQIJz3adg63
//	└┘ └─────────────────────────┘ └─────────────────────────────────────────┘└────┘
//	prefix       KSUID, 27                         secret, 43                 CRC, 6
//
// The parts:
//
//   - The prefix (DefaultPrefix "sk", or e.g. "acme_live") names the issuer
//     and environment. It is 1 to 32 lowercase letters, digits and "_", so a
//     key is one "word" that a double click selects and a secret scanner can
//     match with a regular expression.
//   - The KSUID is the key's id and its row's primary key: time-sortable and
//     public. It may be logged.
//   - The secret is 32 bytes from crypto/rand written as fixed-width base62
//     (43 characters, left-padded with '0', KSUID's alphabet 0-9A-Za-z).
//   - The checksum is the CRC-32 (IEEE) of every byte before it, as 6
//     fixed-width base62 characters.
//
// Every field has a fixed width, so Parse reads from the right (the prefix
// may contain "_") and a key has exactly one spelling: a string parses only
// if Generate could have produced it, and Parsed.Plaintext returns it
// unchanged.
//
// # Why a checksum
//
// A CRC-32 detects every error burst of up to 32 bits, so it catches every
// single-character typo and every swap of two adjacent characters, without
// a database lookup (the tests try every substitution at every position);
// a string with characters dropped or added fails the fixed layout or the
// checksum. Servers reject garbage before touching the database, and secret
// scanners (GitHub's among them) can tell a real leaked key from a random
// string with few false positives. The checksum is not a MAC: anyone can
// compute it, and it protects nothing. The last 4 characters of a key,
// which are shown and logged, are checksum digits.
//
// # Why salted SHA-256
//
// The database stores sha256(secret || salt) with a 16-byte random salt
// (HashSecret), never the secret. bcrypt, scrypt and Argon2 are slow on
// purpose because passwords are guessable; a 256-bit random secret is not,
// so one fast hash is enough and keeps verification cheap enough to do on
// every request, in Go (Verify) or in SQL with PostgreSQL's built-in
// sha256. The salt keeps equal secrets apart and precomputed tables
// useless. HashVersion records the scheme so it can change later.
//
// Verify compares in constant time, and an unknown id does the same hashing
// work as a known one and gets the same answer as a wrong secret
// (StatusNotFound), so responses tell an attacker nothing about which ids
// exist. Revoked and expired are reported only to holders of the right
// secret.
//
// # Redaction
//
// Key and Parsed never print their secret. fmt (every verb, %v, %+v, %#v
// and %s included), slog (LogValue) and encoding/json see only the prefix,
// the id and the last 4 characters, as in "sk_<id>_…<last4>". The plaintext
// comes out only through the explicitly named Plaintext method (and
// Parsed.Secret, for hashing). Parse errors (*ParseError) say what is
// wrong without quoting any part of the input.
//
// # Sealing
//
// Between creation and pick-up by its owner a key waits encrypted: a Sealer
// seals it with AES-256-GCM under a sealing key (ParseSealingKey,
// GenerateSealingKey) that lives with the worker, not in the database, with
// the key's id and its user's id as associated data, so a box only opens
// for its own key and user. Each box records the Fingerprint of the key
// that sealed it, so a Sealer given previous keys (rotation) opens each box
// with the right one, and a box sealed under a key it does not hold fails
// with ErrSealedUnderAnotherKey, which no retry can fix.
package keys
