package jobs

import (
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/notify"
	"github.com/keyworker/keyworker/users"
)

// The jobs package's SQL: every statement it runs, built from a validated
// schema (and users table), in one place.

// qTableExists is Client.Start's look for River's tables: whether $1 (a
// quoted, qualified name) exists.
const qTableExists = `SELECT to_regclass($1) IS NOT NULL`

// qColumnExists is Client.Start's look for the email column: column $3 of
// table $2 in schema $1.
const qColumnExists = `SELECT EXISTS (SELECT 1 FROM information_schema.columns
			WHERE table_schema = $1 AND table_name = $2 AND column_name = $3)`

// pendingQuery finds which of the users $1 are in a CreateKeys job that has
// yet to finish (River's GIN index on args answers the containment test).
func pendingQuery(schema string) string {
	return `SELECT x.id FROM unnest($1::text[]) AS x(id)
		WHERE EXISTS (SELECT 1 FROM ` + pgx.Identifier{schema, "river_job"}.Sanitize() + ` j
		               WHERE j.args @> jsonb_build_object('user_ids', jsonb_build_array(x.id))
		                 AND j.kind = '` + KindCreateKeys + `'
		                 AND j.state IN ('` + strings.Join(pendingStates, "', '") + `'))`
}

// noticeQueries returns the notice worker's statements.
func noticeQueries(schema string, t users.Table, emailColumn string) (keysQ, eventsQ string) {
	s := pgx.Identifier{schema}.Sanitize()
	email := "NULL::text"
	if emailColumn != "" {
		email = "u." + users.Col(emailColumn) + "::text"
	}
	deleted := "false"
	if t.DeletedAt() != "" {
		deleted = "coalesce(u." + users.Col(t.DeletedAt()) + " IS NOT NULL, false)"
	}
	// $2 is the notice type, $3 its occurrence (empty for none). The done
	// sinks are those with a 'notified' or 'notify_discarded' event of that
	// type (an event without a type is of a created notice, as earlier
	// versions wrote them) and occurrence (an event without one has none).
	// The replacing key and the key_notices time are looked up only for the
	// types that use them (CASE evaluates its subqueries lazily), so signup
	// batches' created notices cost what they did.
	keysQ = strings.NewReplacer("{s}", s, "{users}", t.Ident(), "{uid}", users.Col(t.IDColumn),
		"{email}", email, "{deleted}", deleted, "{created}", notify.EventCreated, "{rotated}", notify.EventRotated).Replace(`
		SELECT x.id, k.id IS NOT NULL, coalesce(k.user_id::text, ''), coalesce(k.prefix, ''), coalesce(k.last4, ''),
		       coalesce(k.source, ''), k.created_at, k.expires_at, k.revoked_at, k.disabled_at, r.expires_at,
		       CASE WHEN $2 = '{rotated}' THEN (SELECT n.id FROM {s}.api_keys n
		                                         WHERE n.user_id = k.user_id AND n.rotated_from = k.id
		                                         ORDER BY n.id DESC LIMIT 1) END,
		       CASE WHEN $2 <> '{created}' THEN (SELECT kn.queued_at FROM {s}.key_notices kn
		                                          WHERE kn.key_id = x.id AND kn.type = $2 AND kn.occurrence = $3) END,
		       u.{uid} IS NOT NULL, {email}, {deleted},
		       ARRAY(SELECT DISTINCT e.detail->>'sink' FROM {s}.key_events e
		              WHERE e.key_id = x.id AND e.event IN ('notified', 'notify_discarded') AND e.detail ? 'sink'
		                AND coalesce(e.detail->>'type', '{created}') = $2
		                AND coalesce(e.detail->>'occurrence', '') = $3)
		  FROM unnest($1::text[]) WITH ORDINALITY AS x(id, n)
		  LEFT JOIN {s}.api_keys k ON k.id = x.id
		  LEFT JOIN {s}.key_reveals r ON r.key_id = k.id
		  LEFT JOIN {users} u ON u.{uid} = k.user_id
		 ORDER BY x.n`)
	eventsQ = `INSERT INTO ` + s + `.key_events (occurred_at, event, key_id, user_id, job_id, attempt, actor, detail)
		SELECT $1, x.event, x.key_id, x.user_id::uuid, $6, $7, 'worker', x.detail::jsonb
		  FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS x(event, key_id, user_id, detail)`
	return keysQ, eventsQ
}

