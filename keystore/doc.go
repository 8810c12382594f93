// Package keystore stores API keys in PostgreSQL: it creates them (keys.Generate,
// salted hash, sealed secret for a one-time pick-up), lists, revokes, rotates
// and verifies them, hands the sealed secret to its owner once, and writes
// every change to the audit table key_events. The River jobs, the HTTP
// server's reveal endpoint and the operator's `worker keys` commands all go
// through a Store, so the rules live in one place.
//
// # What is stored
//
// <schema>.api_keys holds the key's id (its KSUID), user, name, prefix,
// sha256(secret || salt), the salt, the hash version, the last 4 characters,
// source ("signup", "manual" or "user") and its times (created, expires,
// revoked, last used, disabled); never the secret. A unique
// index allows one signup key per user, which makes CreateTx idempotent: a
// second signup key for the same user is not made, and the first one's
// metadata comes back with Created.Existing set.
//
// Between creation and pick-up the plaintext waits in <schema>.key_reveals,
// sealed by a keys.Sealer (AES-256-GCM under a sealing key that lives with
// the worker, the key id and user id as associated data), until RevealTTL
// passes. Reveal deletes the row and opens it in one transaction, so a key
// is shown at most once, and only to the user of both the row and the key;
// PurgeExpiredReveals deletes rows whose time has passed.
//
// # A user's own keys
//
// Store.User(userID) returns UserKeys, the operations of the HTTP API on
// one user's keys: List, Get, CreateTx, RotateTx, SetDisabled and Revoke.
// Each acts only on that user's keys; another user's key id is ErrNotFound,
// word for word as an id no key has. CreateTx and RotateTx take a per-user
// transaction-scoped advisory lock and count the user's live keys (not
// revoked, not expired; disabled ones count, as they can be enabled again)
// against a limit the caller passes: ErrLimitReached. A disabled key
// verifies as disabled (Verify and verify_api_key agree) until enabled;
// disabling is reversible, revoking is not.
//
// # One sealing key
//
// <schema>.sealing_key records the fingerprint (keys.Fingerprint, never the
// key) of the key every worker must seal under. CheckSealingKey records it
// on first use, refuses a worker with another key, and moves it on a
// rotation (a new key with the recorded one as the Sealer's previous key);
// Reseal then seals what waits again under the new key.
//
// # Audit
//
// Every method that changes something writes a key_events row in the same
// statement or transaction: created, revealed, revoked, rotated, disabled,
// enabled, reveal_expired, and whatever a caller records through EventTx. Audit says
// who acted (worker, operator or user), in which job and attempt, with a
// JSON detail. Details are stored as given: callers must not put a secret,
// an email address or a token in them.
//
// # Secrets
//
// No method returns a plaintext except CreateWithPlaintext, Rotate and
// RotateTx (for the operator's terminal), UserKeys.CreateTx and
// UserKeys.RotateTx (for the user, once, in the API's answer), and Reveal
// (for its owner, through Revealed.Plaintext, which fmt and slog never
// print). Errors never contain
// a key, a secret or a sealed box.
//
// # Time
//
// Config.Now is the clock of every time the Store writes or compares:
// created_at, reveal expiry, revocation and expiry checks in Verify. The SQL
// function verify_api_key uses the database's now(); with the default clock
// the two agree.
//
// A Store is safe for concurrent use.
package keystore
