package keystore

import (
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/users"
)

// Every statement the Store runs is here: the fixed ones in queries (built
// once per schema by newQueries), the signup batch (built per users table by
// signupBatchQuery) and the savepoint around it.

// queries are the Store's statements with the schema filled in.
type queries struct {
	insertEvent, insertKey, existingSignup, insertReveal,
	info, list, revoke, lockForRotate, scheduleRevoke, lockUser, countLive, setDisabled,
	reveal, revealExpired, verifyLookup, touch, purge, pendingReveal,
	recordSealingKey, lockSealingKey, rotateSealingKey, resealBatch, resealUpdate string
}

const infoColumns = `k.id, k.user_id::text, k.name, k.prefix, k.last4, k.source, k.created_at,
	k.expires_at, k.revoked_at, k.last_used_at, coalesce(k.rotated_from, ''), k.disabled_at`

func newQueries(schema string) queries {
	r := strings.NewReplacer("{schema}", pgx.Identifier{schema}.Sanitize()).Replace
	return queries{
		insertEvent: r(`INSERT INTO {schema}.key_events
			(occurred_at, event, key_id, user_id, job_id, attempt, actor, detail)
			VALUES ($1, $2, $3, $4::uuid, $5, $6, $7, $8::jsonb)`),
		insertKey: r(`INSERT INTO {schema}.api_keys
			(id, user_id, name, prefix, secret_hash, salt, hash_version, last4, source, created_at, expires_at, rotated_from)
			VALUES ($1, $2::uuid, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			ON CONFLICT (user_id) WHERE source = 'signup' DO NOTHING
			RETURNING id`),
		existingSignup: r(`SELECT ` + infoColumns + `, r.expires_at
			FROM {schema}.api_keys k LEFT JOIN {schema}.key_reveals r ON r.key_id = k.id
			WHERE k.user_id = $1::uuid AND k.source = 'signup'`),
		insertReveal: r(`INSERT INTO {schema}.key_reveals (key_id, user_id, sealed, created_at, expires_at)
			VALUES ($1, $2::uuid, $3, $4, $5)`),
		// $2, when not NULL, is the owner: someone else's key is not found.
		info: r(`SELECT ` + infoColumns + ` FROM {schema}.api_keys k
			WHERE k.id = $1 AND ($2::uuid IS NULL OR k.user_id = $2::uuid)`),
		list: r(`SELECT ` + infoColumns + ` FROM {schema}.api_keys k
			WHERE $1::text = '' OR k.user_id = nullif($1::text, '')::uuid
			ORDER BY k.created_at DESC, k.id DESC LIMIT $2`),
		// One statement: the revocation (of the owner $8's key only, when
		// not NULL), the deletion of a secret still waiting (when revoked
		// now or earlier), the audit event, and the key as it is after.
		revoke: r(`WITH k AS (
				UPDATE {schema}.api_keys SET revoked_at = $2
				 WHERE id = $1 AND ($8::uuid IS NULL OR user_id = $8::uuid)
				   AND (revoked_at IS NULL OR revoked_at > $2)
				RETURNING *
			), gone AS (
				DELETE FROM {schema}.key_reveals
				 WHERE key_id IN (SELECT id FROM k) AND $2 <= $3
				RETURNING key_id
			), ev AS (
				INSERT INTO {schema}.key_events (occurred_at, event, key_id, user_id, job_id, attempt, actor, detail)
				SELECT $3, 'revoked', k.id, k.user_id, $4, $5, $6,
				       $7::jsonb || jsonb_build_object('revoked_at', $2::timestamptz, 'reveal_deleted', (SELECT count(*) > 0 FROM gone))
				  FROM k
			)
			SELECT ` + infoColumns + ` FROM k`),
		lockForRotate: r(`SELECT ` + infoColumns + ` FROM {schema}.api_keys k
			WHERE k.id = $1 AND ($2::uuid IS NULL OR k.user_id = $2::uuid) FOR UPDATE`),
		// The lock, and the isolation it is taken in (lockUser refuses all
		// but read committed).
		lockUser: `SELECT current_setting('transaction_isolation') FROM (SELECT pg_advisory_xact_lock($1)) l`,
		// The user's live keys at $2 (not revoked then, not expired then;
		// disabled ones count), and those of them other than key $3.
		countLive: r(`SELECT count(*), count(*) FILTER (WHERE id <> $3)
			FROM {schema}.api_keys
			WHERE user_id = $1::uuid AND (revoked_at IS NULL OR revoked_at > $2) AND (expires_at IS NULL OR expires_at > $2)`),
		// Disables ($3 true) or enables the key, of the owner $4 only (when
		// not NULL), when it is not revoked at $2 and not in that state
		// already; writes the event and returns the key as it is after.
		setDisabled: r(`WITH k AS (
				UPDATE {schema}.api_keys SET disabled_at = CASE WHEN $3::boolean THEN $2::timestamptz END
				 WHERE id = $1 AND ($4::uuid IS NULL OR user_id = $4::uuid)
				   AND (revoked_at IS NULL OR revoked_at > $2)
				   AND (disabled_at IS NULL) = $3::boolean
				RETURNING *
			), ev AS (
				INSERT INTO {schema}.key_events (occurred_at, event, key_id, user_id, job_id, attempt, actor, detail)
				SELECT $2, $5, k.id, k.user_id, $6, $7, $8, $9::jsonb FROM k
			)
			SELECT ` + infoColumns + ` FROM k`),
		scheduleRevoke: r(`UPDATE {schema}.api_keys SET revoked_at = least(coalesce(revoked_at, $2), $2) WHERE id = $1 RETURNING revoked_at`),
		// The oldest pending, unexpired secret of a live key, deleted and
		// returned in one statement; SKIP LOCKED makes a concurrent reveal
		// of the same row find nothing instead of waiting.
		reveal: r(`WITH d AS (
				DELETE FROM {schema}.key_reveals r
				 WHERE r.key_id = (
					SELECT r2.key_id FROM {schema}.key_reveals r2
					  JOIN {schema}.api_keys k2 ON k2.id = r2.key_id
					 WHERE r2.user_id = $1::uuid AND k2.user_id = r2.user_id AND r2.expires_at > $2
					   AND (k2.revoked_at IS NULL OR k2.revoked_at > $2)
					   AND (k2.expires_at IS NULL OR k2.expires_at > $2)
					 ORDER BY r2.created_at, r2.key_id
					 LIMIT 1
					 FOR UPDATE OF r2 SKIP LOCKED)
				RETURNING r.key_id, r.sealed
			)
			SELECT ` + infoColumns + `, d.sealed FROM d JOIN {schema}.api_keys k ON k.id = d.key_id`),
		revealExpired: r(`SELECT EXISTS (SELECT 1 FROM {schema}.key_reveals WHERE user_id = $1::uuid AND expires_at <= $2)`),
		verifyLookup: r(`SELECT user_id::text, prefix, secret_hash, salt, hash_version, expires_at, revoked_at, disabled_at, last_used_at
			FROM {schema}.api_keys WHERE id = $1`),
		touch: r(`UPDATE {schema}.api_keys SET last_used_at = $2::timestamptz
			WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2::timestamptz - interval '1 minute')`),
		purge: r(`WITH d AS (
				DELETE FROM {schema}.key_reveals WHERE expires_at <= $1
				RETURNING key_id, user_id, expires_at
			)
			INSERT INTO {schema}.key_events (occurred_at, event, key_id, user_id, actor, detail)
			SELECT $1, 'reveal_expired', d.key_id, d.user_id, 'worker', jsonb_build_object('reveal_expired_at', d.expires_at)
			  FROM d`),
		pendingReveal: r(`SELECT expires_at FROM {schema}.key_reveals WHERE key_id = $1`),
		recordSealingKey: r(`INSERT INTO {schema}.sealing_key (fingerprint, recorded_at) VALUES ($1, $2)
			ON CONFLICT (id) DO NOTHING`),
		lockSealingKey: r(`SELECT fingerprint, recorded_at FROM {schema}.sealing_key FOR UPDATE`),
		rotateSealingKey: r(`UPDATE {schema}.sealing_key
			SET fingerprint = $1, previous_fingerprint = $2, recorded_at = $3, rotated_at = $3`),
		// Rows whose user is not the key's are never revealed: left alone.
		resealBatch: r(`SELECT r.key_id, k.user_id::text, r.sealed
			FROM {schema}.key_reveals r JOIN {schema}.api_keys k ON k.id = r.key_id AND k.user_id = r.user_id
			WHERE r.key_id > $1 ORDER BY r.key_id LIMIT $2
			FOR UPDATE OF r`),
		resealUpdate: r(`UPDATE {schema}.key_reveals r SET sealed = v.sealed
			FROM unnest($1::text[], $2::bytea[]) AS v(key_id, sealed) WHERE r.key_id = v.key_id`),
	}
}

