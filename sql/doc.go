// Package sql holds keyworker's database objects as embedded, ordered
// migrations and applies them.
//
// Everything lives in one schema of the project's own (default "keyworker"),
// River's tables too: api_keys, key_events (the audit trail), key_reveals
// (sealed secrets waiting for their one pick-up), replication_checkpoints,
// installation, and the functions verify_api_key, list_api_keys and
// revoke_api_key. Nothing is created in public or auth, and nothing is
// granted to anon.
//
// Migrate holds an advisory lock keyed by the schema while it applies what is
// missing: keyworker's migrations together in one transaction, recorded in
// <schema>.schema_migrations; River's (rivermigrate) one version per
// transaction, as River needs; then the grants, again. Running it twice, or
// from two processes at once, is safe: the second finds nothing to do.
package sql
