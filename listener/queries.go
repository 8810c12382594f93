package listener

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/users"
)

// The listener's runtime SQL. Catalog queries name pg_catalog objects;
// keyworker's own objects are qualified with the configured schema by the
// functions that build their statements. Statements shown to operators
// (a PreflightError's Statements) are built where the error is.

// Preflight, both modes.
const (
	// quoteIdentsSQL quotes $1's names as the server would need them.
	quoteIdentsSQL = `SELECT array_agg(quote_ident(n) ORDER BY i) FROM unnest($1::text[]) WITH ORDINALITY AS t(n, i)`

	// checkMigratedSQL: whether table $1 exists, whether this role has
	// every privilege in the comma-separated $2 on it, and whether row
	// level security hides its rows from this role.
	checkMigratedSQL = `SELECT to_regclass($1) IS NOT NULL,
		to_regclass($1) IS NOT NULL AND (SELECT bool_and(has_table_privilege(to_regclass($1), trim(p)))
		                                   FROM unnest(string_to_array($2, ',')) AS p),
		coalesce((SELECT c.relrowsecurity AND NOT pg_has_role(c.relowner, 'USAGE')
		                 AND NOT (SELECT r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
		            FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1)), false)`

	// tableOwnerSQL is the owner of table $1.
	tableOwnerSQL = `SELECT pg_get_userbyid(c.relowner)::text FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1)`
)

// Preflight, logical mode.
const (
	// serverFactsSQL reads serverFacts in one round trip.
	serverFactsSQL = `
		SELECT current_setting('server_version_num')::int,
		       current_setting('wal_level'),
		       current_user::text, current_database()::text,
		       r.rolreplication, r.rolsuper,
		       current_setting('max_replication_slots')::int,
		       (SELECT count(*) FROM pg_catalog.pg_replication_slots)::int,
		       current_setting('max_wal_senders')::int,
		       (SELECT count(*) FROM pg_catalog.pg_stat_get_wal_senders())::int,
		       (SELECT setting::int FROM pg_catalog.pg_settings WHERE name = 'wal_sender_timeout')
		  FROM pg_catalog.pg_roles r WHERE r.rolname = current_user`

	// publicationSQL is publication $1's flags.
	publicationSQL = `
		SELECT p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, p.puballtables,
		       EXISTS (SELECT FROM pg_catalog.pg_publication_namespace pn WHERE pn.pnpubid = p.oid)
		  FROM pg_catalog.pg_publication p WHERE p.pubname = $1`

	// publicationTablesSQL lists publication $1's tables with their
	// column lists and whether they have a row filter.
	publicationTablesSQL = `
		SELECT n.nspname::text, c.relname::text, pr.prattrs IS NULL, pr.prqual IS NOT NULL,
		       coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_catalog.pg_attribute a
		                  WHERE a.attrelid = c.oid AND a.attnum = ANY (pr.prattrs::int2[])), '{}')
		  FROM pg_catalog.pg_publication_rel pr
		  JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
		  JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
		  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		 WHERE p.pubname = $1
		 ORDER BY 1, 2`

	// mayPublishSQL: whether this role acts as the owner of table $1.
	mayPublishSQL = `SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1)`
)

// createPublicationSQL is the publication logical mode needs: inserts
// only, of the users table's columns keyworker reads; all names quoted. It
// ends in a semicolon, as operators are shown it.
func createPublicationSQL(pub, schema, table string, cols []string) string {
	return fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s.%s (%s) WITH (publish = 'insert');",
		pub, schema, table, strings.Join(cols, ", "))
}

// The replication slot.
const (
	// slotSQL is slot $1's row in pg_replication_slots.
	slotSQL = `
		SELECT coalesce(database::text, ''), coalesce(plugin::text, ''), slot_type, coalesce(wal_status, ''),
		       active, coalesce(active_pid, 0), coalesce(confirmed_flush_lsn, '0/0')::text
		  FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`

	// dropLostSlotSQL drops slot $1 only while it is invalidated.
	dropLostSlotSQL = `SELECT pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots
			WHERE slot_name = $1 AND wal_status = 'lost'`

	// createSlotSQL creates the permanent pgoutput slot $1.
	createSlotSQL = `SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`

	// slotActiveSQL is whether slot $1 on this database is in use (no row:
	// there is none).
	slotActiveSQL = `SELECT active FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND database = current_database()`

	// dropSlotSQL drops slot $1.
	dropSlotSQL = `SELECT pg_catalog.pg_drop_replication_slot($1)`
)

