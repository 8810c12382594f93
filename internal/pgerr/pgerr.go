// Package pgerr reads PostgreSQL server errors. It is the one place
// keyworker's packages take a SQLSTATE from an error, so that every
// comparison is against a github.com/jackc/pgerrcode constant:
//
//	if pgerr.Code(err) == pgerrcode.ForeignKeyViolation { ... }
//
// It depends on pgconn alone, so the lowest layers (users, keystore,
// listener) can use it without importing anything of keyworker's.
package pgerr

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// Code returns the SQLSTATE of the first *pgconn.PgError in err's chain,
// or "" when there is none (err is nil, or did not come from the server).
func Code(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
