-- Applied after every migration run (idempotent): who may touch what.
--
-- {{schema}} is internal: River's tables, the keys with their hashes and
-- salts, the sealed secrets, the audit trail. Only its owner (the worker's
-- role) works in it; service_role may verify, list and revoke keys and read
-- key metadata and the audit trail; anon and authenticated get nothing.
-- {{api_schema}} serves end users, and is the one schema to expose through
-- the API: its view and functions show and touch only the request's own
-- user's keys, so whatever is granted on it (Supabase's recipe grants ALL to
-- anon and authenticated) reaches no more than that.
--
-- Every run first revokes everything the API roles and PUBLIC hold in both
-- schemas, then grants the exact set, so a grant made by hand (or by
-- Supabase's recipe run on the internal schema) is undone by the next
-- `worker migrate` or `worker run`.

REVOKE ALL ON SCHEMA {{schema}}, {{api_schema}} FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA {{schema}}, {{api_schema}} FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA {{schema}}, {{api_schema}} FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA {{schema}}, {{api_schema}} FROM PUBLIC;
-- What the migrating role creates in the internal schema later is granted to
-- no one (per-schema defaults cannot take back PUBLIC's global EXECUTE on
-- functions: migrations revoke it themselves, and the line above again).
ALTER DEFAULT PRIVILEGES IN SCHEMA {{schema}} REVOKE ALL ON TABLES FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA {{schema}} REVOKE ALL ON SEQUENCES FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA {{schema}} REVOKE ALL ON ROUTINES FROM PUBLIC;

DO $do$
DECLARE
	v_table regclass;
	v_role text;
BEGIN
	-- Row level security on every table of the internal schema, River's
	-- too, with no policy for anyone: a role granted a table by mistake
	-- reads and writes no row of it. The owner (the worker's role) is not
	-- subject to it (not FORCEd), nor are roles with BYPASSRLS
	-- (service_role).
	FOR v_table IN
		SELECT c.oid::regclass FROM pg_catalog.pg_class c
		 WHERE c.relnamespace = {{schema_text}}::regnamespace
		   AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity
	LOOP
		EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', v_table);
	END LOOP;

	FOREACH v_role IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
		CONTINUE WHEN NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = v_role);
		EXECUTE format($sql$
			REVOKE ALL ON SCHEMA {{schema}}, {{api_schema}} FROM %1$I;
			REVOKE ALL ON ALL TABLES IN SCHEMA {{schema}}, {{api_schema}} FROM %1$I;
			REVOKE ALL ON ALL SEQUENCES IN SCHEMA {{schema}}, {{api_schema}} FROM %1$I;
			REVOKE ALL ON ALL ROUTINES IN SCHEMA {{schema}}, {{api_schema}} FROM %1$I;
			ALTER DEFAULT PRIVILEGES IN SCHEMA {{schema}} REVOKE ALL ON TABLES FROM %1$I;
			ALTER DEFAULT PRIVILEGES IN SCHEMA {{schema}} REVOKE ALL ON SEQUENCES FROM %1$I;
			ALTER DEFAULT PRIVILEGES IN SCHEMA {{schema}} REVOKE ALL ON ROUTINES FROM %1$I;
		$sql$, v_role);
	END LOOP;

	IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
		EXECUTE $sql$
			GRANT USAGE ON SCHEMA {{api_schema}} TO authenticated;
			GRANT SELECT ON {{api_schema}}.api_keys TO authenticated;
			GRANT EXECUTE ON FUNCTION {{api_schema}}.list_api_keys(),
				{{api_schema}}.revoke_api_key(text) TO authenticated;
		$sql$;
	END IF;
	IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
		EXECUTE $sql$
			GRANT USAGE ON SCHEMA {{schema}} TO service_role;
			GRANT SELECT (id, user_id, name, prefix, last4, source, created_at,
				expires_at, revoked_at, last_used_at, disabled_at) ON {{schema}}.api_keys TO service_role;
			GRANT SELECT ON {{schema}}.key_events TO service_role;
			GRANT EXECUTE ON FUNCTION {{schema}}.verify_api_key(text),
				{{schema}}.list_api_keys(uuid), {{schema}}.revoke_api_key(text, timestamptz),
				{{schema}}.request_user_id(), {{schema}}.request_is_end_user() TO service_role;
		$sql$;
	END IF;
END
$do$;
