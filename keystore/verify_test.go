package keystore_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
)

func TestKeyMadeInGoVerifiesInSQL(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	c := f.createSignup(t, user)
	r := f.reveal(t, user)
	token := r.Plaintext()

	v, err := f.store.Verify(ctx, f.db, token)
	if err != nil || v.Status != keys.StatusValid || v.UserID != user || v.KeyID != c.ID || v.ParseErr != nil {
		t.Fatalf("Store.Verify = %+v, %v; want valid for %s", v, err, c.ID)
	}
	if n := count(t, f.db, `SELECT count(*) FROM keyworker.api_keys WHERE id = $1 AND last_used_at IS NOT NULL`, c.ID); n != 1 {
		t.Fatal("a valid verification did not record last_used_at")
	}
	status, gotUser, gotKey := f.sqlVerify(t, &token)
	if status != "valid" || gotUser != user || gotKey != c.ID {
		t.Fatalf("verify_api_key = %s, %s, %s; want valid, %s, %s", status, gotUser, gotKey, user, c.ID)
	}
}

func TestHashComputedInSQLVerifiesInGo(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	k, err := keys.Generate("sk")
	if err != nil {
		t.Fatal(err)
	}
	p, err := keys.Parse(k.Plaintext())
	if err != nil {
		t.Fatal(err)
	}
	// The row's hash is computed by PostgreSQL, from the secret text and
	// the salt bytes, as the documentation of keys.HashSecret says.
	if _, err := f.db.Exec(ctx, `INSERT INTO keyworker.api_keys (id, user_id, prefix, secret_hash, salt, last4, source)
		VALUES ($1, $2, 'sk', sha256(convert_to($3::text, 'UTF8') || $4::bytea), $4, $5, 'manual')`,
		k.ID, user, p.Secret(), k.Salt, k.Last4); err != nil {
		t.Fatal(err)
	}
	var stored keys.Stored
	if err := f.db.QueryRow(ctx, `SELECT prefix, secret_hash, salt, hash_version FROM keyworker.api_keys WHERE id = $1`, k.ID).
		Scan(&stored.Prefix, &stored.Hash, &stored.Salt, &stored.HashVersion); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stored.Hash, k.Hash) {
		t.Fatal("the hash computed in SQL differs from keys.HashSecret")
	}
	if got := keys.Verify(p, &stored, time.Now()); got != keys.StatusValid {
		t.Fatalf("keys.Verify of a row hashed in SQL = %v, want valid", got)
	}
	v, err := f.store.Verify(ctx, f.db, k.Plaintext())
	if err != nil || v.Status != keys.StatusValid || v.UserID != user {
		t.Fatalf("Store.Verify = %+v, %v; want valid", v, err)
	}
}

