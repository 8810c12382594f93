package sql_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"

	"github.com/keyworker/keyworker/internal/pgerr"
	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/keys"
	kwsql "github.com/keyworker/keyworker/sql"
)

// TestLifecycleNoticesMigration migrates a database as 005 left it, with a
// key that expired before the upgrade, and checks what 007 adds: the time
// lifecycle notices start from (after that key's expiry, so it gets no
// api_key.expired notice), disabled_at, the expires_at index, and
// key_notices, whose primary key lets one notice per key and event in (per
// occurrence for api_key.disabled, which alone may have one), which refuses
// an unknown event type, goes with its key, and is closed to every API
// role.
func TestLifecycleNoticesMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := pool(t, harness.Database(t))
	if _, err := kwsql.Migrate(ctx, p, kwsql.WithMaxVersion(kwsql.Config{}, 5)); err != nil {
		t.Fatal(err)
	}
	const user = "00000000-0000-4000-8000-000000000007"
	if _, err := p.Exec(ctx, `INSERT INTO auth.users (id, created_at) VALUES ($1, now())`, user); err != nil {
		t.Fatal(err)
	}
	k, err := keys.Generate("sk")
	if err != nil {
		t.Fatal(err)
	}
	insertKey(t, p, user, k)
	if _, err := p.Exec(ctx, `UPDATE keyworker.api_keys SET expires_at = now() - interval '1 hour' WHERE id = $1`, k.ID); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	res, err := kwsql.Migrate(ctx, p, kwsql.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Applied) == 0 || res.Applied[len(res.Applied)-1] != "007_lifecycle_notices" {
		t.Fatalf("migrating a 005 database applied %v, want 007_lifecycle_notices last", res.Applied)
	}

	var since time.Time
	var expired bool
	if err := p.QueryRow(ctx, `SELECT i.lifecycle_notices_since, k.expires_at < i.lifecycle_notices_since
		FROM keyworker.installation i, keyworker.api_keys k WHERE k.id = $1`, k.ID).Scan(&since, &expired); err != nil {
		t.Fatal(err)
	}
	if since.Before(before.Add(-time.Minute)) || !expired {
		t.Fatalf("lifecycle_notices_since = %v (key expired before it: %v), want the migration's time", since, expired)
	}
	var disabled *time.Time
	if err := p.QueryRow(ctx, `SELECT disabled_at FROM keyworker.api_keys WHERE id = $1`, k.ID).Scan(&disabled); err != nil || disabled != nil {
		t.Fatalf("disabled_at = %v, %v; want NULL", disabled, err)
	}
	if n := count(t, p, `SELECT count(*) FROM pg_indexes WHERE schemaname = 'keyworker' AND indexname = 'api_keys_expires_at_idx'`); n != 1 {
		t.Fatalf("api_keys_expires_at_idx missing")
	}

	insert := `INSERT INTO keyworker.key_notices (key_id, type) VALUES ($1, $2) ON CONFLICT DO NOTHING`
	for i, want := range []int64{1, 0} {
		tag, err := p.Exec(ctx, insert, k.ID, "api_key.expired")
		if err != nil || tag.RowsAffected() != want {
			t.Fatalf("insert %d: %v rows, %v; want %d", i, tag.RowsAffected(), err, want)
		}
	}
	withOccurrence := `INSERT INTO keyworker.key_notices (key_id, type, occurrence) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`
	for i, c := range []struct {
		occurrence string
		want       int64
	}{{"", 1}, {"1767225600000000", 1}, {"1767225600000001", 1}, {"1767225600000000", 0}} {
		tag, err := p.Exec(ctx, withOccurrence, k.ID, "api_key.disabled", c.occurrence)
		if err != nil || tag.RowsAffected() != c.want {
			t.Fatalf("disabled notice %d (occurrence %q): %v rows, %v; want %d", i, c.occurrence, tag.RowsAffected(), err, c.want)
		}
	}
	if _, err := p.Exec(ctx, withOccurrence, k.ID, "api_key.revoked", "1767225600000000"); pgerr.Code(err) != pgerrcode.CheckViolation {
		t.Fatalf("an occurrence of a once-per-key event: %v, want a check violation", err)
	}
	if _, err := p.Exec(ctx, insert, k.ID, "api_key.deleted"); pgerr.Code(err) != pgerrcode.CheckViolation {
		t.Fatalf("an unknown event type: %v, want a check violation", err)
	}
	if _, err := p.Exec(ctx, insert, "0000000000000000000000000000", "api_key.revoked"); pgerr.Code(err) != pgerrcode.ForeignKeyViolation {
		t.Fatalf("a notice of no key: %v, want a foreign key violation", err)
	}
	for _, role := range []string{"anon", "authenticated", "service_role"} {
		if n := count(t, p, `SELECT count(*) FROM pg_roles WHERE rolname = $1 AND (has_table_privilege(rolname, 'keyworker.key_notices', 'SELECT')
			OR has_table_privilege(rolname, 'keyworker.key_notices', 'INSERT') OR has_table_privilege(rolname, 'keyworker.key_notices', 'DELETE'))`, role); n != 0 {
			t.Errorf("%s has privileges on key_notices", role)
		}
	}
	if n := count(t, p, `SELECT count(*) FROM pg_class WHERE oid = 'keyworker.key_notices'::regclass AND relrowsecurity`); n != 1 {
		t.Error("key_notices has no row level security")
	}
	if _, err := p.Exec(ctx, `DELETE FROM keyworker.api_keys WHERE id = $1`, k.ID); err != nil {
		t.Fatal(err)
	}
	if n := count(t, p, `SELECT count(*) FROM keyworker.key_notices`); n != 0 {
		t.Fatalf("%d notices outlived their key", n)
	}
}

// count is testenv.Count: a SELECT count(*) style query's result.
var count = testenv.Count
