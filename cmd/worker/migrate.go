package main

import (
	"context"
	"flag"
	"fmt"

	kwsql "github.com/keyworker/keyworker/sql"
)

func sqlConfig(v *values) kwsql.Config {
	return kwsql.Config{
		Schema:        v.str("KEYWORKER_SCHEMA"),
		UsersTable:    v.str("KEYWORKER_USERS_TABLE"),
		UsersIDColumn: v.str("KEYWORKER_USERS_ID_COLUMN"),
	}
}

func cmdMigrate(ctx context.Context, e env, v *values, fs *flag.FlagSet) error {
	if len(v.args) > 0 {
		return &usageError{fmt.Sprintf("worker migrate takes no arguments, got %q", v.args)}
	}
	logger, err := newLogger(e, v)
	if err != nil {
		return err
	}
	cfg := sqlConfig(v)
	cfg.Logger = logger
	if err := cfg.WithDefaults().Validate(); err != nil {
		return &usageError{err.Error()}
	}
	pool, err := connect(ctx, e, v)
	if err != nil {
		return err
	}
	defer pool.Close()
	res, err := kwsql.Migrate(ctx, pool, cfg)
	if err != nil {
		return err
	}
	if len(res.Applied) == 0 && len(res.RiverApplied) == 0 {
		fmt.Fprintf(e.stdout, "schema %s is up to date (keyworker migration %03d)\n", cfg.Schema, kwsql.LatestVersion())
		return nil
	}
	fmt.Fprintf(e.stdout, "schema %s migrated: keyworker %v, River versions %v\n", cfg.Schema, res.Applied, res.RiverApplied)
	return nil
}
