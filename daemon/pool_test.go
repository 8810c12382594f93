package daemon

import (
	"strings"
	"testing"
)

// TestPoolConfigSizing: the pool is sized for the workers unless the
// connection string sets pool_max_conns, in URL or keyword/value form;
// the words elsewhere in it (a password, a database name) do not count.
func TestPoolConfigSizing(t *testing.T) {
	t.Parallel()
	fit := poolSize(8, 6) // 8 + 3 + 4
	for _, c := range []struct {
		name, conn string
		want       int32
	}{
		{"URL", "postgres://u:p@db.example.com:5432/app", fit},
		{"URL setting it", "postgres://u:p@db.example.com:5432/app?sslmode=disable&pool_max_conns=3", 3},
		{"keyword/value", "host=db.example.com user=u dbname=app", fit},
		{"keyword/value setting it", "host=db.example.com user=u pool_max_conns=7 dbname=app", 7},
		{"password mentioning it", "postgres://u:pool_max_conns%3D2@db.example.com/app", fit},
		{"database named after it", "host=db.example.com user=u dbname=pool_max_conns", fit},
		{"quoted value mentioning it", "host=db.example.com user=u password='pool_max_conns=2'", fit},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := poolConfig(c.conn, 8, 6)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MaxConns != c.want {
				t.Errorf("MaxConns = %d, want %d", cfg.MaxConns, c.want)
			}
		})
	}
	if _, err := poolConfig("postgres://u:hunter2@db.example.com/app?pool_max_conns=none", 0, 0); err == nil ||
		!strings.Contains(err.Error(), "DatabaseURL") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("a bad pool_max_conns: %v, want an error naming DatabaseURL without the password", err)
	}
}