// checkpointSQL holds the statements on keyworker's replication_checkpoints
// table (one row per slot, $1 the slot name), qualified with the schema.
type checkpointSQL struct {
	// read is the row's LSN.
	read string
	// lock is the row's LSN, locked for the hand-off.
	lock string
	// owe sets the row to 0/0: a reconcile is owed.
	owe string
	// pay moves the row from 0/0 to $2, the new slot's position; it
	// changes no row when the reconcile was paid already.
	pay string
	// advance moves the row to $2 after a hand-off of $4 signups, the
	// last committed at $3, unless a reconcile is owed.
	advance string
}

func newCheckpointSQL(schema string) checkpointSQL {
	t := pgx.Identifier{schema, "replication_checkpoints"}.Sanitize()
	return checkpointSQL{
		read: `SELECT lsn::text FROM ` + t + ` WHERE slot_name = $1`,
		lock: `SELECT lsn::text FROM ` + t + ` WHERE slot_name = $1 FOR UPDATE`,
		owe: `INSERT INTO ` + t + ` AS c (slot_name, lsn) VALUES ($1, '0/0')
		ON CONFLICT (slot_name) DO UPDATE SET lsn = '0/0', updated_at = now()`,
		pay: `INSERT INTO ` + t + ` AS c (slot_name, lsn) VALUES ($1, $2::pg_lsn)
			ON CONFLICT (slot_name) DO UPDATE SET lsn = EXCLUDED.lsn, updated_at = now() WHERE c.lsn = '0/0'`,
		advance: `INSERT INTO ` + t + ` AS c (slot_name, lsn, updated_at, last_signup_at, signups)
			VALUES ($1, $2::pg_lsn, now(), $3, $4)
			ON CONFLICT (slot_name) DO UPDATE SET
				-- 0/0 marks a reconcile owed (a slot being recreated): it
				-- stays until the reconcile is enqueued.
				lsn = CASE WHEN c.lsn = '0/0' THEN c.lsn ELSE GREATEST(c.lsn, EXCLUDED.lsn) END,
				updated_at = now(),
				last_signup_at = coalesce(EXCLUDED.last_signup_at, c.last_signup_at),
				signups = c.signups + EXCLUDED.signups`,
	}
}

// Listen mode's trigger and outbox.
const (
	// tablePrivilegeSQL: whether this role may read table $1, the current
	// user, and the table's owner.
	tablePrivilegeSQL = `SELECT has_table_privilege(to_regclass($1), 'SELECT'), current_user::text,
		pg_get_userbyid(c.relowner)::text FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1)`

	// triggerSQL: whether trigger $2 on table $1 calls function $3, and
	// whether it is enabled.
	triggerSQL = `SELECT tg.tgfoid = to_regprocedure($3)::oid, tg.tgenabled::text FROM pg_catalog.pg_trigger tg
		WHERE tg.tgrelid = to_regclass($1) AND tg.tgname = $2`

	// advisoryXactLockSQL waits for the transaction-scoped advisory lock $1.
	advisoryXactLockSQL = `SELECT pg_catalog.pg_advisory_xact_lock($1)`

	// functionSQL is function $1's body and whether it is SECURITY DEFINER.
	functionSQL = `SELECT p.prosrc, p.prosecdef FROM pg_catalog.pg_proc p WHERE p.oid = to_regprocedure($1)`

	// outboxAccessSQL: whether this role owns function $1, and whether it
	// may read and delete from table $2.
	outboxAccessSQL = `SELECT (SELECT pg_has_role(p.proowner, 'USAGE') FROM pg_catalog.pg_proc p WHERE p.oid = to_regprocedure($1)),
		       (SELECT has_table_privilege(to_regclass($2), 'SELECT') AND has_table_privilege(to_regclass($2), 'DELETE'))`
)

// listenSQL starts listening on channel.
func listenSQL(channel string) string {
	return "LISTEN " + pgx.Identifier{channel}.Sanitize()
}

