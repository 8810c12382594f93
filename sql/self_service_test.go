package sql_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/keys"
	kwsql "github.com/keyworker/keyworker/sql"
)

// TestSelfServiceMigrationOnAnExistingDatabaseAsHostedSupabasesRole takes a
// database as release 005 left it, migrated by a role shaped like hosted
// Supabase's postgres (not a superuser, not the owner of auth.users), with
// keys in it, and migrates it to 006 as that role: the keys keep verifying,
// 'user' becomes a source, a disabled key verifies as disabled, the
// expiry index is there, and the lists show disabled_at as their last
// column, granted to end users by the migration itself.
func TestSelfServiceMigrationOnAnExistingDatabaseAsHostedSupabasesRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin := harness.Database(t)
	hosted, err := testenv.SetupHostedRole(ctx, admin, "kw_hosted_postgres")
	if err != nil {
		t.Fatal(err)
	}
	p := pool(t, hosted)
	if _, err := kwsql.Migrate(ctx, p, kwsql.WithMaxVersion(kwsql.Config{}, 5)); err != nil {
		t.Fatalf("migrating to 005 as the hosted role: %v", err)
	}
	const user = "00000000-0000-4000-8000-000000000006"
	if _, err := p.Exec(ctx, `INSERT INTO auth.users (id, created_at) VALUES ($1, now())`, user); err != nil {
		t.Fatal(err)
	}
	gen := func() *keys.Key {
		t.Helper()
		k, err := keys.Generate("sk")
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	old, toDisable, userKey := gen(), gen(), gen()
	oldToken := insertKey(t, p, user, old)
	disabledToken := insertKey(t, p, user, toDisable)
	insertUserKey := func() error {
		_, err := p.Exec(ctx, `INSERT INTO keyworker.api_keys (id, user_id, prefix, secret_hash, salt, last4, source)
			VALUES ($1, $2, $3, $4, $5, $6, 'user')`, userKey.ID, user, userKey.Prefix, userKey.Hash, userKey.Salt, userKey.Last4)
		return err
	}
	if err := insertUserKey(); err == nil {
		t.Fatal("at 005 a key of source 'user' was accepted: the test no longer starts from the old constraint")
	}

	res, err := kwsql.Migrate(ctx, p, kwsql.WithMaxVersion(kwsql.Config{}, 6))
	if err != nil {
		t.Fatalf("migrating to 006 as the hosted role: %v", err)
	}
	if !slices.Equal(res.Applied, []string{"006_self_service"}) {
		t.Fatalf("applied %v, want 006_self_service", res.Applied)
	}
	if err := insertUserKey(); err != nil {
		t.Fatalf("after 006, a key of source 'user': %v", err)
	}
	if got := verifySQL(t, p, oldToken); got != "valid" {
		t.Fatalf("a key made before 006 verifies as %s, want valid", got)
	}
	if _, err := p.Exec(ctx, `UPDATE keyworker.api_keys SET disabled_at = now() WHERE id = $1`, toDisable.ID); err != nil {
		t.Fatal(err)
	}
	var status, gotUser, gotKey string
	if err := p.QueryRow(ctx, `SELECT status, user_id::text, key_id FROM keyworker.verify_api_key($1)`, disabledToken).Scan(&status, &gotUser, &gotKey); err != nil {
		t.Fatal(err)
	}
	if status != "disabled" || gotUser != user || gotKey != toDisable.ID {
		t.Fatalf("a disabled key: verify_api_key = %s, %s, %s; want disabled with its user and id", status, gotUser, gotKey)
	}
	var touched bool
	if err := p.QueryRow(ctx, `SELECT last_used_at IS NOT NULL FROM keyworker.api_keys WHERE id = $1`, toDisable.ID).Scan(&touched); err != nil || touched {
		t.Fatalf("verifying a disabled key recorded its use (%v)", err)
	}

	var indexDef string
	if err := p.QueryRow(ctx, `SELECT pg_get_indexdef('keyworker.api_keys_expires_at_idx'::regclass)`).Scan(&indexDef); err != nil {
		t.Fatalf("the expiry index: %v", err)
	}
	if want := "WHERE (expires_at IS NOT NULL)"; !strings.Contains(indexDef, want) {
		t.Fatalf("expiry index %q is not partial (%s)", indexDef, want)
	}

	// disabled_at is the last column of the view and of both lists, as
	// PostgREST clients that read columns by position expect.
	for _, rel := range []string{
		`SELECT * FROM keyworker_api.api_keys`,
		`SELECT * FROM keyworker_api.list_api_keys()`,
		`SELECT * FROM keyworker.list_api_keys()`,
	} {
		rows, err := p.Query(ctx, rel+` LIMIT 0`)
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		var names []string
		for _, f := range rows.FieldDescriptions() {
			names = append(names, f.Name)
		}
		rows.Close()
		want := []string{"id", "user_id", "name", "prefix", "last4", "source", "created_at", "expires_at", "revoked_at", "last_used_at", "disabled_at"}
		if !slices.Equal(names, want) {
			t.Errorf("%s has columns %v, want %v", rel, names, want)
		}
	}

	// The migration gives back the grants of what it made again, before
	// grants.sql runs (WithMaxVersion skips grants.sql); PUBLIC may execute
	// none of the functions it made.
	var count int
	if err := p.QueryRow(ctx, `SELECT
		(has_table_privilege('authenticated', 'keyworker_api.api_keys', 'SELECT'))::int
		+ (has_function_privilege('authenticated', 'keyworker_api.list_api_keys()', 'EXECUTE'))::int
		+ (has_function_privilege('service_role', 'keyworker.list_api_keys(uuid)', 'EXECUTE'))::int
		+ (has_column_privilege('service_role', 'keyworker.api_keys', 'disabled_at', 'SELECT'))::int`).Scan(&count); err != nil || count != 4 {
		t.Fatalf("after 006 alone, %d of the 4 grants of the lists are held (%v)", count, err)
	}
	if err := p.QueryRow(ctx, `SELECT count(*) FROM pg_proc p WHERE p.pronamespace IN ('keyworker'::regnamespace, 'keyworker_api'::regnamespace)
		AND p.proname IN ('verify_api_key', 'list_api_keys')
		AND EXISTS (SELECT FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a WHERE a.grantee = 0)`).Scan(&count); err != nil || count != 0 {
		t.Fatalf("PUBLIC may execute %d functions after 006 (%v)", count, err)
	}

	// After the whole run (River's migrations and grants.sql, as the hosted
	// role), an end user sees their keys' disabled_at through the view.
	if _, err := kwsql.Migrate(ctx, p, kwsql.Config{}); err != nil {
		t.Fatalf("the rest of the migration run as the hosted role: %v", err)
	}
	tx, err := p.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SET LOCAL ROLE authenticated`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('request.jwt.claims', $1, true)`, `{"sub":"`+user+`","role":"authenticated"}`); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(ctx, `SELECT id FROM keyworker_api.api_keys WHERE disabled_at IS NOT NULL`)
	if err != nil {
		t.Fatalf("an end user reading the view after 006: %v", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || !slices.Equal(ids, []string{toDisable.ID}) {
		t.Fatalf("an end user's disabled keys through the view: %v, %v; want [%s]", ids, err, toDisable.ID)
	}
}

// TestEndUsersRevokeTheirDisabledKeys: the end users' revoke_api_key revokes
// a disabled key as any other (the migration's decision: revoking needs to
// know nothing of disabling), and a revoked key verifies as revoked, not
// disabled.
func TestEndUsersRevokeTheirDisabledKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := migrated(t)
	const user = "00000000-0000-4000-8000-000000000016"
	if _, err := p.Exec(ctx, `INSERT INTO auth.users (id, created_at) VALUES ($1, now())`, user); err != nil {
		t.Fatal(err)
	}
	k, err := keys.Generate("sk")
	if err != nil {
		t.Fatal(err)
	}
	token := insertKey(t, p, user, k)
	if _, err := p.Exec(ctx, `UPDATE keyworker.api_keys SET disabled_at = now() WHERE id = $1`, k.ID); err != nil {
		t.Fatal(err)
	}
	tx, err := p.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SET LOCAL ROLE authenticated; SELECT set_config('request.jwt.claims', '{"sub":"`+user+`","role":"authenticated"}', true)`); err != nil {
		t.Fatal(err)
	}
	var ok bool
	if err := tx.QueryRow(ctx, `SELECT keyworker_api.revoke_api_key($1)`, k.ID).Scan(&ok); err != nil || !ok {
		t.Fatalf("revoking one's own disabled key = %v, %v; want true", ok, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := verifySQL(t, p, token); got != "revoked" {
		t.Fatalf("a revoked disabled key verifies as %s, want revoked", got)
	}
}
