package sql

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// explain adds what to do to the errors a migration most often meets.
func explain(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch pgErr.Code {
	case "42501": // insufficient_privilege
		return fmt.Errorf("%w (the migrating role lacks a privilege: it needs CREATE on the database, USAGE on the users table's schema, and SELECT and REFERENCES on the users table; on Supabase run `worker migrate` with the postgres role's direct connection)", err)
	case "42P01": // undefined_table
		return fmt.Errorf("%w (the users table does not exist: set KEYWORKER_USERS_TABLE to your schema-qualified users table)", err)
	case "42703": // undefined_column
		return fmt.Errorf("%w (the users table lacks the id column: set KEYWORKER_USERS_ID_COLUMN)", err)
	}
	return err
}
