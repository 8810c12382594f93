package keystore_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/internal/pgerr"
	"github.com/keyworker/keyworker/keystore"
	kwsql "github.com/keyworker/keyworker/sql"
)

// supabaseRecipe is what Supabase's guide for a custom exposed schema has
// its users run on it.
func supabaseRecipe(schema string) string {
	s := pgx.Identifier{schema}.Sanitize()
	return fmt.Sprintf(`
		GRANT USAGE ON SCHEMA %[1]s TO anon, authenticated, service_role;
		GRANT ALL ON ALL TABLES IN SCHEMA %[1]s TO anon, authenticated, service_role;
		GRANT ALL ON ALL ROUTINES IN SCHEMA %[1]s TO anon, authenticated, service_role;
		GRANT ALL ON ALL SEQUENCES IN SCHEMA %[1]s TO anon, authenticated, service_role;
		ALTER DEFAULT PRIVILEGES IN SCHEMA %[1]s GRANT ALL ON TABLES TO anon, authenticated, service_role;
		ALTER DEFAULT PRIVILEGES IN SCHEMA %[1]s GRANT ALL ON ROUTINES TO anon, authenticated, service_role;
		ALTER DEFAULT PRIVILEGES IN SCHEMA %[1]s GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;`, s)
}

// caller is who makes a request: a role and the sub of its access token
// ("" for anon's token, which has none).
type caller struct{ name, role, sub string }

