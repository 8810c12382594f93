package users_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/users"
)

var harness = testenv.NewHarness(testenv.HarnessConfig{Prepare: testenv.Migrate})

func TestMain(m *testing.M) { os.Exit(harness.Run(m)) }

func setup(t *testing.T) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), harness.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func uid(i int) string { return fmt.Sprintf("00000000-0000-0000-0000-%012d", i) }

func TestWithoutKeyPagesEligibleUsersOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := setup(t)
	base := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	// 1..250 ordinary, 251..260 anonymous, 261..270 soft-deleted, 271..280
	// created before `since`, 5 of the ordinary ones already have a key.
	if _, err := db.Exec(ctx, `
		INSERT INTO auth.users (id, created_at, is_anonymous, deleted_at)
		SELECT ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid,
		       CASE WHEN i BETWEEN 271 AND 280 THEN $1::timestamptz - interval '1 day' ELSE $1::timestamptz END,
		       i BETWEEN 251 AND 260,
		       CASE WHEN i BETWEEN 261 AND 270 THEN now() END
		FROM generate_series(1, 280) i`, base); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		if _, err := db.Exec(ctx, `INSERT INTO keyworker.api_keys (id, user_id, prefix, secret_hash, salt, last4, source)
			VALUES ($1, $2, 'sk', decode(repeat('00', 32), 'hex'), decode(repeat('00', 16), 'hex'), 'abcd', 'signup')`,
			fmt.Sprintf("%027d", i), uid(i)); err != nil {
			t.Fatal(err)
		}
	}
	table := users.Table{}.WithDefaults()
	collect := func(e users.Eligibility, page int) []string {
		var out []string
		after := ""
		for {
			got, err := table.WithoutKey(ctx, db, "keyworker", e, after, page)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range got {
				out = append(out, m.UserID)
			}
			if len(got) < page {
				return out
			}
			after = got[len(got)-1].UserID
		}
	}
	got := collect(users.Eligibility{Since: base}, 37)
	if len(got) != 245 {
		t.Fatalf("found %d users, want 245 (250 ordinary minus 5 with keys)", len(got))
	}
	if got[0] != uid(6) || got[len(got)-1] != uid(250) {
		t.Fatalf("first/last = %s/%s", got[0], got[len(got)-1])
	}
	if n := len(collect(users.Eligibility{}, 100)); n != 255 {
		t.Fatalf("without since: %d, want 255 (old users included)", n)
	}
	if n := len(collect(users.Eligibility{Since: base, IncludeAnonymous: true}, 100)); n != 255 {
		t.Fatalf("with anonymous: %d, want 255", n)
	}
	if n := len(collect(users.Eligibility{Until: base}, 100)); n != 10 {
		t.Fatalf("until: %d, want the 10 old users", n)
	}
}

func TestLookupStates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := setup(t)
	if _, err := db.Exec(ctx, `INSERT INTO auth.users (id, is_anonymous, deleted_at) VALUES ($1, false, NULL), ($2, true, NULL), ($3, false, now())`, uid(1), uid(2), uid(3)); err != nil {
		t.Fatal(err)
	}
	table := users.Table{}.WithDefaults()
	for _, c := range []struct {
		id   string
		anon bool
		want users.UserState
	}{
		{uid(1), false, users.UserEligible},
		{uid(2), false, users.UserAnonymous},
		{uid(2), true, users.UserEligible},
		{uid(3), false, users.UserDeleted},
		{uid(4), false, users.UserMissing},
	} {
		got, err := table.Lookup(ctx, db, c.id, c.anon)
		if err != nil || got != c.want {
			t.Errorf("Lookup(%s, anon=%v) = %v, %v; want %v", c.id, c.anon, got, err, c.want)
		}
	}
}

func TestCheckNamesWhatIsMissing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := setup(t)
	if err := (users.Table{}.WithDefaults()).Check(ctx, db); err != nil {
		t.Fatalf("auth.users: %v", err)
	}
	nope, _ := users.ParseTable("auth.nope")
	if err := nope.Check(ctx, db); !errors.Is(err, users.ErrNoTable) || !strings.Contains(err.Error(), "set Table to") {
		t.Fatalf("missing table: %v", err)
	}
	if _, err := db.Exec(ctx, `CREATE TABLE public.members (id uuid PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	members, _ := users.ParseTable("public.members")
	if err := members.Check(ctx, db); err == nil || !strings.Contains(err.Error(), `no column "created_at": set CreatedAtColumn`) {
		t.Fatalf("missing column: %v", err)
	}
	members.CreatedAtColumn, members.AnonymousColumn, members.DeletedAtColumn = users.None, users.None, users.None
	// Defaults are applied again and again on the way through the layers;
	// None must survive them.
	members = members.WithDefaults().WithDefaults()
	if err := members.Check(ctx, db); err != nil {
		t.Fatalf("table without optional columns: %v", err)
	}
	if _, err := db.Exec(ctx, `INSERT INTO public.members (id) VALUES ($1)`, uid(9)); err != nil {
		t.Fatal(err)
	}
	found, err := members.WithoutKey(ctx, db, "keyworker", users.Eligibility{Since: time.Now().Add(-time.Hour)}, "", 10)
	if err != nil || len(found) != 1 || found[0].UserID != uid(9) {
		t.Fatalf("WithoutKey on a table without optional columns: %v, %v", found, err)
	}
	state, err := members.Lookup(ctx, db, uid(9), false)
	if err != nil || state != users.UserEligible {
		t.Fatalf("Lookup on a table without optional columns: %v, %v", state, err)
	}
	if _, err := users.ParseTable("users"); err == nil {
		t.Fatal("unqualified table accepted")
	}
}
