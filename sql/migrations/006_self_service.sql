-- keyworker 006: keys their owners manage themselves. A reversible
-- disable, a source for keys an end user made through the HTTP API, an index
-- for the lifecycle scan over expiry times, verify_api_key answering
-- disabled, and disabled_at in what end users and services list.
-- Placeholders: {{schema}}, {{api_schema}}.
--
-- What does not change: revoke_api_key (internal and {{api_schema}})
-- revokes a disabled key as any other, and leaves disabled_at as it was (a
-- revoked key is revoked whatever else it is; the history stays). End users
-- disable and enable keys through the HTTP API only, which checks the
-- owner and the live-key limit in Go: no SQL function for it.

-- NULL: enabled. A time: disabled since then, until enabled again
-- (disabled_at back to NULL). Unlike revoked_at, never in the future.
ALTER TABLE {{schema}}.api_keys ADD COLUMN IF NOT EXISTS disabled_at timestamptz;

-- 'user': made by the end user through the HTTP API.
ALTER TABLE {{schema}}.api_keys DROP CONSTRAINT IF EXISTS api_keys_source_check;
ALTER TABLE {{schema}}.api_keys ADD CONSTRAINT api_keys_source_check
	CHECK (source IN ('signup', 'manual', 'user'));

-- The lifecycle scan's keys: those that expire. Built in the migration's
-- transaction (CREATE INDEX CONCURRENTLY cannot run in one); api_keys holds
-- one row a key, so this takes well under a second for a million keys.
CREATE INDEX IF NOT EXISTS api_keys_expires_at_idx
	ON {{schema}}.api_keys (expires_at) WHERE expires_at IS NOT NULL;

