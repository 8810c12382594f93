package sql

import (
	"cmp"
	"context"
	"embed"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/keyworker/keyworker/internal/pgerr"
)

// DefaultSchema is the schema keyworker's objects live in.
const DefaultSchema = "keyworker"

// APISchemaSuffix makes the name of the end users' schema from the
// project's: APISchema(schema) is schema + APISchemaSuffix, e.g.
// "keyworker_api".
const APISchemaSuffix = "_api"

// APISchema returns the name of the schema that serves end users for the
// project schema schema: the one schema to expose through the API (Supabase's
// "exposed schemas"). It holds only what an end user may use: the view
// api_keys and the functions list_api_keys() and revoke_api_key(key_id), each
// limited to the request's own user. River's tables and the internal tables
// stay in schema.
func APISchema(schema string) string { return schema + APISchemaSuffix }

// DefaultUsersTable is the table signups are read from.
const DefaultUsersTable = "auth.users"

// DefaultUsersIDColumn is the users table's primary key column.
const DefaultUsersIDColumn = "id"

//go:embed migrations/*.sql grants.sql
var files embed.FS

// Config says where the objects go. The zero value is the default.
type Config struct {
	// Schema holds every keyworker object, River's tables too, except what
	// end users may use, which goes into APISchema(Schema). At most 59
	// characters, and not ending in APISchemaSuffix (it would be another
	// installation's API schema). Defaults to DefaultSchema.
	Schema string

	// UsersTable is the schema-qualified table whose rows are users; api_keys
	// references it with ON DELETE CASCADE. Defaults to DefaultUsersTable.
	UsersTable string

	// UsersIDColumn is the users table's uuid primary key. Defaults to
	// DefaultUsersIDColumn.
	UsersIDColumn string

	// Logger receives one line per applied migration. Defaults to discarding.
	Logger *slog.Logger

	// maxVersion, when not zero, stops the migrations after that version
	// and skips River's and the grants: tests make databases as older
	// releases left them.
	maxVersion int
}

var identRe = regexp.MustCompile(`^[a-z_][a-z0-9_$]{0,62}$`)

// WithDefaults returns a copy of c with defaults filled in.
func (c Config) WithDefaults() Config {
	c.Schema = cmp.Or(c.Schema, DefaultSchema)
	c.UsersTable = cmp.Or(c.UsersTable, DefaultUsersTable)
	c.UsersIDColumn = cmp.Or(c.UsersIDColumn, DefaultUsersIDColumn)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first setting that is wrong.
func (c Config) Validate() error {
	if !identRe.MatchString(c.Schema) {
		return fmt.Errorf("schema %q is invalid: use a lowercase SQL identifier (letters, digits, _), e.g. %q", c.Schema, DefaultSchema)
	}
	if c.Schema == "public" || c.Schema == "auth" || strings.HasPrefix(c.Schema, "pg_") {
		return fmt.Errorf("schema %q is reserved: keyworker needs a schema of its own, e.g. %q", c.Schema, DefaultSchema)
	}
	if max := 63 - len(APISchemaSuffix); len(c.Schema) > max {
		return fmt.Errorf("schema %q is %d characters long, at most %d: the end users' schema <schema>%s must fit PostgreSQL's 63-character names", c.Schema, len(c.Schema), max, APISchemaSuffix)
	}
	if strings.HasSuffix(c.Schema, APISchemaSuffix) {
		return fmt.Errorf("schema %q ends in %q, which names the end users' schema of schema %q: choose a name without it, e.g. %q", c.Schema, APISchemaSuffix, strings.TrimSuffix(c.Schema, APISchemaSuffix), DefaultSchema)
	}
	if _, _, err := SplitTable(c.UsersTable); err != nil {
		return err
	}
	if !identRe.MatchString(c.UsersIDColumn) {
		return fmt.Errorf("users id column %q is invalid: use a lowercase SQL identifier, e.g. %q", c.UsersIDColumn, DefaultUsersIDColumn)
	}
	return nil
}

// SplitTable splits "schema.table" into its parts and checks both are plain
// lowercase identifiers.
func SplitTable(qualified string) (schema, table string, err error) {
	schema, table, ok := strings.Cut(qualified, ".")
	if !ok || !identRe.MatchString(schema) || !identRe.MatchString(table) {
		return "", "", fmt.Errorf("users table %q is invalid: give it schema-qualified in lowercase, e.g. %q", qualified, DefaultUsersTable)
	}
	return schema, table, nil
}

// Migration is one embedded migration.
type Migration struct {
	Version int
	Name    string
	sql     string
}

// Migrations lists the embedded migrations in order.
func Migrations() []Migration {
	entries, err := fs.ReadDir(files, "migrations")
	if err != nil {
		panic(err) // embedded at build time
	}
	var out []Migration
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			panic("migration file name must be NNN_name.sql: " + e.Name())
		}
		b, err := files.ReadFile("migrations/" + e.Name())
		if err != nil {
			panic(err)
		}
		out = append(out, Migration{Version: v, Name: name, sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out
}

// LatestVersion is the version of the newest embedded migration.
func LatestVersion() int {
	m := Migrations()
	return m[len(m)-1].Version
}

// Result says what a Migrate call did.
type Result struct {
	// Applied lists the keyworker migrations applied, as "NNN_name".
	Applied []string
	// RiverApplied lists River's migration versions applied.
	RiverApplied []int
}

// Migrate applies the missing migrations, River's included, holding a
// session advisory lock keyed by the schema on one of the pool's
// connections. It is safe to call concurrently and repeatedly.
func Migrate(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*Result, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to migrate: %w", err)
	}
	defer conn.Release()
	return MigrateConn(ctx, conn.Conn(), cfg)
}

// MigrateURL is Migrate on a connection opened from a connection string,
// for test harnesses and tools that hold no pool.
func MigrateURL(ctx context.Context, url string, cfg Config) (*Result, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("connecting to migrate: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return MigrateConn(ctx, conn, cfg)
}

// MigrateConn is Migrate on a single connection.
//
// keyworker's migrations are applied together in one transaction. River's
// are applied one version per transaction, as River requires (a version may
// use an enum value the one before it added, which PostgreSQL does not allow
// in the transaction that added it). The advisory lock spans all of it.
func MigrateConn(ctx context.Context, conn *pgx.Conn, cfg Config) (*Result, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	key := LockKey(cfg.Schema)
	if _, err := conn.Exec(ctx, qLock, key); err != nil {
		return nil, fmt.Errorf("taking the migration lock: %w", err)
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), qUnlock, key)
	}()

	res := &Result{}
	if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var err error
		res.Applied, err = applyOwn(ctx, tx, cfg)
		return err
	}); err != nil {
		return nil, err
	}
	if cfg.maxVersion != 0 {
		return res, nil
	}

	// River logs every version at INFO and "no migrations" on every call;
	// keep its warnings only. What was applied is in Result and our log.
	riverLog := slog.New(minLevel{cfg.Logger.Handler(), slog.LevelWarn})
	migrator, err := rivermigrate.New(riverpgxv5.New(nil), &rivermigrate.Config{Schema: cfg.Schema, Logger: riverLog})
	if err != nil {
		return nil, fmt.Errorf("preparing River migrations: %w", err)
	}
	for {
		var applied []int
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			rr, err := migrator.MigrateTx(ctx, tx, rivermigrate.DirectionUp, &rivermigrate.MigrateOpts{MaxSteps: 1})
			if err != nil {
				return err
			}
			for _, v := range rr.Versions {
				applied = append(applied, v.Version)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("applying River migrations in schema %s: %w", cfg.Schema, explain(err))
		}
		if len(applied) == 0 {
			break
		}
		res.RiverApplied = append(res.RiverApplied, applied...)
	}
	if len(res.RiverApplied) > 0 {
		cfg.Logger.Info("River migrations applied", "component", "migrate", "schema", cfg.Schema, "versions", res.RiverApplied)
	}

	grants, err := files.ReadFile("grants.sql")
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, replacer(cfg).Replace(string(grants))); err != nil {
		return nil, fmt.Errorf("applying grants: %w", explain(err))
	}
	return res, nil
}

