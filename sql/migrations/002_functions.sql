-- keyworker 002: verification, listing and revocation in SQL, and row level
-- security for Supabase's roles.

-- The user id of the Supabase access token of the current request, or NULL.
-- Reads the claims PostgREST sets; never raises.
CREATE OR REPLACE FUNCTION {{schema}}.request_user_id()
RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = ''
AS $$
DECLARE
	v_sub text;
BEGIN
	v_sub := coalesce(
		nullif(current_setting('request.jwt.claim.sub', true), ''),
		nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
	);
	IF v_sub ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
		RETURN v_sub::uuid;
	END IF;
	RETURN NULL;
EXCEPTION WHEN others THEN
	RETURN NULL;
END
$$;

-- True when the caller is an end user (Supabase's anon or authenticated
-- role, or a request carrying such a token) rather than an operator or a
-- service. SECURITY DEFINER functions use it to limit users to their own keys.
CREATE OR REPLACE FUNCTION {{schema}}.request_is_end_user()
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = ''
AS $$
DECLARE
	v_role text;
BEGIN
	IF current_setting('role', true) IN ('anon', 'authenticated') THEN
		RETURN true;
	END IF;
	v_role := nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role';
	RETURN coalesce(v_role IN ('anon', 'authenticated'), false);
EXCEPTION WHEN others THEN
	-- Unreadable claims: treat as an end user, the narrower right.
	RETURN true;
END
$$;

-- verify_api_key checks a full key string. Garbage is not_found, never an
-- error. A wrong secret is not_found too (the same answer as an unknown id);
-- revoked and expired are only told to holders of the right secret.
-- Hash: sha256(secret || salt), with PostgreSQL's built-in sha256 (no
-- pgcrypto needed). SECURITY DEFINER: callers need no access to the hashes.
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

	SELECT a.user_id, a.prefix, a.secret_hash, a.salt, a.hash_version,
	       a.revoked_at, a.expires_at, a.last_used_at
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
	-- last_used_at at minute resolution: one write per key per minute at most.
	IF k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute' THEN
		UPDATE {{schema}}.api_keys SET last_used_at = now() WHERE id = v_id;
	END IF;
	RETURN QUERY SELECT k.user_id, 'valid'::text, v_id;
END
$$;

-- list_api_keys lists key metadata (never hashes or salts), newest first.
-- SECURITY INVOKER: an authenticated user sees only their own keys, through
-- row level security.
CREATE OR REPLACE FUNCTION {{schema}}.list_api_keys(p_user_id uuid DEFAULT NULL)
RETURNS TABLE (
	id text, user_id uuid, name text, prefix text, last4 text, source text,
	created_at timestamptz, expires_at timestamptz, revoked_at timestamptz,
	last_used_at timestamptz
)
LANGUAGE sql STABLE
SET search_path = ''
AS $$
	SELECT a.id, a.user_id, a.name, a.prefix, a.last4, a.source,
	       a.created_at, a.expires_at, a.revoked_at, a.last_used_at
	  FROM {{schema}}.api_keys a
	 WHERE p_user_id IS NULL OR a.user_id = p_user_id
	 ORDER BY a.id DESC
$$;

-- revoke_api_key revokes a key at p_at (now by default; a later time is a
-- scheduled revocation). An end user may revoke only their own keys. Returns
-- false when there is no such key (or not theirs), or it was already revoked
-- earlier. SECURITY DEFINER: users have no UPDATE right on api_keys.
CREATE OR REPLACE FUNCTION {{schema}}.revoke_api_key(p_key_id text, p_at timestamptz DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
	v_end_user boolean := {{schema}}.request_is_end_user();
	v_uid uuid := {{schema}}.request_user_id();
	v_at timestamptz := coalesce(p_at, now());
	v_user uuid;
BEGIN
	IF v_end_user AND (v_uid IS NULL OR v_at > now()) THEN
		RETURN false;
	END IF;
	UPDATE {{schema}}.api_keys a
	   SET revoked_at = v_at
	 WHERE a.id = p_key_id
	   AND (NOT v_end_user OR a.user_id = v_uid)
	   AND (a.revoked_at IS NULL OR a.revoked_at > v_at)
	RETURNING a.user_id INTO v_user;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	INSERT INTO {{schema}}.key_events (event, key_id, user_id, actor, detail)
	VALUES ('revoked', p_key_id, v_user,
	        CASE WHEN v_end_user THEN 'user' ELSE 'operator' END,
	        jsonb_build_object('revoked_at', v_at));
	RETURN true;
END
$$;

ALTER TABLE {{schema}}.api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{schema}}.key_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{schema}}.key_reveals ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{schema}}.replication_checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{schema}}.installation ENABLE ROW LEVEL SECURITY;

DO $do$
BEGIN
	IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated')
	   AND NOT EXISTS (SELECT FROM pg_catalog.pg_policies
	                    WHERE schemaname = {{schema_text}} AND tablename = 'api_keys'
	                      AND policyname = 'authenticated_reads_own_keys') THEN
		EXECUTE $sql$
			CREATE POLICY authenticated_reads_own_keys ON {{schema}}.api_keys
			FOR SELECT TO authenticated
			USING (user_id = (SELECT {{schema}}.request_user_id()))
		$sql$;
	END IF;
END
$do$;
