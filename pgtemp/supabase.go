package pgtemp

import (
	"context"
	"fmt"

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
