package listener

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyworker/keyworker/internal/pgerr"
)

// minServerVersion is the oldest PostgreSQL logical mode accepts:
// publication column lists arrived in 15.
const minServerVersion = 150000

// poolerPort is the port Supavisor (and Supabase's PgBouncer) serve
// transaction pooling on; Supavisor serves session pooling on 5432.
const poolerPort = 6543

// Source modes, as a Mode setting (daemon.Config.Mode) names them.
const (
	ModeLogical = "logical"
	ModeListen  = "listen"
)

type poolerKind int

const (
	notPooler poolerKind = iota
	// sessionPooler gives each client its own server session for as long
	// as it is connected: LISTEN and plain queries work, replication does
	// not.
	sessionPooler
	// transactionPooler hands a server session out per transaction:
	// LISTEN, session settings and replication do not work.
	transactionPooler
)

type pooler struct {
	kind   poolerKind
	reason string
}

// classifyPooler tells from connString's addresses whether it reaches a
// pooler and which kind. It is a heuristic on the address (Supabase's
// pooler host, port 6543); the replication handshake catches other poolers
// in logical mode.
func classifyPooler(connString string) pooler {
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return pooler{}
	}
	hosts := []*pgconn.FallbackConfig{{Host: cfg.Host, Port: cfg.Port}}
	hosts = append(hosts, cfg.Fallbacks...)
	found := pooler{}
	for _, h := range hosts {
		supavisor := strings.HasSuffix(strings.ToLower(h.Host), ".pooler.supabase.com")
		switch {
		case h.Port == poolerPort && supavisor:
			return pooler{transactionPooler, fmt.Sprintf("host %s port %d is Supabase's transaction pooler (Supavisor)", h.Host, h.Port)}
		case h.Port == poolerPort:
			return pooler{transactionPooler, fmt.Sprintf("port %d is the transaction pooler's port (Supavisor, PgBouncer)", poolerPort)}
		case supavisor:
			found = pooler{sessionPooler, fmt.Sprintf("host %s port %d is Supabase's session pooler (Supavisor)", h.Host, h.Port)}
		}
	}
	return found
}

// CheckDirect reports, before anything connects, whether connString can
// carry mode (ModeLogical or ModeListen): a *PreflightError wrapping
// ErrPooler when it points at a pooler that cannot (any pooler for logical
// mode, a transaction pooler for listen mode), or nil. It is the address
// heuristic of Start's preflight (Supabase's pooler host, port 6543).
func CheckDirect(connString, mode string) error {
	p := classifyPooler(connString)
	if p.kind == transactionPooler || p.kind == sessionPooler && mode == ModeLogical {
		return poolerError(p, mode, nil)
	}
	return nil
}

// IsSessionPooler reports whether connString points at Supabase's session
// pooler, which carries listen mode but not logical replication.
func IsSessionPooler(connString string) bool {
	return classifyPooler(connString).kind == sessionPooler
}

func poolerError(p pooler, mode string, cause error) error {
	fix := "listen mode needs a session of its own: use the session pooler (Supabase: the \"Session pooler\" string, " +
		"<project>.pooler.supabase.com port 5432, which also works over IPv4) or the direct connection (db.<project-ref>.supabase.co port 5432)"
	if mode == ModeLogical {
		fix = "logical replication does not pass through a pooler: set ConnString to the database itself " +
			"(Supabase: the \"Direct connection\" string, db.<project-ref>.supabase.co port 5432, IPv6 unless the project has the IPv4 add-on), " +
			"or use listen mode (Mode=listen or auto), which works through the session pooler (port 5432)"
	}
	return &PreflightError{Kind: ErrPooler, Detail: p.reason, Fix: fix, Cause: cause}
}

// quoteIdents asks the server to quote names exactly as it would need them
// (bare when safe, double-quoted otherwise), for statements printed for
// operators.
func quoteIdents(ctx context.Context, db queryer, names ...string) ([]string, error) {
	var out []string
	err := db.QueryRow(ctx, quoteIdentsSQL, names).Scan(&out)
	if err != nil {
		return nil, fmt.Errorf("quoting names: %w", err)
	}
	return out, nil
}

type queryer interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// serverFacts are what the preflight reads in one round trip.
type serverFacts struct {
	version          int
	walLevel         string
	user, database   string
	replication      bool
	superuser        bool
	maxSlots         int
	usedSlots        int
	maxSenders       int
	usedSenders      int
	walSenderTimeout int // milliseconds, 0 = none
}

