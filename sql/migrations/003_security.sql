-- keyworker 003: the checksum in SQL, a schema for end users, and the
-- internal schema closed to them. Placeholders: {{schema}}, {{schema_text}},
-- {{api_schema}}.
--
-- Every SECURITY DEFINER function here pins search_path = '' and loses
-- PUBLIC's EXECUTE in the same transaction that creates it (grants.sql runs
-- after the migration commits: a function must not be callable by everyone
-- in between).

-- crc32 is CRC-32 (IEEE 802.3, as Go's hash/crc32.ChecksumIEEE) of p_data,
-- table-driven: one lookup per byte. PostgreSQL 15 has no crc32().
CREATE OR REPLACE FUNCTION {{schema}}.crc32(p_data bytea)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = ''
AS $$
DECLARE
	-- The cast makes the table a constant of the cached plan: it is not
	-- parsed again on each call.
	t CONSTANT bigint[] := '{
		0,1996959894,3993919788,2567524794,124634137,1886057615,3915621685,2657392035,
		249268274,2044508324,3772115230,2547177864,162941995,2125561021,3887607047,2428444049,
		498536548,1789927666,4089016648,2227061214,450548861,1843258603,4107580753,2211677639,
		325883990,1684777152,4251122042,2321926636,335633487,1661365465,4195302755,2366115317,
		997073096,1281953886,3579855332,2724688242,1006888145,1258607687,3524101629,2768942443,
		901097722,1119000684,3686517206,2898065728,853044451,1172266101,3705015759,2882616665,
		651767980,1373503546,3369554304,3218104598,565507253,1454621731,3485111705,3099436303,
		671266974,1594198024,3322730930,2970347812,795835527,1483230225,3244367275,3060149565,
		1994146192,31158534,2563907772,4023717930,1907459465,112637215,2680153253,3904427059,
		2013776290,251722036,2517215374,3775830040,2137656763,141376813,2439277719,3865271297,
		1802195444,476864866,2238001368,4066508878,1812370925,453092731,2181625025,4111451223,
		1706088902,314042704,2344532202,4240017532,1658658271,366619977,2362670323,4224994405,
		1303535960,984961486,2747007092,3569037538,1256170817,1037604311,2765210733,3554079995,
		1131014506,879679996,2909243462,3663771856,1141124467,855842277,2852801631,3708648649,
		1342533948,654459306,3188396048,3373015174,1466479909,544179635,3110523913,3462522015,
		1591671054,702138776,2966460450,3352799412,1504918807,783551873,3082640443,3233442989,
		3988292384,2596254646,62317068,1957810842,3939845945,2647816111,81470997,1943803523,
		3814918930,2489596804,225274430,2053790376,3826175755,2466906013,167816743,2097651377,
		4027552580,2265490386,503444072,1762050814,4150417245,2154129355,426522225,1852507879,
		4275313526,2312317920,282753626,1742555852,4189708143,2394877945,397917763,1622183637,
		3604390888,2714866558,953729732,1340076626,3518719985,2797360999,1068828381,1219638859,
		3624741850,2936675148,906185462,1090812512,3747672003,2825379669,829329135,1181335161,
		3412177804,3160834842,628085408,1382605366,3423369109,3138078467,570562233,1426400815,
		3317316542,2998733608,733239954,1555261956,3268935591,3050360625,752459403,1541320221,
		2607071920,3965973030,1969922972,40735498,2617837225,3943577151,1913087877,83908371,
		2512341634,3803740692,2075208622,213261112,2463272603,3855990285,2094854071,198958881,
		2262029012,4057260610,1759359992,534414190,2176718541,4139329115,1873836001,414664567,
		2282248934,4279200368,1711684554,285281116,2405801727,4167216745,1634467795,376229701,
		2685067896,3608007406,1308918612,956543938,2808555105,3495958263,1231636301,1047427035,
		2932959818,3654703836,1088359270,936918000,2847714899,3736837829,1202900863,817233897,
		3183342108,3401237130,1404277552,615818150,3134207493,3453421203,1423857449,601450431,
		3009837614,3294710456,1567103746,711928724,3020668471,3272380065,1510334235,755167117
	}'::bigint[];
	c bigint := 4294967295;
BEGIN
	FOR i IN 0 .. length(p_data) - 1 LOOP
		c := (c >> 8) # t[((c # get_byte(p_data, i)) & 255) + 1];
	END LOOP;
	RETURN c # 4294967295;
END
$$;

