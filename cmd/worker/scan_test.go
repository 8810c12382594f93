package main

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/keys"
)

// scanFor looks for the keys and their secret parts in every column.
func scanFor(ctx context.Context, pool *pgxpool.Pool, plaintexts ...string) ([]string, error) {
	var needles []string
	for _, k := range plaintexts {
		needles = append(needles, k)
		if p, err := keys.Parse(k); err == nil {
			needles = append(needles, p.Secret())
		}
	}
	return testenv.ScanForSecrets(ctx, pool, needles)
}
