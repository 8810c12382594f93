// Package sql holds keyworker's database objects as embedded, ordered
// migrations and applies them.
//
// Two schemas. The project's own (default "keyworker") is internal and holds
// everything, River's tables too: api_keys, key_events (the audit trail),
// key_reveals (sealed secrets waiting for their one pick-up),
// replication_checkpoints, installation, and the functions verify_api_key
// (which checks a key's checksum as keys.Parse does before any lookup, and
// answers valid, not_found, revoked, expired or disabled),
// list_api_keys and revoke_api_key for services and operators. Every table in
// it has row level security enabled (not forced: the owning worker role is
// not subject to it), and anon and authenticated hold no privilege on it.
//
// APISchema(schema) (default "keyworker_api") serves end users and is the one
// schema to expose through an API such as Supabase's: a read-only view
// api_keys and the functions list_api_keys() and revoke_api_key(key_id),
// each limited to the user of the request's access token
// (request.jwt.claims). It is safe to grant everything in it to anon and
// authenticated.
//
// Nothing is created in public or auth. Migrate holds an advisory lock keyed
// by the schema while it applies what is missing: keyworker's migrations
// together in one transaction, recorded in <schema>.schema_migrations;
// River's (rivermigrate) one version per transaction, as River needs; then
// the grants, again, revoking first what the API roles hold. Running it
// twice, or from two processes at once, is safe: the second finds nothing to
// do.
package sql
