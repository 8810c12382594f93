package testenv

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Queryer is what Count needs: a pool, a connection or a transaction.
type Queryer interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Count runs q, a query with one integer result (SELECT count(*) ...), and
// returns it; it fails the test when the query fails.
func Count(t testing.TB, db Queryer, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}