func readServerFacts(ctx context.Context, db queryer) (serverFacts, error) {
	var f serverFacts
	err := db.QueryRow(ctx, serverFactsSQL).Scan(
		&f.version, &f.walLevel, &f.user, &f.database, &f.replication, &f.superuser,
		&f.maxSlots, &f.usedSlots, &f.maxSenders, &f.usedSenders, &f.walSenderTimeout)
	if err != nil {
		return f, fmt.Errorf("reading server settings: %w", err)
	}
	return f, nil
}

// preflight checks everything logical mode needs before it starts, and
// creates the publication when it may. Each failure names its fix.
func (l *Logical) preflight(ctx context.Context) error {
	f, err := readServerFacts(ctx, l.pool)
	if err != nil {
		return err
	}
	l.facts = f
	if f.version < minServerVersion {
		return &PreflightError{Kind: ErrServerVersion,
			Detail: fmt.Sprintf("the server is version %d", f.version),
			Fix:    "logical mode needs PostgreSQL 15 or newer (publication column lists keep emails and password hashes out of the stream); upgrade, or use listen mode (Mode=listen)"}
	}
	if f.walLevel != "logical" {
		return &PreflightError{Kind: ErrWALLevel,
			Detail:     fmt.Sprintf("it is %q", f.walLevel),
			Fix:        "a superuser must run the statement below and restart PostgreSQL (Supabase projects already run with logical), or use listen mode (Mode=listen)",
			Statements: []string{"ALTER SYSTEM SET wal_level = logical;"}}
	}
	if !f.replication && !f.superuser {
		q, err := quoteIdents(ctx, l.pool, f.user)
		if err != nil {
			return err
		}
		return &PreflightError{Kind: ErrNoReplication,
			Detail:     fmt.Sprintf("role %s has no REPLICATION attribute", f.user),
			Fix:        "a superuser must run the statement below (on Supabase, connect as the postgres role, which has it), or use listen mode (Mode=listen)",
			Statements: []string{fmt.Sprintf("ALTER ROLE %s WITH REPLICATION;", q[0])}}
	}
	if err := l.cfg.Table.Check(ctx, l.pool); err != nil {
		return fmt.Errorf("checking the users table: %w", err)
	}
	if err := checkMigrated(ctx, l.pool, l.cfg.Schema, "replication_checkpoints", "SELECT, INSERT, UPDATE"); err != nil {
		return err
	}
	if err := l.ensurePublication(ctx); err != nil {
		return err
	}
	slot, err := l.querySlot(ctx)
	if err != nil {
		return err
	}
	if slot != nil {
		if err := l.checkSlotOwnership(slot); err != nil {
			return err
		}
	} else if f.usedSlots >= f.maxSlots {
		return &PreflightError{Kind: ErrNoFreeSlot,
			Detail: fmt.Sprintf("all %d replication slots (max_replication_slots) are taken and slot %s does not exist", f.maxSlots, l.cfg.SlotName),
			Fix:    "drop an unused slot (SELECT pg_drop_replication_slot(name)) or raise max_replication_slots and restart PostgreSQL"}
	}
	if f.usedSenders >= f.maxSenders && (slot == nil || !slot.active) {
		return &PreflightError{Kind: ErrNoWALSender,
			Detail: fmt.Sprintf("all %d WAL senders (max_wal_senders) are busy", f.maxSenders),
			Fix:    "stop an unused replication client or raise max_wal_senders and restart PostgreSQL"}
	}
	// The replication handshake itself: a pooler, pg_hba.conf or a full
	// server fail here rather than in the background.
	conn, err := l.connectReplication(ctx)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		if pgerr.Code(err) == pgerrcode.SyntaxError {
			return poolerError(pooler{transactionPooler, "the server took IDENTIFY_SYSTEM for SQL, so the replication=database parameter did not reach it"}, ModeLogical, err)
		}
		return fmt.Errorf("identifying the system over the replication connection: %w", err)
	}
	if sys.DBName != f.database {
		return poolerError(pooler{sessionPooler, fmt.Sprintf("the replication connection reached database %q but the pool reached %q", sys.DBName, f.database)}, ModeLogical, nil)
	}
	return nil
}