func applyOwn(ctx context.Context, tx pgx.Tx, cfg Config) ([]string, error) {
	q := newMigrationQueries(cfg.Schema)
	if _, err := tx.Exec(ctx, q.createSchema); err != nil {
		return nil, fmt.Errorf("creating schema %s: %w", cfg.Schema, explain(err))
	}
	if _, err := tx.Exec(ctx, q.createTable); err != nil {
		return nil, fmt.Errorf("creating the migration table: %w", explain(err))
	}
	rows, err := tx.Query(ctx, q.applied)
	if err != nil {
		return nil, fmt.Errorf("reading applied migrations: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, fmt.Errorf("reading applied migrations: %w", err)
	}
	applied := map[int]bool{}
	for _, v := range versions {
		applied[v] = true
	}
	var out []string
	repl := replacer(cfg)
	for _, m := range Migrations() {
		if applied[m.Version] || (cfg.maxVersion != 0 && m.Version > cfg.maxVersion) {
			continue
		}
		label := fmt.Sprintf("%03d_%s", m.Version, m.Name)
		if _, err := tx.Exec(ctx, repl.Replace(m.sql)); err != nil {
			return nil, fmt.Errorf("applying migration %s: %w", label, explain(err))
		}
		if _, err := tx.Exec(ctx, q.record, m.Version, m.Name); err != nil {
			return nil, fmt.Errorf("recording migration %s: %w", label, err)
		}
		out = append(out, label)
		cfg.Logger.Info("migration applied", "component", "migrate", "schema", cfg.Schema, "migration", label)
	}
	return out, nil
}

// Version returns the newest applied keyworker migration in schema, or 0
// when none is.
func Version(ctx context.Context, db interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}, schema string) (int, error) {
	var v int
	err := db.QueryRow(ctx, newMigrationQueries(schema).version).Scan(&v)
	if err != nil {
		if c := pgerr.Code(err); c == pgerrcode.UndefinedTable || c == pgerrcode.InvalidSchemaName {
			return 0, nil
		}
		return 0, fmt.Errorf("reading migration version: %w", err)
	}
	return v, nil
}

// LockKey is the advisory lock key migrations hold for schema.
func LockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("keyworker.migrate." + schema))
	return int64(h.Sum64())
}

func replacer(cfg Config) *strings.Replacer {
	us, ut, _ := SplitTable(cfg.UsersTable)
	return strings.NewReplacer(
		"{{schema}}", pgx.Identifier{cfg.Schema}.Sanitize(),
		"{{schema_text}}", quoteLiteral(cfg.Schema),
		"{{api_schema}}", pgx.Identifier{APISchema(cfg.Schema)}.Sanitize(),
		"{{api_schema_text}}", quoteLiteral(APISchema(cfg.Schema)),
		"{{users_table}}", pgx.Identifier{us, ut}.Sanitize(),
		"{{users_table_text}}", quoteLiteral(cfg.UsersTable),
		"{{users_id}}", pgx.Identifier{cfg.UsersIDColumn}.Sanitize(),
	)
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// minLevel drops records below a level.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.min}
}

func (h minLevel) WithGroup(n string) slog.Handler { return minLevel{h.Handler.WithGroup(n), h.min} }