-- key_checksum is the 6-character checksum of a key whose text before the
-- checksum is p_text: its CRC-32 as fixed-width base62 in KSUID's alphabet,
-- as keys.Parse computes it.
CREATE OR REPLACE FUNCTION {{schema}}.key_checksum(p_text text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = ''
AS $$
DECLARE
	c bigint := {{schema}}.crc32(convert_to(p_text, 'UTF8'));
	v_out text := '';
BEGIN
	FOR i IN 1 .. 6 LOOP
		v_out := substr('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', (c % 62)::integer + 1, 1) || v_out;
		c := c / 62;
	END LOOP;
	RETURN v_out;
END
$$;

-- verify_api_key, as in 002, now with keys.Parse's checks before any lookup:
-- the checksum (a key with a wrong one is not_found, as in Go), and the id
-- and secret in range (fixed-width base62 compares like the numbers it
-- encodes, in the C collation).
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
REVOKE EXECUTE ON FUNCTION {{schema}}.verify_api_key(text) FROM PUBLIC;

-- revoke_api_key revokes a key at p_at (now by default; a later time is a
-- scheduled revocation) for an operator or a service, and deletes the sealed
-- secret still waiting for pick-up when the revocation is not in the future,
-- as the Go store's Revoke does. End users are served by
-- {{api_schema}}.revoke_api_key; should one reach this function anyway (the
-- internal schema exposed against the README), it acts only on the caller's
-- own keys, and only now: a time they pass is refused, so that they cannot
-- backdate a revocation. Returns false when there is no such key (or not
-- theirs), or it was already revoked at or before p_at.
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
	v_deleted boolean := false;
BEGIN
	IF v_end_user THEN
		IF p_at IS NOT NULL THEN
			RAISE EXCEPTION 'revoke_api_key: p_at is for operators; an end user''s revocation takes effect now'
				USING ERRCODE = 'insufficient_privilege',
				      HINT = 'Call {{api_schema}}.revoke_api_key(key_id) without a time.';
		END IF;
		IF v_uid IS NULL THEN
			RETURN false;
		END IF;
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
	IF v_at <= now() THEN
		DELETE FROM {{schema}}.key_reveals r WHERE r.key_id = p_key_id;
		v_deleted := FOUND;
	END IF;
	INSERT INTO {{schema}}.key_events (event, key_id, user_id, actor, detail)
	VALUES ('revoked', p_key_id, v_user,
	        CASE WHEN v_end_user THEN 'user' ELSE 'operator' END,
	        jsonb_build_object('revoked_at', v_at, 'reveal_deleted', v_deleted));
	RETURN true;
END
$$;
REVOKE EXECUTE ON FUNCTION {{schema}}.revoke_api_key(text, timestamptz) FROM PUBLIC;

-- Sealed secrets of keys revoked through SQL before this migration were left
-- waiting (they could not be picked up: pick-up skips revoked keys). Delete
-- them now, as a revocation does from here on.
WITH d AS (
	DELETE FROM {{schema}}.key_reveals r
	 USING {{schema}}.api_keys k
	 WHERE k.id = r.key_id AND k.revoked_at <= now()
	RETURNING r.key_id, r.user_id
)
INSERT INTO {{schema}}.key_events (event, key_id, user_id, actor, detail)
SELECT 'reveal_deleted', d.key_id, d.user_id, 'worker', jsonb_build_object('reason', 'key_revoked')
  FROM d;

-- End users read nothing of the internal schema any more: they are served
-- from {{api_schema}}. (With this policy, a GRANT SELECT ON ALL TABLES would
-- have shown them their own keys' hash and salt.)
DROP POLICY IF EXISTS authenticated_reads_own_keys ON {{schema}}.api_keys;

-- The end users' schema: what an exposed schema may hold, and nothing else.
-- Everything in it is safe to grant to anon and authenticated, as
-- Supabase's guide for an exposed schema does; grants.sql grants
-- authenticated what it needs.
CREATE SCHEMA IF NOT EXISTS {{api_schema}};
REVOKE ALL ON SCHEMA {{api_schema}} FROM PUBLIC;

-- list_api_keys lists the metadata (never hash or salt) of the keys of the
-- request's user (the sub of its access token), newest first; nothing for a
-- request without one (anon). SECURITY DEFINER: end users have no right on
-- the internal schema.
CREATE OR REPLACE FUNCTION {{api_schema}}.list_api_keys()
RETURNS TABLE (
	id text, user_id uuid, name text, prefix text, last4 text, source text,
	created_at timestamptz, expires_at timestamptz, revoked_at timestamptz,
	last_used_at timestamptz
)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = ''
AS $$
	SELECT a.id, a.user_id, a.name, a.prefix, a.last4, a.source,
	       a.created_at, a.expires_at, a.revoked_at, a.last_used_at
	  FROM {{schema}}.api_keys a
	 WHERE a.user_id = {{schema}}.request_user_id()
	 ORDER BY a.id DESC
$$;
REVOKE EXECUTE ON FUNCTION {{api_schema}}.list_api_keys() FROM PUBLIC;

-- api_keys is list_api_keys as a view, for PostgREST's filters and ordering
-- (supabase.schema('...').from('api_keys')). Reading from a function makes
-- it read-only whatever is granted on it: INSERT, UPDATE and DELETE fail.
CREATE OR REPLACE VIEW {{api_schema}}.api_keys AS
	SELECT k.id, k.user_id, k.name, k.prefix, k.last4, k.source,
	       k.created_at, k.expires_at, k.revoked_at, k.last_used_at
	  FROM {{api_schema}}.list_api_keys() k;

-- revoke_api_key revokes one of the request's user's own keys, now (never at
-- a time the caller picks), deletes its sealed secret if it still waits, and
-- records the event. False when there is no such key of theirs, it is
-- already revoked, or the request has no user.
CREATE OR REPLACE FUNCTION {{api_schema}}.revoke_api_key(p_key_id text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
	v_uid uuid := {{schema}}.request_user_id();
	v_deleted boolean;
BEGIN
	IF v_uid IS NULL THEN
		RETURN false;
	END IF;
	UPDATE {{schema}}.api_keys a
	   SET revoked_at = now()
	 WHERE a.id = p_key_id
	   AND a.user_id = v_uid
	   AND (a.revoked_at IS NULL OR a.revoked_at > now());
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	DELETE FROM {{schema}}.key_reveals r WHERE r.key_id = p_key_id;
	v_deleted := FOUND;
	INSERT INTO {{schema}}.key_events (event, key_id, user_id, actor, detail)
	VALUES ('revoked', p_key_id, v_uid, 'user',
	        jsonb_build_object('revoked_at', now(), 'reveal_deleted', v_deleted));
	RETURN true;
END
$$;
REVOKE EXECUTE ON FUNCTION {{api_schema}}.revoke_api_key(text) FROM PUBLIC;
