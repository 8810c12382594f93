package pgerr_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyworker/keyworker/internal/pgerr"
)

// TestCode guards the one helper every package compares SQLSTATEs
// through: the code of the first server error in the chain, "" otherwise.
func TestCode(t *testing.T) {
	t.Parallel()
	fk := &pgconn.PgError{Code: pgerrcode.ForeignKeyViolation}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"not from the server", errors.New("connection reset"), ""},
		{"server error", fk, pgerrcode.ForeignKeyViolation},
		{"wrapped", fmt.Errorf("creating key: %w", fk), pgerrcode.ForeignKeyViolation},
		{"joined", errors.Join(errors.New("first"), fmt.Errorf("second: %w", fk)), pgerrcode.ForeignKeyViolation},
		{"first of two", fmt.Errorf("%w, then %w", &pgconn.PgError{Code: pgerrcode.DeadlockDetected}, fk), pgerrcode.DeadlockDetected},
	}
	for _, c := range cases {
		if got := pgerr.Code(c.err); got != c.want {
			t.Errorf("%s: Code(%v) = %q, want %q", c.name, c.err, got, c.want)
		}
	}
}
