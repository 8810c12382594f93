-- Applied after every migration run (idempotent): who may touch what.
-- Nothing for anon; end users read their keys' metadata through row level
-- security; services verify through the function.
REVOKE ALL ON SCHEMA {{schema}} FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA {{schema}} FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA {{schema}} FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {{schema}} FROM PUBLIC;

DO $do$
BEGIN
	IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
		EXECUTE $sql$ REVOKE ALL ON SCHEMA {{schema}} FROM anon $sql$;
		EXECUTE $sql$ REVOKE ALL ON ALL TABLES IN SCHEMA {{schema}} FROM anon $sql$;
		EXECUTE $sql$ REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {{schema}} FROM anon $sql$;
	END IF;
	IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
		EXECUTE $sql$ GRANT USAGE ON SCHEMA {{schema}} TO authenticated $sql$;
		EXECUTE $sql$ GRANT SELECT (id, user_id, name, prefix, last4, source, created_at,
			expires_at, revoked_at, last_used_at) ON {{schema}}.api_keys TO authenticated $sql$;
		EXECUTE $sql$ GRANT EXECUTE ON FUNCTION {{schema}}.list_api_keys(uuid),
			{{schema}}.revoke_api_key(text, timestamptz),
			{{schema}}.request_user_id(), {{schema}}.request_is_end_user() TO authenticated $sql$;
	END IF;
	IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
		EXECUTE $sql$ GRANT USAGE ON SCHEMA {{schema}} TO service_role $sql$;
		EXECUTE $sql$ GRANT SELECT (id, user_id, name, prefix, last4, source, created_at,
			expires_at, revoked_at, last_used_at) ON {{schema}}.api_keys TO service_role $sql$;
		EXECUTE $sql$ GRANT SELECT ON {{schema}}.key_events TO service_role $sql$;
		EXECUTE $sql$ GRANT EXECUTE ON FUNCTION {{schema}}.verify_api_key(text),
			{{schema}}.list_api_keys(uuid), {{schema}}.revoke_api_key(text, timestamptz),
			{{schema}}.request_user_id(), {{schema}}.request_is_end_user() TO service_role $sql$;
	END IF;
END
$do$;