// createTriggerSQL is the statement-level trigger on table (quoted,
// qualified) that calls keyworker's function; all names quoted. It ends in
// a semicolon, as operators are shown it.
func createTriggerSQL(trigger, table, fnSchema, fn string) string {
	return fmt.Sprintf("CREATE TRIGGER %s AFTER INSERT ON %s REFERENCING NEW TABLE AS %s FOR EACH STATEMENT EXECUTE FUNCTION %s.%s();",
		trigger, table, transitionTable, fnSchema, fn)
}

// grantTriggerFunctionSQL lets role (quoted) reach function fn (quoted,
// qualified) in schema, which creating the trigger needs.
func grantTriggerFunctionSQL(schema, fn, role string) string {
	return `GRANT USAGE ON SCHEMA ` + pgx.Identifier{schema}.Sanitize() + ` TO ` + role + `;
		GRANT EXECUTE ON FUNCTION ` + fn + `() TO ` + role
}

// replaceFunctionSQL creates or replaces trigger function fn (quoted,
// qualified) with body, SECURITY DEFINER with an empty search_path. The
// dollar-quote tag is uppercase: every name in body is lowercase
// (identRe), so none can close it.
func replaceFunctionSQL(fn, body string) string {
	return `CREATE OR REPLACE FUNCTION ` + fn + `() RETURNS trigger
			LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $KW$` + body + `$KW$`
}

// revokeFunctionSQL revokes PUBLIC's EXECUTE on function fn.
func revokeFunctionSQL(fn string) string {
	return `REVOKE ALL ON FUNCTION ` + fn + `() FROM PUBLIC`
}

// outboxTakeSQL deletes up to $1 rows of the outbox and returns them. Rows
// another transaction has taken are skipped, so replicas share the outbox
// without waiting for each other.
func outboxTakeSQL(schema string) string {
	t := pgx.Identifier{schema, OutboxTable}.Sanitize()
	return `DELETE FROM ` + t + ` o
		 WHERE o.ctid = ANY (ARRAY(SELECT x.ctid FROM ` + t + ` x LIMIT $1 FOR UPDATE SKIP LOCKED))
		RETURNING o.user_id::text, o.queued_at`
}

// functionBody is the trigger function. It runs once per INSERT
// statement, not per row, as the function's owner (keyworker's role, which
// owns the outbox; SECURITY DEFINER), and does two cheap things in the
// signup's transaction: it appends the new users' ids to the outbox, and
// it notifies the listener unless another transaction in flight already
// holds the wake-up lock (and so will notify when it commits). Notifying
// takes PostgreSQL's notify lock (one for the whole server) from just
// before the commit to its end, so skipping it keeps signups from
// committing one at a time. Any error in it is swallowed, and the
// reconcile finds the user; what it cannot catch are NOTIFY's own errors
// at commit (a full notification queue, PREPARE TRANSACTION after NOTIFY),
// which only the transaction holding the wake-up lock can meet.
func (l *Listen) functionBody() string {
	t := l.cfg.Table
	where := ""
	if t.Anonymous() != "" && !l.cfg.IncludeAnonymous {
		where = " WHERE NOT coalesce(n." + users.Col(t.Anonymous()) + ", false)"
	}
	return `
BEGIN
	INSERT INTO ` + pgx.Identifier{l.cfg.Schema, OutboxTable}.Sanitize() + ` (user_id)
	SELECT n.` + users.Col(t.IDColumn) + ` FROM ` + transitionTable + ` n` + where + `;
	IF FOUND AND pg_catalog.pg_try_advisory_xact_lock(` + fmt.Sprint(outboxLockKey(l.cfg.Schema)) + `) THEN
		PERFORM pg_catalog.pg_notify('` + l.cfg.Channel + `', '');
	END IF;
	RETURN NULL;
EXCEPTION WHEN others THEN
	-- A signup must never fail because of keyworker: the reconcile finds
	-- what this missed.
	RETURN NULL;
END
`
}

// retiredBody is the trigger function while logical mode reads signups:
// the trigger may outlive listen mode (only the users table's owner may
// drop it, and on hosted Supabase that is not keyworker's role), so the
// function keyworker owns stops writing the outbox instead.
const retiredBody = `
BEGIN
	-- keyworker reads signups by logical replication now; listen mode
	-- writes the outbox again when it starts.
	RETURN NULL;
END
`
