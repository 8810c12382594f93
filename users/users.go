// Package users knows the application's users table: where it is, which
// columns say who is anonymous or deleted, and which users are eligible for a
// signup key but have none. The listener and the jobs share it, so "who gets a
// key" is decided in one place.
package users

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Defaults for Table, matching Supabase's auth.users.
const (
	DefaultTable           = "auth.users"
	DefaultIDColumn        = "id"
	DefaultCreatedAtColumn = "created_at"
	DefaultAnonymousColumn = "is_anonymous"
	DefaultDeletedAtColumn = "deleted_at"
)

var identRe = regexp.MustCompile(`^[a-z_][a-z0-9_$]{0,62}$`)

// Table describes the users table. Optional columns may be empty for tables
// that lack them.
type Table struct {
	// Schema and Name locate the table. Defaults to auth.users.
	Schema, Name string
	// IDColumn is the uuid primary key. Defaults to "id".
	IDColumn string
	// CreatedAtColumn is the signup time (timestamptz). Defaults to
	// "created_at"; "-" means the table has none.
	CreatedAtColumn string
	// AnonymousColumn is a boolean marking anonymous users, who get no key
	// until they become permanent. Defaults to "is_anonymous"; "-" means none.
	AnonymousColumn string
	// DeletedAtColumn marks soft-deleted users (timestamptz). Defaults to
	// "deleted_at"; "-" means none.
	DeletedAtColumn string
}

// ParseTable returns the Table for a schema-qualified name with the
// default column names.
func ParseTable(qualified string) (Table, error) {
	schema, name, ok := strings.Cut(qualified, ".")
	if !ok || !identRe.MatchString(schema) || !identRe.MatchString(name) {
		return Table{}, fmt.Errorf("users table %q is invalid: give it schema-qualified in lowercase, e.g. %q", qualified, DefaultTable)
	}
	return Table{Schema: schema, Name: name}.WithDefaults(), nil
}

// None, as an optional column's name, says the table has no such column.
const None = "-"

// WithDefaults returns a copy with empty fields set to their defaults. It
// may be called any number of times: None stays None.
func (t Table) WithDefaults() Table {
	if t.Schema == "" && t.Name == "" {
		t.Schema, t.Name = "auth", "users"
	}
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&t.IDColumn, DefaultIDColumn)
	def(&t.CreatedAtColumn, DefaultCreatedAtColumn)
	def(&t.AnonymousColumn, DefaultAnonymousColumn)
	def(&t.DeletedAtColumn, DefaultDeletedAtColumn)
	return t
}

// Validate checks every name is a plain lowercase identifier.
func (t Table) Validate() error {
	for _, f := range []struct{ what, v string }{
		{"users table schema", t.Schema}, {"users table name", t.Name}, {"users id column", t.IDColumn},
	} {
		if !identRe.MatchString(f.v) {
			return fmt.Errorf("%s %q is invalid: use a lowercase SQL identifier", f.what, f.v)
		}
	}
	for _, f := range []struct{ what, v string }{
		{"created-at column", t.CreatedAtColumn}, {"anonymous column", t.AnonymousColumn}, {"deleted-at column", t.DeletedAtColumn},
	} {
		if f.v != "" && f.v != None && !identRe.MatchString(f.v) {
			return fmt.Errorf("users %s %q is invalid: use a lowercase SQL identifier, or \"-\" if the table has none", f.what, f.v)
		}
	}
	return nil
}

// CreatedAt is the signup-time column, or "" when the table has none.
func (t Table) CreatedAt() string { return orNone(t.CreatedAtColumn) }

// Anonymous is the anonymous-flag column, or "" when the table has none.
func (t Table) Anonymous() string { return orNone(t.AnonymousColumn) }

// DeletedAt is the soft-delete column, or "" when the table has none.
func (t Table) DeletedAt() string { return orNone(t.DeletedAtColumn) }

func orNone(col string) string {
	if col == None {
		return ""
	}
	return col
}

// String is the schema-qualified name, unquoted.
func (t Table) String() string { return t.Schema + "." + t.Name }

// Ident is the schema-qualified name, quoted for SQL.
func (t Table) Ident() string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

// Col quotes a column name for SQL.
func Col(name string) string { return pgx.Identifier{name}.Sanitize() }

// Columns lists the columns the signup stream needs, id first. Logical
// replication publishes only these, so emails and password hashes never
// leave the database.
func (t Table) Columns() []string {
	cols := []string{t.IDColumn}
	if t.CreatedAt() != "" {
		cols = append(cols, t.CreatedAt())
	}
	if t.Anonymous() != "" {
		cols = append(cols, t.Anonymous())
	}
	return cols
}

// ErrNoTable is returned (wrapped) by Check when the table does not exist.
var ErrNoTable = errors.New("users table not found")

