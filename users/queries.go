package users

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// The users package's SQL. Every statement and fragment it runs or hands
// out is built here, from a Table's validated names.

// qTableExists is Check's: whether $1 (a quoted, qualified name) exists.
const qTableExists = `SELECT to_regclass($1) IS NOT NULL`

// qColumns is Check's: the columns of table $2 in schema $1, with their types.
const qColumns = `SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2`

// installedAtQuery is InstalledAt's.
func installedAtQuery(keysSchema string) string {
	return `SELECT installed_at FROM ` + pgx.Identifier{keysSchema, "installation"}.Sanitize()
}

// lookupQuery is Lookup's: whether user $1 is deleted, and anonymous.
func (t Table) lookupQuery() string {
	sel := "false"
	if t.DeletedAt() != "" {
		sel = "u." + Col(t.DeletedAt()) + " IS NOT NULL"
	}
	anon := "false"
	if t.Anonymous() != "" {
		anon = "coalesce(u." + Col(t.Anonymous()) + ", false)"
	}
	return `SELECT ` + sel + `, ` + anon + ` FROM ` + t.Ident() + ` u WHERE u.` + Col(t.IDColumn) + ` = $1`
}

// withoutKeyQuery is WithoutKey's page: $1 the cursor (an id), $2 the
// limit, then the eligibility's arguments, which it returns.
func (t Table) withoutKeyQuery(keysSchema string, e Eligibility) (string, []any) {
	cond, args := t.where(e, 3)
	createdAt := "NULL::timestamptz"
	if t.CreatedAt() != "" {
		createdAt = "u." + Col(t.CreatedAt()) + "::timestamptz"
	}
	return `SELECT u.` + Col(t.IDColumn) + `::text, ` + createdAt + `
		FROM ` + t.Ident() + ` u
		WHERE u.` + Col(t.IDColumn) + ` > $1::uuid AND ` + cond + t.noSignupKey(keysSchema) + `
		ORDER BY u.` + Col(t.IDColumn) + `
		LIMIT $2`, args
}

// countWithoutKeyQuery is CountWithoutKey's: the eligibility's arguments
// are all there are.
func (t Table) countWithoutKeyQuery(keysSchema string, e Eligibility) (string, []any) {
	cond, args := t.where(e, 1)
	return `SELECT count(*) FROM ` + t.Ident() + ` u
		WHERE ` + cond + t.noSignupKey(keysSchema), args
}

// noSignupKey is the condition, on alias u, that the user has no signup key
// in keysSchema.api_keys, starting with its AND.
func (t Table) noSignupKey(keysSchema string) string {
	return `
		  AND NOT EXISTS (SELECT 1 FROM ` + pgx.Identifier{keysSchema, "api_keys"}.Sanitize() + ` k
		                   WHERE k.user_id = u.` + Col(t.IDColumn) + ` AND k.source = 'signup')`
}

// where returns the SQL conditions (on alias u) and arguments, numbered from
// argN, that make a user eligible. Soft-deleted users never are.
func (t Table) where(e Eligibility, argN int) (string, []any) {
	var conds []string
	var args []any
	if t.DeletedAt() != "" {
		conds = append(conds, "u."+Col(t.DeletedAt())+" IS NULL")
	}
	if t.Anonymous() != "" && !e.IncludeAnonymous {
		conds = append(conds, "NOT coalesce(u."+Col(t.Anonymous())+", false)")
	}
	if t.CreatedAt() != "" && !e.Since.IsZero() {
		args = append(args, e.Since)
		conds = append(conds, fmt.Sprintf("u.%s >= $%d", Col(t.CreatedAt()), argN+len(args)-1))
	}
	if t.CreatedAt() != "" && !e.Until.IsZero() {
		args = append(args, e.Until)
		conds = append(conds, fmt.Sprintf("u.%s < $%d", Col(t.CreatedAt()), argN+len(args)-1))
	}
	if len(conds) == 0 {
		return "true", nil
	}
	return strings.Join(conds, " AND "), args
}

// SkipReasonSQL returns an SQL expression over the users row alias (LEFT
// JOINed, so NULL when there is no such user) that is NULL when the user may
// have a signup key now, else the reason as text: ReasonMissing,
// ReasonDeleted or ReasonAnonymous (unless includeAnonymous). Like Lookup,
// it does not look at the creation time.
func (t Table) SkipReasonSQL(alias string, includeAnonymous bool) string {
	a := alias + "."
	expr := `CASE WHEN ` + a + Col(t.IDColumn) + ` IS NULL THEN '` + ReasonMissing + `'`
	if t.DeletedAt() != "" {
		expr += ` WHEN ` + a + Col(t.DeletedAt()) + ` IS NOT NULL THEN '` + ReasonDeleted + `'`
	}
	if t.Anonymous() != "" && !includeAnonymous {
		expr += ` WHEN coalesce(` + a + Col(t.Anonymous()) + `, false) THEN '` + ReasonAnonymous + `'`
	}
	return expr + ` END`
}
