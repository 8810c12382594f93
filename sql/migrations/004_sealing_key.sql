-- keyworker 004: the fingerprint of the sealing key that seals the secrets
-- waiting for pick-up (never the key: the key lives with the worker). A
-- worker records its key's fingerprint on first use and refuses to start
-- with another key, so replicas cannot seal under different keys; rotation
-- (a new key with the recorded one as the previous key) moves it.
-- Placeholders: {{schema}}. Depends on 001 only.

CREATE TABLE IF NOT EXISTS {{schema}}.sealing_key (
	id boolean PRIMARY KEY DEFAULT true CHECK (id),
	-- keys.Fingerprint: HMAC-SHA256(key, label), first 8 bytes, hex.
	fingerprint text NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{16}$'),
	recorded_at timestamptz NOT NULL DEFAULT now(),
	-- The key rotated away from, and when.
	previous_fingerprint text CHECK (previous_fingerprint ~ '^[0-9a-f]{16}$'),
	rotated_at timestamptz
);
ALTER TABLE {{schema}}.sealing_key ENABLE ROW LEVEL SECURITY;
