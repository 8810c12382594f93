package pgtemp

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvTestDatabaseURL names the environment variable that points tests (and
// `worker demo`) at an existing server instead of a throwaway one. The role
// must be a superuser (it creates roles and databases) and the server must
// run with wal_level=logical.
const EnvTestDatabaseURL = "TEST_DATABASE_URL"

// DropDatabase drops the named database on adminURL's server (a superuser
// connection), first ending the replication connections on it and dropping
// its replication slots (a database with slots cannot be dropped).
func DropDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for attempt := 0; ; attempt++ {
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, name)
		_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, name)
		if err == nil || attempt == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("dropping replication slots: %w", err)
	}
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}

// DatabaseURL returns connString pointed at another database. It accepts
// both URL and keyword/value forms.
func DatabaseURL(connString, database string) string {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		u, err := url.Parse(connString)
		if err == nil {
			u.Path = "/" + database
			return u.String()
		}
	}
	return connString + " dbname=" + database
}