// checkMigrated confirms keyworker's table exists, this role has privs on
// it, and row level security (which keyworker's migrations enable, with no
// policy for the worker) does not hide its rows from this role.
func checkMigrated(ctx context.Context, db queryer, schema, table, privs string) error {
	qualified := pgx.Identifier{schema, table}.Sanitize()
	var exists, allowed, hidden bool
	err := db.QueryRow(ctx, checkMigratedSQL, qualified, privs).Scan(&exists, &allowed, &hidden)
	if err != nil {
		if pgerr.Code(err) == pgerrcode.InsufficientPrivilege {
			return &PreflightError{Kind: ErrNoPrivilege, Detail: fmt.Sprintf("this role may not use schema %s", schema),
				Fix: "run the worker as the role that ran `worker migrate`, or grant it USAGE on the schema", Cause: err}
		}
		return fmt.Errorf("looking up %s.%s: %w", schema, table, err)
	}
	if !exists {
		return &PreflightError{Kind: ErrNotMigrated, Detail: fmt.Sprintf("%s.%s does not exist", schema, table),
			Fix: "run `worker migrate` first (with the same Schema)"}
	}
	if !allowed {
		return &PreflightError{Kind: ErrNoPrivilege, Detail: fmt.Sprintf("this role lacks %s on %s.%s", privs, schema, table),
			Fix: "run the worker as the role that ran `worker migrate`, or grant it those privileges"}
	}
	if hidden {
		return &PreflightError{Kind: ErrNoPrivilege, Detail: fmt.Sprintf("row level security on %s.%s hides its rows from this role", schema, table),
			Fix: "run the worker as the role that ran `worker migrate` (the tables' owner)"}
	}
	return nil
}