// Querier is satisfied by *pgx.Conn, *pgxpool.Pool and pgx.Tx.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Check confirms the table and its columns exist with usable types, and
// names what is missing and the field (Table, IDColumn, ...) that fixes it.
func (t Table) Check(ctx context.Context, db Querier) error {
	var exists bool
	if err := db.QueryRow(ctx, qTableExists, t.Ident()).Scan(&exists); err != nil {
		return fmt.Errorf("looking up users table %s: %w", t, err)
	}
	if !exists {
		return fmt.Errorf("%w: %s does not exist (or this role may not see it); set Table to your schema-qualified users table", ErrNoTable, t)
	}
	type wantCol struct {
		name  string
		types []string
		field string // the Table field naming the column
	}
	timestamps := []string{"timestamp with time zone", "timestamp without time zone"}
	want := []wantCol{{t.IDColumn, []string{"uuid"}, "IDColumn"}}
	if t.CreatedAt() != "" {
		want = append(want, wantCol{t.CreatedAt(), timestamps, "CreatedAtColumn"})
	}
	if t.Anonymous() != "" {
		want = append(want, wantCol{t.Anonymous(), []string{"boolean"}, "AnonymousColumn"})
	}
	if t.DeletedAt() != "" {
		want = append(want, wantCol{t.DeletedAt(), timestamps, "DeletedAtColumn"})
	}
	rows, err := db.Query(ctx, qColumns, t.Schema, t.Name)
	if err != nil {
		return fmt.Errorf("reading columns of %s: %w", t, err)
	}
	have := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return err
		}
		have[name] = typ
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading columns of %s: %w", t, err)
	}
	for _, w := range want {
		col, types := w.name, w.types
		typ, ok := have[col]
		if !ok {
			hint := "set " + w.field + " to the right column"
			if w.field != "IDColumn" {
				hint += `, or to "-" if the table has none`
			}
			return fmt.Errorf("users table %s has no column %q: %s", t, col, hint)
		}
		okType := false
		for _, w := range types {
			okType = okType || typ == w
		}
		if !okType {
			return fmt.Errorf("users table %s column %q is %s, want %s", t, col, typ, strings.Join(types, " or "))
		}
	}
	return nil
}

// Eligibility says which users should have a signup key.
type Eligibility struct {
	// Since, when set, admits only users created at or after it. The
	// reconciler uses the installation time, so installing keyworker on a
	// database with a million users does not mint a million keys unasked.
	Since time.Time
	// Until, when set, admits only users created before it.
	Until time.Time
	// IncludeAnonymous admits anonymous users. Defaults to false.
	IncludeAnonymous bool
}

// UserState is what Lookup found.
type UserState int

// User states.
const (
	UserEligible UserState = iota
	UserMissing
	UserDeleted
	UserAnonymous
)

func (s UserState) String() string {
	switch s {
	case UserEligible:
		return "eligible"
	case UserMissing:
		return "user_missing"
	case UserDeleted:
		return "user_deleted"
	case UserAnonymous:
		return "user_anonymous"
	}
	return "unknown"
}

// Lookup reports whether one user exists and may have a signup key now.
// It takes no row lock: FOR KEY SHARE needs UPDATE on the users table, which
// the worker's role should not have. The foreign key from api_keys locks the
// user's row when the key is inserted, so a user deleted in between fails
// that insert, the job retries, and the retry finds user_missing. Creation
// time is not checked: a job for an old user exists only because someone
// asked for it.
func (t Table) Lookup(ctx context.Context, tx Querier, userID string, includeAnonymous bool) (UserState, error) {
	var deleted, anonymous bool
	err := tx.QueryRow(ctx, t.lookupQuery(), userID).Scan(&deleted, &anonymous)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return UserMissing, nil
	case err != nil:
		return 0, fmt.Errorf("looking up user %s: %w", userID, err)
	case deleted:
		return UserDeleted, nil
	case anonymous && !includeAnonymous:
		return UserAnonymous, nil
	}
	return UserEligible, nil
}

// UserWithoutKey is an eligible user without a signup key: what a
// reconcile hands to the key path.
type UserWithoutKey struct {
	UserID    string
	CreatedAt *time.Time
}

// WithoutKey returns up to limit eligible users without a signup key in
// keysSchema.api_keys, in id order after the cursor `after` (empty for the
// start): one page of a reconcile. Callers page with the last id returned,
// so a million users never load at once.
func (t Table) WithoutKey(ctx context.Context, db Querier, keysSchema string, e Eligibility, after string, limit int) ([]UserWithoutKey, error) {
	q, args := t.withoutKeyQuery(keysSchema, e)
	if after == "" {
		after = "00000000-0000-0000-0000-000000000000"
	}
	rows, err := db.Query(ctx, q, append([]any{after, limit}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("finding users without a signup key: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (UserWithoutKey, error) {
		var u UserWithoutKey
		err := r.Scan(&u.UserID, &u.CreatedAt)
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("finding users without a signup key: %w", err)
	}
	return out, nil
}

// CountWithoutKey counts what WithoutKey pages through: eligible users
// without a signup key. It reads the whole table once; `worker replay`
// uses it to draw a progress bar.
func (t Table) CountWithoutKey(ctx context.Context, db Querier, keysSchema string, e Eligibility) (int, error) {
	q, args := t.countWithoutKeyQuery(keysSchema, e)
	var n int
	if err := db.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting users without a signup key: %w", err)
	}
	return n, nil
}

// InstalledAt reads when keyworker was installed in keysSchema (the first
// migration's time).
func InstalledAt(ctx context.Context, db Querier, keysSchema string) (time.Time, error) {
	var at time.Time
	err := db.QueryRow(ctx, installedAtQuery(keysSchema)).Scan(&at)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading installation time (run `worker migrate` first): %w", err)
	}
	return at, nil
}

// Reasons a user gets no signup key, as SkipReasonSQL and Lookup name them.
const (
	ReasonMissing   = "user_missing"
	ReasonDeleted   = "user_deleted"
	ReasonAnonymous = "user_anonymous"
)
