package testenv

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
)

// scanColumnsSQL lists every column of every table, partitioned table and
// materialized view outside the system schemas whose type can hold text:
// text, varchar, char, name, json, jsonb, xml, citext and bytea, arrays of
// them, and domains over them. kind is "bytea" for a bytea column and
// "text" for everything else (compared through its text form).
const scanColumnsSQL = `
SELECT n.nspname::text, c.relname::text, a.attname::text,
       CASE WHEN bt.typname = 'bytea' AND t.typcategory <> 'A' THEN 'bytea' ELSE 'text' END
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  -- the element type of an array, then the base type of a domain
  JOIN pg_catalog.pg_type et ON et.oid = CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE t.oid END
  JOIN pg_catalog.pg_type bt ON bt.oid = CASE WHEN et.typtype = 'd' THEN et.typbasetype ELSE et.oid END
 WHERE (c.relkind IN ('r', 'p') OR (c.relkind = 'm' AND c.relispopulated))
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\_toast%'
   AND n.nspname NOT LIKE 'pg\_temp\_%'
   AND bt.typname IN ('text', 'varchar', 'bpchar', 'name', 'json', 'jsonb', 'xml', 'citext', 'bytea')
 ORDER BY 1, 2, 3`

// ScanForSecrets looks for any of needles in every column that can hold text
// in every table of the database outside pg_catalog and information_schema
// (River's tables, the users table and the project's own included) and
// returns the columns where one occurs, as sorted "schema.table.column"
// strings; none means no needle is stored anywhere.
//
// Text, varchar, char, name, json, jsonb, xml and citext columns, arrays of
// them and domains over them are searched through their text form. A bytea
// column matches when its bytes contain a needle's UTF-8 bytes, or when its
// hex text form (as encode(col, 'hex') writes it) contains the needle. Needles
// should be plain ASCII without quotes or backslashes (API keys are), since
// the text forms of json and arrays escape those. Empty needles are ignored.
//
// db must be able to read every table (a superuser in tests). The error names
// the column whose query failed; it never contains a needle.
func ScanForSecrets(ctx context.Context, db interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, needles []string) ([]string, error) {
	var clean []string
	for _, n := range needles {
		if n != "" {
			clean = append(clean, n)
		}
	}
	if len(clean) == 0 {
		return nil, nil
	}

	type column struct{ schema, table, name, kind string }
	rows, err := db.Query(ctx, scanColumnsSQL)
	if err != nil {
		return nil, fmt.Errorf("listing columns to scan: %w", err)
	}
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (column, error) {
		var c column
		err := r.Scan(&c.schema, &c.table, &c.name, &c.kind)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing columns to scan: %w", err)
	}

	var hits []string
	for _, c := range cols {
		ident := pgx.Identifier{c.name}.Sanitize()
		var cond string
		if c.kind == "bytea" {
			cond = `position(convert_to(n, 'UTF8') in t.` + ident + `) > 0 OR strpos(encode(t.` + ident + `, 'hex'), n) > 0`
		} else {
			cond = `strpos(t.` + ident + `::text, n) > 0`
		}
		q := `SELECT EXISTS (SELECT 1 FROM ` + pgx.Identifier{c.schema, c.table}.Sanitize() + ` t
			WHERE t.` + ident + ` IS NOT NULL
			  AND EXISTS (SELECT 1 FROM unnest($1::text[]) n WHERE ` + cond + `))`
		rows, err := db.Query(ctx, q, clean)
		if err != nil {
			return nil, fmt.Errorf("scanning %s.%s.%s: %w", c.schema, c.table, c.name, err)
		}
		found, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[bool])
		if err != nil {
			return nil, fmt.Errorf("scanning %s.%s.%s: %w", c.schema, c.table, c.name, err)
		}
		if found {
			hits = append(hits, c.schema+"."+c.table+"."+c.name)
		}
	}
	slices.Sort(hits)
	return slices.Compact(hits), nil
}