// connectReplication opens a logical replication connection to the
// configured database.
func (l *Logical) connectReplication(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(l.cfg.ConnString)
	if err != nil {
		return nil, fmt.Errorf("parsing the connection string: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	// pgoutput sends values as text in the session's DateStyle.
	cfg.RuntimeParams["DateStyle"] = "ISO, MDY"
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "keyworker"
	}
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > l.cfg.ConnectTimeout {
		cfg.ConnectTimeout = l.cfg.ConnectTimeout
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err == nil {
		return conn, nil
	}
	switch pgerr.Code(err) {
	case pgerrcode.ProtocolViolation:
		return nil, poolerError(pooler{sessionPooler, "the server refused the replication=database startup parameter"}, ModeLogical, err)
	case pgerrcode.InvalidAuthorizationSpecification:
		return nil, &PreflightError{Kind: ErrNoReplication,
			Detail: "the server refused a replication connection for this role",
			Fix:    "allow it in pg_hba.conf (a line for database \"replication\" or the database itself with connection type replication) and give the role REPLICATION",
			Cause:  err}
	case pgerrcode.TooManyConnections:
		return nil, &PreflightError{Kind: ErrNoWALSender,
			Detail: "the server has no free WAL sender or connection for a replication client",
			Fix:    "stop an unused replication client or raise max_wal_senders and restart PostgreSQL", Cause: err}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("connecting for replication timed out after %s: %w", l.cfg.ConnectTimeout, err)
	}
	return nil, fmt.Errorf("connecting for replication: %w", err)
}

func closeConn(conn *pgconn.PgConn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// publicationState is what pg_publication says about one publication.
type publicationState struct {
	insert, update, del, truncate, allTables, schemas bool
	rels                                              []publishedRel
}

type publishedRel struct {
	schema, name string
	allColumns   bool
	rowFilter    bool
	columns      []string
}

func (l *Logical) readPublication(ctx context.Context) (*publicationState, error) {
	p := &publicationState{}
	err := l.pool.QueryRow(ctx, publicationSQL, l.cfg.PublicationName).Scan(
		&p.insert, &p.update, &p.del, &p.truncate, &p.allTables, &p.schemas)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading publication %s: %w", l.cfg.PublicationName, err)
	}
	rows, err := l.pool.Query(ctx, publicationTablesSQL, l.cfg.PublicationName)
	if err != nil {
		return nil, fmt.Errorf("reading the tables of publication %s: %w", l.cfg.PublicationName, err)
	}
	p.rels, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (publishedRel, error) {
		var pr publishedRel
		err := r.Scan(&pr.schema, &pr.name, &pr.allColumns, &pr.rowFilter, &pr.columns)
		return pr, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading the tables of publication %s: %w", l.cfg.PublicationName, err)
	}
	return p, nil
}

// problems lists what makes p unfit, or nothing.
func (p *publicationState) problems(schema, table string, columns []string) []string {
	var out []string
	var ops []string
	for _, o := range []struct {
		on   bool
		name string
	}{{p.update, "update"}, {p.del, "delete"}, {p.truncate, "truncate"}} {
		if o.on {
			ops = append(ops, o.name)
		}
	}
	if !p.insert {
		out = append(out, "it does not publish inserts")
	}
	if len(ops) > 0 {
		out = append(out, "it also publishes "+strings.Join(ops, ", ")+" (keyworker needs publish = 'insert' only)")
	}
	if p.allTables {
		out = append(out, "it is FOR ALL TABLES (keyworker's own job inserts would feed back into it)")
	}
	if p.schemas {
		out = append(out, "it publishes whole schemas (FOR TABLES IN SCHEMA)")
	}
	found := false
	var others []string
	for _, r := range p.rels {
		if r.schema != schema || r.name != table {
			others = append(others, r.schema+"."+r.name)
			continue
		}
		found = true
		switch {
		case r.allColumns:
			out = append(out, fmt.Sprintf("it publishes every column of %s.%s (no column list), so emails and password hashes would enter the stream", schema, table))
		case !sameSet(r.columns, columns):
			out = append(out, fmt.Sprintf("its column list for %s.%s is (%s), keyworker needs exactly (%s)", schema, table, strings.Join(r.columns, ", "), strings.Join(columns, ", ")))
		}
		if r.rowFilter {
			out = append(out, fmt.Sprintf("it has a row filter (WHERE ...) on %s.%s, which would hide signups", schema, table))
		}
	}
	if len(others) > 0 {
		out = append(out, "it also publishes "+strings.Join(others, ", "))
	}
	if !found && !p.allTables {
		out = append(out, fmt.Sprintf("it does not publish %s.%s", schema, table))
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// ensurePublication uses the publication when it is right, creates it when
// it is missing and this role may, and otherwise fails with the statement
// the table's owner must run.
func (l *Logical) ensurePublication(ctx context.Context) error {
	t := l.cfg.Table
	cols := t.Columns()
	for attempt := 0; ; attempt++ {
		p, err := l.readPublication(ctx)
		if err != nil {
			return err
		}
		stmt, owner, err := l.publicationStatement(ctx)
		if err != nil {
			return err
		}
		if p != nil {
			probs := p.problems(t.Schema, t.Name, cols)
			if len(probs) == 0 {
				return nil
			}
			q, err := quoteIdents(ctx, l.pool, l.cfg.PublicationName)
			if err != nil {
				return err
			}
			return &PreflightError{Kind: ErrPublicationMismatch,
				Detail: fmt.Sprintf("publication %s exists but %s", l.cfg.PublicationName, strings.Join(probs, "; ")),
				Fix: fmt.Sprintf("keyworker will not change a publication it did not make; have its owner replace it as below (as %s, the owner of %s), or give keyworker another publication (PublicationName)",
					owner, t),
				Statements: []string{fmt.Sprintf("DROP PUBLICATION %s;", q[0]), stmt}}
		}
		var mayPublish bool
		if err := l.pool.QueryRow(ctx, mayPublishSQL, t.Ident()).Scan(&mayPublish); err != nil {
			return fmt.Errorf("checking who owns %s: %w", t, err)
		}
		notPublishable := func(cause error) error {
			return &PreflightError{Kind: ErrNotPublishable,
				Detail: fmt.Sprintf("publication %s does not exist, and only the owner of %s (%s) may publish the table; this role is %s",
					l.cfg.PublicationName, t, owner, l.facts.user),
				Fix: fmt.Sprintf("have %s run this statement once, e.g. `psql \"<direct connection string>\"` connected as %s (or as a superuser; "+
					"creating a publication also needs CREATE on the database, so a superuser may first have to GRANT CREATE ON DATABASE %s TO %s); "+
					"keyworker then uses the publication as it is", owner, owner, l.facts.database, owner),
				Statements: []string{stmt},
				Cause:      cause}
		}
		if !mayPublish {
			return notPublishable(nil)
		}
		_, err = l.pool.Exec(ctx, strings.TrimSuffix(stmt, ";"))
		switch {
		case err == nil:
			l.log.Info("publication created", "publication", l.cfg.PublicationName, "table", t.String(), "columns", strings.Join(cols, ","))
			return nil
		case pgerr.Code(err) == pgerrcode.DuplicateObject && attempt == 0:
			continue // another replica made it just now: check it
		case pgerr.Code(err) == pgerrcode.InsufficientPrivilege:
			return notPublishable(err)
		default:
			return fmt.Errorf("creating publication %s: %w", l.cfg.PublicationName, err)
		}
	}
}

// publicationStatement returns the CREATE PUBLICATION statement keyworker
// needs, quoted as the server would, and the table's owner.
func (l *Logical) publicationStatement(ctx context.Context) (stmt, owner string, err error) {
	t := l.cfg.Table
	cols := t.Columns()
	names := append([]string{l.cfg.PublicationName, t.Schema, t.Name}, cols...)
	q, err := quoteIdents(ctx, l.pool, names...)
	if err != nil {
		return "", "", err
	}
	if err := l.pool.QueryRow(ctx, tableOwnerSQL, t.Ident()).Scan(&owner); err != nil {
		return "", "", fmt.Errorf("looking up the owner of %s: %w", t, err)
	}
	stmt = createPublicationSQL(q[0], q[1], q[2], q[3:])
	return stmt, owner, nil
}
