package sql_test

import (
	"context"
	"hash/crc32"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/keys"
	kwsql "github.com/keyworker/keyworker/sql"
)

// TestCRC32InSQLIsGosCRC32 checks the table-driven crc32 against
// hash/crc32.ChecksumIEEE, and key_checksum against the checksum of keys
// that keys.Generate made, for every prefix length.
func TestCRC32InSQLIsGosCRC32(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := migrated(t)

	inputs := [][]byte{{}, []byte("a"), []byte("123456789")}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
		inputs = append(inputs, []byte{byte(i)})
	}
	inputs = append(inputs, all)
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		b := make([]byte, r.IntN(200))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		inputs = append(inputs, b)
	}
	for _, in := range inputs {
		var got int64
		if err := p.QueryRow(ctx, `SELECT keyworker.crc32($1)`, in).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if want := int64(crc32.ChecksumIEEE(in)); got != want {
			t.Fatalf("crc32(%x) = %d in SQL, %d in Go", in, got, want)
		}
	}
	var check string
	if err := p.QueryRow(ctx, `SELECT keyworker.crc32('123456789'::bytea)::text`).Scan(&check); err != nil || check != "3421780262" {
		t.Fatalf("crc32 of the check string 123456789 = %s, %v; want 3421780262 (0xCBF43926)", check, err)
	}

	prefix := "a"
	for len(prefix) <= keys.MaxPrefixLen {
		k, err := keys.Generate(prefix)
		if err != nil {
			t.Fatal(err)
		}
		token := k.Plaintext()
		var got string
		if err := p.QueryRow(ctx, `SELECT keyworker.key_checksum($1)`, token[:len(token)-6]).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if want := token[len(token)-6:]; got != want {
			t.Fatalf("key_checksum of a key with prefix %q = %s, want %s", prefix, got, want)
		}
		prefix += "b"
	}
}

// insertKey stores k for user as the Go store would, and returns its
// plaintext.
func insertKey(t *testing.T, p *pgxpool.Pool, user string, k *keys.Key) string {
	t.Helper()
	if _, err := p.Exec(context.Background(), `INSERT INTO keyworker.api_keys (id, user_id, prefix, secret_hash, salt, last4, source)
		VALUES ($1, $2, $3, $4, $5, $6, 'manual')`, k.ID, user, k.Prefix, k.Hash, k.Salt, k.Last4); err != nil {
		t.Fatal(err)
	}
	return k.Plaintext()
}

func verifySQL(t *testing.T, p *pgxpool.Pool, token string) string {
	t.Helper()
	var status string
	if err := p.QueryRow(context.Background(), `SELECT status FROM keyworker.verify_api_key($1)`, token).Scan(&status); err != nil {
		t.Fatal(err)
	}
	return status
}

// wrongChecksum returns token with its last character changed.
func wrongChecksum(token string) string {
	last := byte('A')
	if token[len(token)-1] == last {
		last = 'B'
	}
	return token[:len(token)-1] + string(last)
}

// TestMigrationFixesVerifyInAnExistingDatabase takes a database as release
// 002 left it, where a key with a wrong checksum verified, and checks that
// migrating it replaces verify_api_key and deletes the sealed secrets that
// 002's revoke_api_key left behind.
func TestMigrationFixesVerifyInAnExistingDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := pool(t, harness.Database(t))
	if _, err := kwsql.Migrate(ctx, p, kwsql.WithMaxVersion(kwsql.Config{}, 2)); err != nil {
		t.Fatal(err)
	}
	const user = "00000000-0000-4000-8000-000000000001"
	if _, err := p.Exec(ctx, `INSERT INTO auth.users (id, created_at) VALUES ($1, now())`, user); err != nil {
		t.Fatal(err)
	}
	k, err := keys.Generate("sk")
	if err != nil {
		t.Fatal(err)
	}
	token := insertKey(t, p, user, k)
	revoked, err := keys.Generate("sk")
	if err != nil {
		t.Fatal(err)
	}
	insertKey(t, p, user, revoked)
	if _, err := p.Exec(ctx, `INSERT INTO keyworker.key_reveals (key_id, user_id, sealed, expires_at)
		VALUES ($1, $2, '\x00', now() + interval '1 day'), ($3, $2, '\x00', now() + interval '1 day')`, k.ID, user, revoked.ID); err != nil {
		t.Fatal(err)
	}
	var ok bool
	if err := p.QueryRow(ctx, `SELECT keyworker.revoke_api_key($1)`, revoked.ID).Scan(&ok); err != nil || !ok {
		t.Fatalf("revoke_api_key at 002 = %v, %v", ok, err)
	}
	if got := verifySQL(t, p, wrongChecksum(token)); got != "valid" {
		t.Fatalf("at 002 a wrong checksum verified as %s: the test no longer starts from the old function", got)
	}

	res, err := kwsql.Migrate(ctx, p, kwsql.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Applied) == 0 || res.Applied[0] != "003_security" {
		t.Fatalf("migrating an 002 database applied %v, want 003_security first", res.Applied)
	}
	if got := verifySQL(t, p, wrongChecksum(token)); got != "not_found" {
		t.Fatalf("after migrating, a wrong checksum verifies as %s, want not_found", got)
	}
	if got := verifySQL(t, p, token); got != "valid" {
		t.Fatalf("after migrating, the right key verifies as %s, want valid", got)
	}
	var waiting []string
	rows, err := p.Query(ctx, `SELECT key_id FROM keyworker.key_reveals ORDER BY key_id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		waiting = append(waiting, id)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if len(waiting) != 1 || waiting[0] != k.ID {
		t.Fatalf("sealed secrets waiting after migrating: %v, want only the live key %s", waiting, k.ID)
	}
	var events int
	if err := p.QueryRow(ctx, `SELECT count(*) FROM keyworker.key_events WHERE key_id = $1 AND event = 'reveal_deleted'`, revoked.ID).Scan(&events); err != nil || events != 1 {
		t.Fatalf("reveal_deleted events of the revoked key: %d, %v; want 1", events, err)
	}
}