// TestVerifyStatusesAgreeInGoAndSQL checks Store.Verify and verify_api_key
// give the same, right, status for every kind of key a caller may present.
func TestVerifyStatusesAgreeInGoAndSQL(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	manual := func() (keystore.Created, string) {
		t.Helper()
		c, plain, err := f.store.CreateWithPlaintext(ctx, f.db, keystore.NewKey{UserID: user}, keystore.Audit{Actor: keystore.ActorOperator})
		if err != nil {
			t.Fatal(err)
		}
		return c, plain
	}
	// insertRaw stores a row for k's id with the given prefix and k2's
	// salt and hash.
	insertRaw := func(k *keys.Key, prefix string, k2 *keys.Key) {
		t.Helper()
		if _, err := f.db.Exec(ctx, `INSERT INTO keyworker.api_keys (id, user_id, prefix, secret_hash, salt, last4, source)
			VALUES ($1, $2, $3, $4, $5, $6, 'manual')`, k.ID, user, prefix, k2.Hash, k2.Salt, k.Last4); err != nil {
			t.Fatal(err)
		}
	}
	gen := func() *keys.Key {
		t.Helper()
		k, err := keys.Generate("sk")
		if err != nil {
			t.Fatal(err)
		}
		return k
	}

	_, valid := manual()
	_, revoked := manual()
	revokedC, _ := keys.Parse(revoked)
	if ok, err := f.store.Revoke(ctx, f.db, revokedC.ID(), time.Now().Add(-time.Second), keystore.Audit{}); err != nil || !ok {
		t.Fatalf("Revoke = %v, %v", ok, err)
	}
	_, scheduled := manual()
	scheduledP, _ := keys.Parse(scheduled)
	if ok, err := f.store.Revoke(ctx, f.db, scheduledP.ID(), time.Now().Add(time.Hour), keystore.Audit{}); err != nil || !ok {
		t.Fatalf("scheduled Revoke = %v, %v", ok, err)
	}
	_, expired := manual()
	expiredP, _ := keys.Parse(expired)
	if _, err := f.db.Exec(ctx, `UPDATE keyworker.api_keys SET expires_at = now() - interval '1 minute' WHERE id = $1`, expiredP.ID()); err != nil {
		t.Fatal(err)
	}
	disabledC, disabled := manual()
	if _, _, err := f.store.User(user).SetDisabled(ctx, f.db, disabledC.ID, true, keystore.Audit{Actor: keystore.ActorUser}); err != nil {
		t.Fatal(err)
	}
	unknown := gen()
	wrongSecret, other := gen(), gen()
	insertRaw(wrongSecret, "sk", other)
	wrongPrefix := gen()
	insertRaw(wrongPrefix, "acme", wrongPrefix)

	for _, c := range []struct {
		name  string
		token *string
		want  keys.Status
	}{
		{"valid", &valid, keys.StatusValid},
		{"revoked", &revoked, keys.StatusRevoked},
		{"scheduled revocation in the future", &scheduled, keys.StatusValid},
		{"expired", &expired, keys.StatusExpired},
		{"disabled", &disabled, keys.StatusDisabled},
		{"unknown id", new(unknown.Plaintext()), keys.StatusNotFound},
		{"wrong secret", new(wrongSecret.Plaintext()), keys.StatusNotFound},
		{"wrong prefix", new(wrongPrefix.Plaintext()), keys.StatusNotFound},
		{"truncated", new(valid[:len(valid)-1]), keys.StatusNotFound},
		{"one character changed", new(valid[:len(valid)-1] + "!"), keys.StatusNotFound},
		{"random garbage", new("sk_" + strings.Repeat("zZ9_", 20)), keys.StatusNotFound},
		{"empty", new(""), keys.StatusNotFound},
		{"NULL", nil, keys.StatusNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			sqlStatus, sqlUser, sqlKey := f.sqlVerify(t, c.token)
			if sqlStatus != c.want.String() {
				t.Errorf("verify_api_key = %s, want %s", sqlStatus, c.want)
			}
			if c.want == keys.StatusNotFound && sqlUser != "" {
				t.Errorf("verify_api_key told the user id of a %s key", c.name)
			}
			token := ""
			if c.token != nil {
				token = *c.token
			}
			v, err := f.store.Verify(ctx, f.db, token)
			if err != nil {
				t.Fatalf("Store.Verify: %v", err)
			}
			if v.Status != c.want {
				t.Errorf("Store.Verify = %v, want %v", v.Status, c.want)
			}
			if c.want == keys.StatusNotFound && (v.UserID != "" || v.KeyID != "") {
				t.Errorf("Store.Verify told the ids of a %s key: %+v", c.name, v)
			}
			if c.want != keys.StatusNotFound && v.UserID != user {
				t.Errorf("Store.Verify user = %q, want %q", v.UserID, user)
			}
			if v.UserID != sqlUser || v.KeyID != sqlKey {
				t.Errorf("ids: Store.Verify %q %q, verify_api_key %q %q", v.UserID, v.KeyID, sqlUser, sqlKey)
			}
		})
	}

	v, _ := f.store.Verify(ctx, f.db, valid[:len(valid)-1])
	var perr *keys.ParseError
	if !errors.As(v.ParseErr, &perr) {
		t.Fatalf("a truncated key's ParseErr = %v, want a *keys.ParseError", v.ParseErr)
	}
	if strings.Contains(v.ParseErr.Error(), valid[len(valid)-20:len(valid)-1]) {
		t.Fatal("the parse error quotes the key")
	}
}

// TestEveryOneCharacterChangeIsNotFoundInSQLAndGo alters a real key at every
// position (every other base62 character, a few others, a deletion, a swap
// with the next character) and checks that verify_api_key answers not_found
// for each, as Store.Verify and keys.Parse reject it: SQL checks the checksum
// as Go does.
func TestEveryOneCharacterChangeIsNotFoundInSQLAndGo(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	user := f.newUser(t)
	_, token, err := f.store.CreateWithPlaintext(ctx, f.db, keystore.NewKey{UserID: user}, keystore.Audit{Actor: keystore.ActorOperator})
	if err != nil {
		t.Fatal(err)
	}
	if status, _, _ := f.sqlVerify(t, &token); status != "valid" {
		t.Fatalf("the unaltered key is %s in SQL, want valid", status)
	}
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-. é"
	var altered []string
	for i := range len(token) {
		for _, c := range alphabet {
			if string(c) != token[i:i+1] {
				altered = append(altered, token[:i]+string(c)+token[i+1:])
			}
		}
		altered = append(altered, token[:i]+token[i+1:])
		if i+1 < len(token) && token[i] != token[i+1] {
			altered = append(altered, token[:i]+token[i+1:i+2]+token[i:i+1]+token[i+2:])
		}
	}

	rows, err := f.db.Query(ctx, `SELECT t, v.status FROM unnest($1::text[]) WITH ORDINALITY AS a (t, n),
		LATERAL keyworker.verify_api_key(a.t) v WHERE v.status <> 'not_found' ORDER BY a.n`, altered)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	accepted := 0
	for rows.Next() {
		var tok, status string
		if err := rows.Scan(&tok, &status); err != nil {
			t.Fatal(err)
		}
		if accepted++; accepted <= 5 {
			t.Errorf("verify_api_key = %s for the key altered at position %d", status, firstDiff(tok, token))
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if accepted > 0 {
		t.Errorf("verify_api_key accepted %d of %d altered keys", accepted, len(altered))
	}

	for _, tok := range altered {
		if _, err := keys.Parse(tok); err == nil {
			t.Fatalf("keys.Parse accepted the key altered at position %d", firstDiff(tok, token))
		}
		v, err := f.store.Verify(ctx, f.db, tok)
		if err != nil || v.Status != keys.StatusNotFound {
			t.Fatalf("Store.Verify of the key altered at position %d = %v, %v; want not_found", firstDiff(tok, token), v.Status, err)
		}
	}
	t.Logf("%d altered keys checked", len(altered))
}

func firstDiff(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