-- verify_api_key, as in 003, with one more status: a disabled key whose
-- secret is right is 'disabled', with its user and key id, as revoked and
-- expired are. The order is revoked, expired, disabled, valid (as
-- keys.Status and keystore.Info.Status). A disabled key's last_used_at is not
-- touched: it was not used.
CREATE OR REPLACE FUNCTION {{schema}}.verify_api_key(p_key text)
RETURNS TABLE (user_id uuid, status text, key_id text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
	n integer := coalesce(length(p_key), 0);
	v_prefix text;
	v_id text;
	v_secret text;
	v_hash bytea;
	k record;
BEGIN
	IF n < 79 OR n > 110 OR p_key !~ '^[a-z][a-z0-9_]*_[0-9A-Za-z]{27}_[0-9A-Za-z]{49}$' THEN
		RETURN QUERY SELECT NULL::uuid, 'not_found'::text, NULL::text;
		RETURN;
	END IF;
	v_prefix := left(p_key, n - 78);
	v_id := substr(p_key, n - 76, 27);
	v_secret := substr(p_key, n - 48, 43);
	IF {{schema}}.key_checksum(left(p_key, n - 6)) <> right(p_key, 6)
	   OR v_id COLLATE "C" > 'aWgEPTl1tmebfsQzFP4bxwgy80V'
	   OR v_secret COLLATE "C" > 'yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1' THEN
		RETURN QUERY SELECT NULL::uuid, 'not_found'::text, NULL::text;
		RETURN;
	END IF;

	SELECT a.user_id, a.prefix, a.secret_hash, a.salt, a.hash_version,
	       a.revoked_at, a.expires_at, a.disabled_at, a.last_used_at
	  INTO k
	  FROM {{schema}}.api_keys a
	 WHERE a.id = v_id;
	IF NOT FOUND THEN
		-- The same hashing work as a wrong secret.
		v_hash := sha256(convert_to(v_secret, 'UTF8') || '\x00000000000000000000000000000000'::bytea);
		RETURN QUERY SELECT NULL::uuid, 'not_found'::text, NULL::text;
		RETURN;
	END IF;
	v_hash := sha256(convert_to(v_secret, 'UTF8') || k.salt);
	IF k.hash_version <> 1 OR k.prefix <> v_prefix OR v_hash <> k.secret_hash THEN
		RETURN QUERY SELECT NULL::uuid, 'not_found'::text, NULL::text;
		RETURN;
	END IF;
	IF k.revoked_at IS NOT NULL AND k.revoked_at <= now() THEN
		RETURN QUERY SELECT k.user_id, 'revoked'::text, v_id;
		RETURN;
	END IF;
	IF k.expires_at IS NOT NULL AND k.expires_at <= now() THEN
		RETURN QUERY SELECT k.user_id, 'expired'::text, v_id;
		RETURN;
	END IF;
	IF k.disabled_at IS NOT NULL THEN
		RETURN QUERY SELECT k.user_id, 'disabled'::text, v_id;
		RETURN;
	END IF;
	-- last_used_at at minute resolution: one write per key per minute at most.
	IF k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute' THEN
		UPDATE {{schema}}.api_keys SET last_used_at = now() WHERE id = v_id;
	END IF;
	RETURN QUERY SELECT k.user_id, 'valid'::text, v_id;
END
$$;
REVOKE EXECUTE ON FUNCTION {{schema}}.verify_api_key(text) FROM PUBLIC;

-- The lists gain disabled_at, as their last column. A function's result
-- type cannot change in place: both are dropped (the view with its
-- function) and made again, and their grants given again here, in the same
-- transaction, as grants.sql gives them, so that no request meets a
-- missing grant between this commit and the next grants run.
DROP VIEW IF EXISTS {{api_schema}}.api_keys;
DROP FUNCTION IF EXISTS {{api_schema}}.list_api_keys();
DROP FUNCTION IF EXISTS {{schema}}.list_api_keys(uuid);

-- list_api_keys lists key metadata (never hashes or salts), newest first,
-- of p_user_id's keys or of every key: for services and operators.
CREATE FUNCTION {{schema}}.list_api_keys(p_user_id uuid DEFAULT NULL)
RETURNS TABLE (
	id text, user_id uuid, name text, prefix text, last4 text, source text,
	created_at timestamptz, expires_at timestamptz, revoked_at timestamptz,
	last_used_at timestamptz, disabled_at timestamptz
)
LANGUAGE sql STABLE
SET search_path = ''
AS $$
	SELECT a.id, a.user_id, a.name, a.prefix, a.last4, a.source,
	       a.created_at, a.expires_at, a.revoked_at, a.last_used_at, a.disabled_at
	  FROM {{schema}}.api_keys a
	 WHERE p_user_id IS NULL OR a.user_id = p_user_id
	 ORDER BY a.id DESC
$$;
REVOKE EXECUTE ON FUNCTION {{schema}}.list_api_keys(uuid) FROM PUBLIC;

-- list_api_keys lists the metadata (never hash or salt) of the keys of the
-- request's user, newest first; nothing for a request without one (anon).
-- SECURITY DEFINER: end users have no right on the internal schema.
CREATE FUNCTION {{api_schema}}.list_api_keys()
RETURNS TABLE (
	id text, user_id uuid, name text, prefix text, last4 text, source text,
	created_at timestamptz, expires_at timestamptz, revoked_at timestamptz,
	last_used_at timestamptz, disabled_at timestamptz
)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = ''
AS $$
	SELECT a.id, a.user_id, a.name, a.prefix, a.last4, a.source,
	       a.created_at, a.expires_at, a.revoked_at, a.last_used_at, a.disabled_at
	  FROM {{schema}}.api_keys a
	 WHERE a.user_id = {{schema}}.request_user_id()
	 ORDER BY a.id DESC
$$;
REVOKE EXECUTE ON FUNCTION {{api_schema}}.list_api_keys() FROM PUBLIC;

-- api_keys is list_api_keys as a read-only view, for PostgREST's filters
-- and ordering (see 003).
CREATE VIEW {{api_schema}}.api_keys AS
	SELECT k.id, k.user_id, k.name, k.prefix, k.last4, k.source,
	       k.created_at, k.expires_at, k.revoked_at, k.last_used_at, k.disabled_at
	  FROM {{api_schema}}.list_api_keys() k;

DO $do$
BEGIN
	IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
		EXECUTE $sql$
			GRANT SELECT ON {{api_schema}}.api_keys TO authenticated;
			GRANT EXECUTE ON FUNCTION {{api_schema}}.list_api_keys() TO authenticated;
		$sql$;
	END IF;
	IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
		EXECUTE $sql$
			GRANT SELECT (disabled_at) ON {{schema}}.api_keys TO service_role;
			GRANT EXECUTE ON FUNCTION {{schema}}.list_api_keys(uuid) TO service_role;
		$sql$;
	END IF;
END
$do$;