// request runs fn in a transaction as PostgREST runs a request: SET LOCAL
// ROLE and the token's claims in request.jwt.claims. It commits when fn
// succeeds and returns fn's error otherwise.
func (f *fixture) request(t *testing.T, c caller, fn func(tx pgx.Tx) error) error {
	t.Helper()
	ctx := context.Background()
	tx, err := f.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+pgx.Identifier{c.role}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	claims := fmt.Sprintf(`{"role":%q}`, c.role)
	if c.sub != "" {
		claims = fmt.Sprintf(`{"sub":%q,"role":%q}`, c.sub, c.role)
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('request.jwt.claims', $1, true)`, claims); err != nil {
		t.Fatal(err)
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// queryStrings runs q as c and returns its first column.
func (f *fixture) queryStrings(t *testing.T, c caller, q string, args ...any) ([]string, error) {
	t.Helper()
	var out []string
	err := f.request(t, c, func(tx pgx.Tx) error {
		rows, err := tx.Query(context.Background(), q, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return out, err
}

// TestEndUsersReachOnlyTheirOwnKeysAfterSupabasesRecipe applies the grants
// Supabase's guide gives for an exposed schema, to the end users' schema
// keyworker_api (what the README says to expose) and, separately, to the
// internal schema keyworker (what it says not to), and then acts as
// PostgREST does for anon and two users: each lists only its own keys'
// metadata, reaches no hash, salt or sealed secret, revokes only its own
// keys and only now, and reads or writes no River job and no internal row;
// anon gets nothing. service_role still verifies keys.
func TestEndUsersReachOnlyTheirOwnKeysAfterSupabasesRecipe(t *testing.T) {
	t.Parallel()
	for _, exposed := range []string{"", "keyworker_api", "keyworker"} {
		name := "recipe on " + exposed
		if exposed == "" {
			name = "no recipe"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			ctx := context.Background()
			if exposed != "" {
				if _, err := f.db.Exec(ctx, supabaseRecipe(exposed)); err != nil {
					t.Fatalf("applying the recipe to %s: %v", exposed, err)
				}
			}
			aliceID, bobID := f.newUser(t), f.newUser(t)
			aliceKey := f.createSignup(t, aliceID)
			bobKey := f.createSignup(t, bobID)
			aliceManual, _, err := f.store.CreateWithPlaintext(ctx, f.db, keystore.NewKey{UserID: aliceID, Name: "second"}, keystore.Audit{Actor: keystore.ActorOperator})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.db.Exec(ctx, `INSERT INTO keyworker.river_job (kind, args, max_attempts) VALUES ('probe', '{"secret": "job args"}', 1)`); err != nil {
				t.Fatal(err)
			}
			alice := caller{"alice", "authenticated", aliceID}
			bob := caller{"bob", "authenticated", bobID}
			anon := caller{"anon", "anon", ""}

			// Listing: own keys only, through the view and the function.
			for _, c := range []struct {
				who  caller
				want []string
			}{
				{alice, []string{aliceKey.ID, aliceManual.ID}},
				{bob, []string{bobKey.ID}},
				{anon, nil},
			} {
				slices.Sort(c.want)
				for _, q := range []string{
					`SELECT id FROM keyworker_api.api_keys ORDER BY id`,
					`SELECT id FROM keyworker_api.list_api_keys() ORDER BY id`,
				} {
					got, err := f.queryStrings(t, c.who, q)
					if c.who == anon && pgerr.Code(err) == pgerrcode.InsufficientPrivilege {
						continue
					}
					if err != nil || !slices.Equal(got, c.want) {
						t.Errorf("%s: %s = %v, %v; want %v", c.who.name, q, got, err, c.want)
					}
				}
			}

			// Nothing secret through the view; the view takes no writes.
			for _, c := range []caller{alice, anon} {
				for _, q := range []string{
					`SELECT secret_hash FROM keyworker_api.api_keys`,
					`SELECT salt FROM keyworker_api.api_keys`,
					`UPDATE keyworker_api.api_keys SET revoked_at = NULL, user_id = '` + bobID + `'`,
					`DELETE FROM keyworker_api.api_keys`,
					`INSERT INTO keyworker_api.api_keys (id, user_id, name, prefix, last4, source) VALUES ('` + aliceKey.ID[:26] + `X', '` + aliceID + `', 'n', 'sk', 'abcd', 'manual')`,
				} {
					if err := f.request(t, c, func(tx pgx.Tx) error { _, err := tx.Exec(ctx, q); return err }); err == nil {
						t.Errorf("%s: %s succeeded", c.name, q)
					}
				}
			}

			// No row of any internal table, River's included, for reading or
			// writing: permission denied, or (the recipe run on the internal
			// schema) row level security with no policy.
			tables, err := f.queryStrings(t, caller{"owner", "postgres", ""}, `SELECT c.oid::regclass::text FROM pg_class c
				WHERE c.relnamespace = 'keyworker'::regnamespace AND c.relkind IN ('r', 'p', 'v') ORDER BY 1`)
			if err != nil || len(tables) < 10 {
				t.Fatalf("listing internal tables: %v, %v", tables, err)
			}
			for _, c := range []caller{alice, bob, anon} {
				for _, table := range tables {
					var n int
					err := f.request(t, c, func(tx pgx.Tx) error {
						return tx.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n)
					})
					if pgerr.Code(err) != pgerrcode.InsufficientPrivilege && (err != nil || n != 0) {
						t.Errorf("%s: SELECT FROM %s = %d rows, %v; want permission denied or no row", c.name, table, n, err)
					}
				}
				for _, q := range []string{
					`INSERT INTO keyworker.river_job (kind, args, max_attempts) VALUES ('evil', '{}', 1)`,
					`INSERT INTO keyworker.api_keys (id, user_id, prefix, secret_hash, salt, last4, source)
						VALUES ('` + aliceKey.ID[:26] + `Y', '` + aliceID + `', 'sk', '\x` + fmt.Sprintf("%064x", 0) + `', '\x` + fmt.Sprintf("%032x", 0) + `', 'abcd', 'manual')`,
					`INSERT INTO keyworker.key_events (event) VALUES ('forged')`,
				} {
					if err := f.request(t, c, func(tx pgx.Tx) error { _, err := tx.Exec(ctx, q); return err }); pgerr.Code(err) != pgerrcode.InsufficientPrivilege {
						t.Errorf("%s: %s = %v, want permission denied or a row level security violation", c.name, q, err)
					}
				}
				for _, q := range []string{
					`UPDATE keyworker.api_keys SET revoked_at = NULL, expires_at = NULL`,
					`DELETE FROM keyworker.key_reveals`,
					`UPDATE keyworker.river_job SET state = 'cancelled'`,
					`DELETE FROM keyworker.river_job`,
					`DELETE FROM keyworker.key_events`,
				} {
					err := f.request(t, c, func(tx pgx.Tx) error {
						tag, err := tx.Exec(ctx, q)
						if err == nil && tag.RowsAffected() != 0 {
							return fmt.Errorf("%d rows affected", tag.RowsAffected())
						}
						return err
					})
					if err != nil && pgerr.Code(err) != pgerrcode.InsufficientPrivilege {
						t.Errorf("%s: %s: %v", c.name, q, err)
					}
				}
			}

			// Revoking: never another's key, never at a time of one's own.
			revoke := func(c caller, q string, args ...any) (bool, error) {
				t.Helper()
				var ok bool
				err := f.request(t, c, func(tx pgx.Tx) error { return tx.QueryRow(ctx, q, args...).Scan(&ok) })
				return ok, err
			}
			for _, c := range []caller{alice, anon} {
				for _, q := range []string{
					`SELECT keyworker_api.revoke_api_key($1)`,
					`SELECT keyworker.revoke_api_key($1)`,
				} {
					if ok, err := revoke(c, q, bobKey.ID); ok {
						t.Errorf("%s: %s of bob's key = true", c.name, q)
					} else if err != nil && pgerr.Code(err) != pgerrcode.InsufficientPrivilege {
						t.Errorf("%s: %s of bob's key: %v", c.name, q, err)
					}
				}
			}
			if ok, err := revoke(alice, `SELECT keyworker.revoke_api_key($1, now() - interval '1 day')`, aliceManual.ID); ok || pgerr.Code(err) != pgerrcode.InsufficientPrivilege {
				t.Errorf("alice backdating her own key's revocation = %v, %v; want an insufficient_privilege error", ok, err)
			}
			if info, _ := f.store.Get(ctx, f.db, bobKey.ID); info.RevokedAt != nil {
				t.Error("bob's key is revoked")
			}
			if info, _ := f.store.Get(ctx, f.db, aliceManual.ID); info.RevokedAt != nil {
				t.Errorf("alice's second key is revoked at %s", info.RevokedAt)
			}
			before := time.Now().Add(-time.Second)
			if ok, err := revoke(alice, `SELECT keyworker_api.revoke_api_key($1)`, aliceKey.ID); err != nil || !ok {
				t.Fatalf("alice revoking her own key = %v, %v; want true", ok, err)
			}
			info, err := f.store.Get(ctx, f.db, aliceKey.ID)
			if err != nil || info.RevokedAt == nil || info.RevokedAt.Before(before) || info.RevokedAt.After(time.Now().Add(time.Second)) {
				t.Fatalf("alice's revoked key: revoked_at %v, %v; want now", info.RevokedAt, err)
			}
			if n := count(t, f.db, `SELECT count(*) FROM keyworker.key_reveals WHERE key_id = $1`, aliceKey.ID); n != 0 {
				t.Error("the sealed secret of alice's revoked key still waits for pick-up")
			}
			var actor string
			var deleted bool
			if err := f.db.QueryRow(ctx, `SELECT actor, (detail->>'reveal_deleted')::boolean FROM keyworker.key_events WHERE key_id = $1 AND event = 'revoked'`, aliceKey.ID).Scan(&actor, &deleted); err != nil || actor != "user" || !deleted {
				t.Errorf("alice's revocation event: actor %q, reveal_deleted %v, %v; want user, true", actor, deleted, err)
			}
			if ok, err := revoke(alice, `SELECT keyworker_api.revoke_api_key($1)`, aliceKey.ID); err != nil || ok {
				t.Errorf("alice revoking her revoked key again = %v, %v; want false", ok, err)
			}

			// service_role verifies as before.
			r := f.reveal(t, bobID)
			var status string
			if err := f.request(t, caller{"service_role", "service_role", ""}, func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, `SELECT status FROM keyworker.verify_api_key($1)`, r.Plaintext()).Scan(&status)
			}); err != nil || status != "valid" {
				t.Errorf("service_role: verify_api_key = %q, %v; want valid", status, err)
			}

			// The next migrate (every `worker run` starts with one) takes back
			// what the recipe granted on the internal schema.
			if _, err := kwsql.Migrate(ctx, f.db, kwsql.Config{}); err != nil {
				t.Fatal(err)
			}
			for _, q := range []string{
				`SELECT count(*) FROM pg_roles WHERE rolname IN ('anon', 'authenticated') AND has_schema_privilege(rolname, 'keyworker', 'USAGE')`,
				`SELECT count(*) FROM pg_class c, pg_roles r WHERE c.relnamespace = 'keyworker'::regnamespace AND r.rolname IN ('anon', 'authenticated')
					AND c.relacl::text LIKE '%' || r.rolname || '=%'`,
				`SELECT count(*) FROM pg_default_acl d WHERE d.defaclnamespace = 'keyworker'::regnamespace AND d.defaclacl::text ~ '(anon|authenticated)='`,
			} {
				if n := count(t, f.db, q); n != 0 {
					t.Errorf("after migrating again: %s = %d, want 0", q, n)
				}
			}
			if got, err := f.queryStrings(t, bob, `SELECT id FROM keyworker_api.api_keys`); err != nil || !slices.Equal(got, []string{bobKey.ID}) {
				t.Errorf("after migrating again, bob lists %v, %v", got, err)
			}
		})
	}
}

// TestSQLRevokeDeletesTheWaitingSecret checks the operator's SQL
// revoke_api_key as Store.Revoke behaves: a revocation now deletes the
// sealed secret waiting for pick-up, a scheduled one leaves it until then.
func TestSQLRevokeDeletesTheWaitingSecret(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	now, later := f.newUser(t), f.newUser(t)
	nowKey, laterKey := f.createSignup(t, now), f.createSignup(t, later)
	var ok bool
	if err := f.db.QueryRow(ctx, `SELECT keyworker.revoke_api_key($1)`, nowKey.ID).Scan(&ok); err != nil || !ok {
		t.Fatalf("revoke_api_key = %v, %v", ok, err)
	}
	if err := f.db.QueryRow(ctx, `SELECT keyworker.revoke_api_key($1, now() + interval '1 hour')`, laterKey.ID).Scan(&ok); err != nil || !ok {
		t.Fatalf("scheduled revoke_api_key = %v, %v", ok, err)
	}
	if _, pending, err := f.store.PendingReveal(ctx, f.db, nowKey.ID); err != nil || pending {
		t.Errorf("a key revoked now through SQL: sealed secret still waiting = %v, %v", pending, err)
	}
	if _, pending, err := f.store.PendingReveal(ctx, f.db, laterKey.ID); err != nil || !pending {
		t.Errorf("a key whose revocation is scheduled: sealed secret waiting = %v, %v; want it kept until then, as Store.Revoke does", pending, err)
	}
	var actor string
	var deleted bool
	if err := f.db.QueryRow(ctx, `SELECT actor, (detail->>'reveal_deleted')::boolean FROM keyworker.key_events WHERE key_id = $1 AND event = 'revoked'`, nowKey.ID).Scan(&actor, &deleted); err != nil || actor != "operator" || !deleted {
		t.Errorf("revocation event: actor %q, reveal_deleted %v, %v; want operator, true", actor, deleted, err)
	}
}
