package pgtemp

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// SupabaseSQL creates the parts of a Supabase project that keyworker meets:
// the API roles, the auth admin role, the auth schema it owns, auth.users with
// the columns the Supabase Auth server creates, and auth.uid(). It is
// idempotent. Roles are cluster-wide, so a second database on the same server
// reuses them.
const SupabaseSQL = `
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'anon') THEN
		CREATE ROLE anon NOLOGIN NOINHERIT;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
		CREATE ROLE authenticated NOLOGIN NOINHERIT;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
		CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'supabase_auth_admin') THEN
		CREATE ROLE supabase_auth_admin LOGIN NOINHERIT CREATEROLE;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'authenticator') THEN
		CREATE ROLE authenticator LOGIN NOINHERIT;
		GRANT anon, authenticated, service_role TO authenticator;
	END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION supabase_auth_admin;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;

CREATE TABLE IF NOT EXISTS auth.users (
	instance_id uuid NULL,
	id uuid NOT NULL,
	aud varchar(255) NULL,
	"role" varchar(255) NULL,
	email varchar(255) NULL,
	encrypted_password varchar(255) NULL,
	email_confirmed_at timestamptz NULL,
	invited_at timestamptz NULL,
	confirmation_token varchar(255) NULL,
	confirmation_sent_at timestamptz NULL,
	recovery_token varchar(255) NULL,
	recovery_sent_at timestamptz NULL,
	email_change_token_new varchar(255) NULL,
	email_change varchar(255) NULL,
	email_change_sent_at timestamptz NULL,
	last_sign_in_at timestamptz NULL,
	raw_app_meta_data jsonb NULL,
	raw_user_meta_data jsonb NULL,
	is_super_admin bool NULL,
	created_at timestamptz NULL,
	updated_at timestamptz NULL,
	phone text NULL UNIQUE DEFAULT NULL,
	phone_confirmed_at timestamptz NULL,
	phone_change text NULL DEFAULT '',
	phone_change_token varchar(255) NULL DEFAULT '',
	phone_change_sent_at timestamptz NULL,
	confirmed_at timestamptz GENERATED ALWAYS AS (LEAST(email_confirmed_at, phone_confirmed_at)) STORED,
	email_change_token_current varchar(255) NULL DEFAULT '',
	email_change_confirm_status smallint NULL DEFAULT 0 CHECK (email_change_confirm_status >= 0 AND email_change_confirm_status <= 2),
	banned_until timestamptz NULL,
	reauthentication_token varchar(255) NULL DEFAULT '',
	reauthentication_sent_at timestamptz NULL,
	is_sso_user boolean NOT NULL DEFAULT false,
	deleted_at timestamptz NULL,
	is_anonymous boolean NOT NULL DEFAULT false,
	CONSTRAINT users_pkey PRIMARY KEY (id)
);
CREATE INDEX IF NOT EXISTS users_instance_id_email_idx ON auth.users (instance_id, lower(email::text));
CREATE INDEX IF NOT EXISTS users_instance_id_idx ON auth.users (instance_id);
CREATE INDEX IF NOT EXISTS users_is_anonymous_idx ON auth.users (is_anonymous);
ALTER TABLE auth.users OWNER TO supabase_auth_admin;
GRANT SELECT ON auth.users TO service_role;

CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql STABLE
AS $$
	SELECT coalesce(
		nullif(current_setting('request.jwt.claim.sub', true), ''),
		(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
	)::uuid
$$;
ALTER FUNCTION auth.uid() OWNER TO supabase_auth_admin;
`

// SetupSupabase gives the database at url the shape of a Supabase project:
// roles anon, authenticated, service_role, authenticator and
// supabase_auth_admin; schema auth owned by supabase_auth_admin; auth.users
// with the Supabase Auth column set; auth.uid(). It is idempotent. The
// connection must be a superuser's.
func SetupSupabase(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connecting to set up the Supabase shape: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// Two sessions creating the same role at once race past IF NOT EXISTS;
	// serialise on an advisory lock.
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(7265792)`); err != nil {
		return fmt.Errorf("locking for the Supabase shape: %w", err)
	}
	if _, err := conn.Exec(ctx, SupabaseSQL); err != nil {
		return fmt.Errorf("creating the Supabase shape (roles, auth schema, auth.users): %w", err)
	}
	return nil
}

// HostedRoleSQL makes role %[1]s look like hosted Supabase's postgres role
// to keyworker: not a superuser, not the owner of auth.users and not a
// member of supabase_auth_admin, but LOGIN, REPLICATION, CREATEROLE,
// CREATEDB and BYPASSRLS, with GRANT ALL on auth.users (which includes
// TRIGGER) and USAGE on schema auth, CREATE on the database, and
// membership of anon, authenticated and service_role. It is idempotent.
// %[1]s is the role as an identifier, %[2]s the database, %[3]s the role
// as a literal.
const HostedRoleSQL = `
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = %[3]s) THEN
		CREATE ROLE %[1]s LOGIN NOSUPERUSER REPLICATION CREATEROLE CREATEDB BYPASSRLS;
	END IF;
END
$$;
GRANT USAGE ON SCHEMA auth TO %[1]s;
GRANT ALL ON auth.users TO %[1]s;
GRANT CREATE ON DATABASE %[2]s TO %[1]s;
GRANT anon, authenticated, service_role TO %[1]s WITH ADMIN OPTION;
`

// SetupHostedRole creates role (see HostedRoleSQL) in the Supabase-shaped
// database at url (SetupSupabase first) and returns url as that role. The
// connection must be a superuser's; the throwaway server trusts local
// connections, so the role needs no password.
func SetupHostedRole(ctx context.Context, url, role string) (string, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return "", fmt.Errorf("connecting to create the hosted role: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(7265792)`); err != nil {
		return "", fmt.Errorf("locking for the hosted role: %w", err)
	}
	db := conn.Config().Database
	if _, err := conn.Exec(ctx, fmt.Sprintf(HostedRoleSQL, pgx.Identifier{role}.Sanitize(), pgx.Identifier{db}.Sanitize(), "'"+strings.ReplaceAll(role, "'", "''")+"'")); err != nil {
		return "", fmt.Errorf("creating the hosted-Supabase-shaped role %s: %w", role, err)
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", role, cfg.Host, cfg.Port, db), nil
}