// lifecycleQueries returns EnqueueNoticeTx's statement ($1 key ids, $2
// type, $3 now, $4 occurrence) and the lifecycle scan's ($1 now, $2 the
// window's other end, $3 the batch size; no occurrence).
func lifecycleQueries(schema string) (enqueue, expiring, expired string) {
	s := pgx.Identifier{schema}.Sanitize()
	enqueue = `INSERT INTO ` + s + `.key_notices (key_id, type, queued_at, occurrence)
		SELECT k.id, $2, $3, $4 FROM ` + s + `.api_keys k WHERE k.id = ANY($1::text[]) ORDER BY k.id
		ON CONFLICT DO NOTHING
		RETURNING key_id`
	// $2 is now + ExpiringNoticeBefore. A key revoked at or before its
	// expiry (a rotation's overlap ends at the old key's expiry at the
	// latest) is not going to expire: it is not told it will.
	expiring = `INSERT INTO ` + s + `.key_notices (key_id, type, queued_at)
		SELECT k.id, '` + notify.EventExpiring + `', $1 FROM ` + s + `.api_keys k
		 WHERE k.expires_at > $1 AND k.expires_at <= $2
		   AND (k.revoked_at IS NULL OR k.revoked_at > k.expires_at)
		   AND k.disabled_at IS NULL
		   AND k.created_at + ($2 - $1) < k.expires_at
		   AND NOT EXISTS (SELECT FROM ` + s + `.key_notices n WHERE n.key_id = k.id AND n.type = '` + notify.EventExpiring + `')
		 ORDER BY k.expires_at, k.id
		 LIMIT $3
		ON CONFLICT DO NOTHING
		RETURNING key_id`
	// $2 is now - ExpiredNoticeWindow.
	expired = `INSERT INTO ` + s + `.key_notices (key_id, type, queued_at)
		SELECT k.id, '` + notify.EventExpired + `', $1 FROM ` + s + `.api_keys k
		 WHERE k.expires_at <= $1
		   AND k.expires_at > greatest($2, (SELECT i.lifecycle_notices_since FROM ` + s + `.installation i))
		   AND (k.revoked_at IS NULL OR k.revoked_at > $1)
		   AND NOT EXISTS (SELECT FROM ` + s + `.key_notices n WHERE n.key_id = k.id AND n.type = '` + notify.EventExpired + `')
		 ORDER BY k.expires_at, k.id
		 LIMIT $3
		ON CONFLICT DO NOTHING
		RETURNING key_id`
	return enqueue, expiring, expired
}

// traceQueries are TraceUser's statements: the user row ($1 the id), the
// user's keys ($1), the events of the user and its keys ($1), and the jobs
// that name the user ($1) or one of the keys ($2).
type traceQueries struct{ user, keys, events, jobs string }

// newTraceQueries builds traceQueries for schema and table (both validated).
func newTraceQueries(schema string, table users.Table) traceQueries {
	s := pgx.Identifier{schema}.Sanitize()
	created, deleted, anon := "NULL::timestamptz", "false", "false"
	if table.CreatedAt() != "" {
		created = "u." + users.Col(table.CreatedAt()) + "::timestamptz"
	}
	if table.DeletedAt() != "" {
		deleted = "u." + users.Col(table.DeletedAt()) + " IS NOT NULL"
	}
	if table.Anonymous() != "" {
		anon = "coalesce(u." + users.Col(table.Anonymous()) + ", false)"
	}
	return traceQueries{
		user: `SELECT ` + created + `, ` + deleted + `, ` + anon + ` FROM ` + table.Ident() + ` u WHERE u.` + users.Col(table.IDColumn) + ` = $1::uuid`,
		keys: `SELECT id, source, name, last4, created_at, expires_at, revoked_at,
			EXISTS (SELECT 1 FROM ` + s + `.key_reveals r WHERE r.key_id = k.id)
		FROM ` + s + `.api_keys k WHERE user_id = $1::uuid ORDER BY created_at, id`,
		events: `SELECT occurred_at, event, coalesce(key_id, ''), job_id, attempt, actor, detail
		FROM ` + s + `.key_events
		WHERE user_id = $1::uuid OR key_id IN (SELECT id FROM ` + s + `.api_keys WHERE user_id = $1::uuid)
		ORDER BY id`,
		jobs: `SELECT id, kind, state::text, attempt, max_attempts, created_at, attempted_at, finalized_at,
			coalesce(jsonb_array_length(coalesce(args->'user_ids', args->'key_ids')), 1), coalesce(args->>'source', ''),
			metadata->'output', coalesce(ARRAY(SELECT e->>'error' FROM unnest(errors) e), '{}')
		FROM ` + s + `.river_job
		WHERE args @> jsonb_build_object('user_ids', jsonb_build_array($1::text))
		   OR args @> jsonb_build_object('user_id', $1::text)
		   OR args @> ANY (SELECT jsonb_build_object('key_ids', jsonb_build_array(k)) FROM unnest($2::text[]) k)
		   OR args @> ANY (SELECT jsonb_build_object('key_id', k) FROM unnest($2::text[]) k)
		   OR id IN (SELECT job_id FROM ` + s + `.key_events WHERE user_id = $1::uuid AND job_id IS NOT NULL)
		ORDER BY id`,
	}
}
