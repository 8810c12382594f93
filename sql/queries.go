package sql

import "github.com/jackc/pgx/v5"

// The runtime statements of the migrator (the migrations themselves are the
// embedded files). schema is a sanitized identifier where a function takes
// one.
const (
	qLock   = `SELECT pg_advisory_lock($1)`
	qUnlock = `SELECT pg_advisory_unlock($1)`
)

// migrationQueries are the statements on schema's schema_migrations table.
type migrationQueries struct {
	createSchema, createTable, applied, record, version string
}

func newMigrationQueries(schemaName string) migrationQueries {
	schema := pgx.Identifier{schemaName}.Sanitize()
	return migrationQueries{
		createSchema: `CREATE SCHEMA IF NOT EXISTS ` + schema,
		createTable: `CREATE TABLE IF NOT EXISTS ` + schema + `.schema_migrations (
		version integer PRIMARY KEY,
		name text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`,
		applied: `SELECT version FROM ` + schema + `.schema_migrations`,
		record:  `INSERT INTO ` + schema + `.schema_migrations (version, name) VALUES ($1, $2)`,
		version: `SELECT coalesce(max(version), 0) FROM ` + schema + `.schema_migrations`,
	}
}
