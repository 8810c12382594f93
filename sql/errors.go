package sql

import (
	"fmt"

	"github.com/jackc/pgerrcode"

	"github.com/keyworker/keyworker/internal/pgerr"
)

// explain adds what to do to the errors a migration most often meets.
func explain(err error) error {
	switch pgerr.Code(err) {
	case pgerrcode.InsufficientPrivilege:
		return fmt.Errorf("%w (the migrating role lacks a privilege: it needs CREATE on the database, USAGE on the users table's schema, and SELECT and REFERENCES on the users table; on Supabase run `worker migrate` with the postgres role's direct connection)", err)
	case pgerrcode.UndefinedTable:
		return fmt.Errorf("%w (the users table does not exist: set UsersTable to your schema-qualified users table)", err)
	case pgerrcode.UndefinedColumn:
		return fmt.Errorf("%w (the users table lacks the id column: set UsersIDColumn)", err)
	}
	return err
}
