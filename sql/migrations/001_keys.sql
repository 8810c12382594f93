-- keyworker 001: the key tables, the audit trail, the pick-up table and the
-- replication checkpoint. Placeholders: {{schema}}, {{users_table}},
-- {{users_id}}, {{users_table_text}}.

CREATE TABLE IF NOT EXISTS {{schema}}.installation (
	id boolean PRIMARY KEY DEFAULT true CHECK (id),
	-- Signups created before this moment get keys only through an explicit
	-- `worker replay --since ...`.
	installed_at timestamptz NOT NULL DEFAULT now(),
	users_table text NOT NULL
);
INSERT INTO {{schema}}.installation (users_table) VALUES ({{users_table_text}})
ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS {{schema}}.api_keys (
	id text PRIMARY KEY CHECK (id ~ '^[0-9A-Za-z]{27}$'),
	user_id uuid NOT NULL REFERENCES {{users_table}} ({{users_id}}) ON DELETE CASCADE,
	name text NOT NULL DEFAULT 'default' CHECK (length(name) BETWEEN 1 AND 200),
	prefix text NOT NULL CHECK (prefix ~ '^[a-z][a-z0-9_]{0,31}$'),
	secret_hash bytea NOT NULL CHECK (length(secret_hash) = 32),
	salt bytea NOT NULL CHECK (length(salt) = 16),
	hash_version smallint NOT NULL DEFAULT 1,
	last4 text NOT NULL CHECK (length(last4) = 4),
	source text NOT NULL CHECK (source IN ('signup', 'manual')),
	created_at timestamptz NOT NULL DEFAULT now(),
	expires_at timestamptz,
	-- A future revoked_at is a scheduled revocation (rotation overlap).
	revoked_at timestamptz,
	last_used_at timestamptz,
	-- The key this one replaced, for rotation.
	rotated_from text
);
-- The real guard of "exactly one signup key per user".
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_one_signup_key_per_user
	ON {{schema}}.api_keys (user_id) WHERE source = 'signup';
CREATE INDEX IF NOT EXISTS api_keys_user_id_idx ON {{schema}}.api_keys (user_id, id DESC);

-- Append-only audit trail. No foreign keys: the history of a key outlives it.
CREATE TABLE IF NOT EXISTS {{schema}}.key_events (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	occurred_at timestamptz NOT NULL DEFAULT now(),
	event text NOT NULL CHECK (event ~ '^[a-z_]{1,40}$'),
	key_id text,
	user_id uuid,
	job_id bigint,
	attempt integer,
	actor text NOT NULL DEFAULT 'worker',
	detail jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS key_events_key_id_idx ON {{schema}}.key_events (key_id, id);
CREATE INDEX IF NOT EXISTS key_events_user_id_idx ON {{schema}}.key_events (user_id, id);

-- Secrets waiting for their one pick-up, sealed with AES-256-GCM under a key
-- that lives with the worker, never in the database.
CREATE TABLE IF NOT EXISTS {{schema}}.key_reveals (
	key_id text PRIMARY KEY REFERENCES {{schema}}.api_keys (id) ON DELETE CASCADE,
	user_id uuid NOT NULL,
	sealed bytea NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS key_reveals_user_id_idx ON {{schema}}.key_reveals (user_id, created_at);
CREATE INDEX IF NOT EXISTS key_reveals_expires_at_idx ON {{schema}}.key_reveals (expires_at);

-- Where logical replication resumes: the end LSN of the last replication
-- transaction whose signups are committed as jobs.
CREATE TABLE IF NOT EXISTS {{schema}}.replication_checkpoints (
	slot_name text PRIMARY KEY,
	lsn pg_lsn NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now(),
	last_signup_at timestamptz,
	signups bigint NOT NULL DEFAULT 0
);
