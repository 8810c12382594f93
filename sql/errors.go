package sql

import (
	"errors"
	"fmt"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// SQLState returns the SQLSTATE of the first *pgconn.PgError in err's
// chain, or "" when there is none (err is nil, or did not come from the
// server). Compare it with the constants of github.com/jackc/pgerrcode:
//
//	if kwsql.SQLState(err) == pgerrcode.ForeignKeyViolation { ... }
func SQLState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// explain adds what to do to the errors a migration most often meets.
func explain(err error) error {
	switch SQLState(err) {
	case pgerrcode.InsufficientPrivilege:
		return fmt.Errorf("%w (the migrating role lacks a privilege: it needs CREATE on the database, USAGE on the users table's schema, and SELECT and REFERENCES on the users table; on Supabase run `worker migrate` with the postgres role's direct connection)", err)
	case pgerrcode.UndefinedTable:
		return fmt.Errorf("%w (the users table does not exist: set UsersTable to your schema-qualified users table)", err)
	case pgerrcode.UndefinedColumn:
		return fmt.Errorf("%w (the users table lacks the id column: set UsersIDColumn)", err)
	}
	return err
}
