-- keyworker 007: lifecycle notices (api_key.rotated, .revoked, .disabled,
-- .expiring, .expired, and created for keys made outside the signup path).
-- Placeholders: {{schema}}. The lifecycle scan reads 006's disabled_at and
-- walks its api_keys_expires_at_idx.

-- The once-per-key-and-event guard: a notice is enqueued only by the
-- transaction that inserts its row here (ON CONFLICT DO NOTHING), so however
-- often a change or the lifecycle scan is retried, a key gets one notice per
-- event. An event that can happen to a key again (api_key.disabled, after an
-- enable) names each time in occurrence (the disabled_at of that disable, in
-- unix microseconds); the others happen once per key and leave it ''.
-- Signup keys' created notices do not use it: the signup batch enqueues them
-- in the transaction that makes the keys. Internal: row level security with
-- no policy, nothing granted (grants.sql).
CREATE TABLE IF NOT EXISTS {{schema}}.key_notices (
	key_id text NOT NULL REFERENCES {{schema}}.api_keys (id) ON DELETE CASCADE,
	type text NOT NULL CHECK (type IN ('api_key.created', 'api_key.rotated', 'api_key.revoked',
		'api_key.disabled', 'api_key.expiring', 'api_key.expired')),
	occurrence text NOT NULL DEFAULT ''
		CHECK (occurrence = '' OR type = 'api_key.disabled'),
	queued_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (key_id, type, occurrence)
);
ALTER TABLE {{schema}}.key_notices ENABLE ROW LEVEL SECURITY;

-- Keys that expired before this migration get no api_key.expired notice:
-- upgrading must not flood users with news of keys long gone.
ALTER TABLE {{schema}}.installation
	ADD COLUMN IF NOT EXISTS lifecycle_notices_since timestamptz NOT NULL DEFAULT now();

