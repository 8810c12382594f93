package testenv

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

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
// database at url (pgtemp.SetupSupabase first) and returns url as that role. The
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