// scanInfo reads infoColumns (and any extra destinations after them).
func scanInfo(row pgx.Row, extra ...any) (Info, error) {
	var i Info
	dest := append([]any{&i.ID, &i.UserID, &i.Name, &i.Prefix, &i.Last4, &i.Source, &i.CreatedAt,
		&i.ExpiresAt, &i.RevokedAt, &i.LastUsedAt, &i.RotatedFrom, &i.DisabledAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		return Info{}, err
	}
	i.CreatedAt = i.CreatedAt.UTC()
	i.ExpiresAt = utcPtr(i.ExpiresAt)
	i.RevokedAt = utcPtr(i.RevokedAt)
	i.LastUsedAt = utcPtr(i.LastUsedAt)
	i.DisabledAt = utcPtr(i.DisabledAt)
	return i, nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// The savepoint a signup batch runs in (see runSignupBatch).
const (
	savepointSignupBatch = `SAVEPOINT keyworker_signup_batch`
	releaseSignupBatch   = `RELEASE SAVEPOINT keyworker_signup_batch`
	rollbackSignupBatch  = `ROLLBACK TO SAVEPOINT keyworker_signup_batch`
)

// signupBatchQuery is the one statement of a batch. Arguments: $1 user ids
// (sorted), $2..$6 per-user key id, hash, salt, last 4 and sealed secret,
// $7 prefix, $8 now, $9 key expiry, $10 reveal expiry, $11 job id, $12
// attempt, $13 actor, $14 audit detail, $15 hash version, $16 and $17 the
// two expiries as JSON text, $18 DeferMissing.
func (s *Store) signupBatchQuery(t users.Table, includeAnonymous bool) string {
	t = t.WithDefaults()
	r := strings.NewReplacer("{schema}", pgx.Identifier{s.schema}.Sanitize(), "{users}", t.Ident(),
		"{uid}", users.Col(t.IDColumn), "{skip}", t.SkipReasonSQL("u", includeAnonymous)).Replace
	return r(`WITH x AS (
		SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::bytea[], $5::text[], $6::bytea[])
			AS x(user_id, key_id, secret_hash, salt, last4, sealed)
	), l AS (
		SELECT x.*, {skip} AS skip FROM x LEFT JOIN {users} u ON u.{uid} = x.user_id
	), ins AS (
		INSERT INTO {schema}.api_keys
			(id, user_id, name, prefix, secret_hash, salt, hash_version, last4, source, created_at, expires_at)
		SELECT l.key_id, l.user_id, 'default', $7, l.secret_hash, l.salt, $15, l.last4, 'signup', $8, $9
		  FROM l WHERE l.skip IS NULL
		 ORDER BY l.user_id
		ON CONFLICT (user_id) WHERE source = 'signup' DO NOTHING
		RETURNING id, user_id
	), rev AS (
		INSERT INTO {schema}.key_reveals (key_id, user_id, sealed, created_at, expires_at)
		SELECT ins.id, ins.user_id, l.sealed, $8, $10 FROM ins JOIN l ON l.key_id = ins.id
	), o AS (
		SELECT l.user_id,
		       CASE WHEN l.skip IS NOT NULL THEN l.skip WHEN ins.id IS NOT NULL THEN 'created' ELSE 'key_exists' END AS outcome,
		       coalesce(ins.id, e.id) AS key_id,
		       CASE WHEN ins.id IS NOT NULL THEN l.last4 END AS last4
		  FROM l
		  LEFT JOIN ins ON ins.id = l.key_id
		  LEFT JOIN {schema}.api_keys e ON ins.id IS NULL AND l.skip IS NULL AND e.user_id = l.user_id AND e.source = 'signup'
	), ev AS (
		INSERT INTO {schema}.key_events (occurred_at, event, key_id, user_id, job_id, attempt, actor, detail)
		SELECT $8, CASE WHEN o.outcome = 'created' THEN 'created' ELSE 'skipped' END, o.key_id, o.user_id, $11, $12, $13,
		       CASE WHEN o.outcome = 'created'
		            THEN $14::jsonb || jsonb_strip_nulls(jsonb_build_object('source', 'signup', 'name', 'default',
		                 'prefix', $7::text, 'last4', o.last4, 'expires_at', $16::text, 'reveal_expires_at', $17::text))
		            ELSE $14::jsonb || jsonb_build_object('reason', o.outcome) END
		  FROM o WHERE NOT ($18 AND o.outcome = 'user_missing') ORDER BY o.user_id
	)
	SELECT o.user_id::text, CASE WHEN $18 AND o.outcome = 'user_missing' THEN 'not_visible' ELSE o.outcome END,
	       coalesce(o.key_id, ''), coalesce(o.last4, '') FROM o ORDER BY o.user_id`)
}
