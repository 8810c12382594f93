package listener

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckTLS guards the warning on connections whose certificate is not
// verified: every sslmode, to a remote host, a loopback one and a socket.
func TestCheckTLS(t *testing.T) {
	// PGSSLMODE and friends change what an unset sslmode means.
	for _, k := range []string{"PGSSLMODE", "PGSSLROOTCERT", "PGHOST", "PGSSLNEGOTIATION"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, []byte(testCA), 0o600); err != nil {
		t.Fatal(err)
	}
	const remote = "postgres://postgres:hunter2@db.abc.supabase.co:5432/postgres"
	for _, tc := range []struct {
		name, conn string
		want       string // "" for no warning, else a substring
	}{
		{"unset", remote, "falling back to plaintext (sslmode unset or prefer)"},
		{"prefer", remote + "?sslmode=prefer", "falling back to plaintext"},
		{"prefer with a CA still does not verify", remote + "?sslmode=prefer&sslrootcert=" + ca, "falling back to plaintext"},
		{"allow", remote + "?sslmode=allow", "sslmode=allow"},
		{"disable", remote + "?sslmode=disable", "in plaintext (sslmode=disable)"},
		{"require", remote + "?sslmode=require", "sslmode=require without sslrootcert"},
		{"require with a CA verifies it", remote + "?sslmode=require&sslrootcert=" + ca, ""},
		{"verify-ca", remote + "?sslmode=verify-ca&sslrootcert=" + ca, ""},
		{"verify-full", remote + "?sslmode=verify-full&sslrootcert=" + ca, ""},
		{"verify-full with the system roots", remote + "?sslmode=verify-full&sslrootcert=system", ""},
		{"keyword/value form", "host=db.abc.supabase.co user=postgres password=hunter2 dbname=postgres", "sslmode unset or prefer"},
		{"keyword/value verify-full", "host=db.abc.supabase.co user=postgres password=hunter2 sslmode=verify-full sslrootcert=" + ca, ""},
		{"an IP address", "postgres://u:hunter2@203.0.113.7:5432/db?sslmode=disable", "connects to 203.0.113.7 in plaintext"},
		{"localhost", "postgres://u:hunter2@localhost:5432/db?sslmode=disable", ""},
		{"127.0.0.1", "postgres://u:hunter2@127.0.0.1:5432/db", ""},
		{"::1", "postgres://u:hunter2@[::1]:5432/db?sslmode=disable", ""},
		{"a Unix socket", "host=/var/run/postgresql user=u password=hunter2 sslmode=disable", ""},
		{"one remote host among loopback ones", "postgres://u:hunter2@127.0.0.1:5432,db.example.com:5432/db?sslmode=disable", "connects to db.example.com"},
		{"malformed: left to the connection", "postgres://u:hunter2@db.example.com:5432/db?sslmode=bogus", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckTLS(tc.conn)
			if tc.want == "" {
				if got != "" {
					t.Fatalf("CheckTLS = %q, want no warning", got)
				}
				return
			}
			if !strings.Contains(got, tc.want) {
				t.Fatalf("CheckTLS = %q, want it to say %q", got, tc.want)
			}
			for _, fix := range []string{"sslmode=verify-full", "sslrootcert", "ConnString"} {
				if !strings.Contains(got, fix) {
					t.Errorf("warning %q does not say %q", got, fix)
				}
			}
			if strings.Contains(got, "hunter2") {
				t.Errorf("warning %q shows the password", got)
			}
		})
	}
}

// testCA is a self-signed CA certificate (only parsed, never used to
// connect).
const testCA = `-----BEGIN CERTIFICATE-----
MIIBjTCCATOgAwIBAgIUYJyEHFBnc6upUJi9wkrezWsIXZEwCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRa2V5d29ya2VyIHRlc3QgQ0EwHhcNMjYxMjAxMjAwMjU3WhcN
MzYxMTI4MjAwMjU3WjAcMRowGAYDVQQDDBFrZXl3b3JrZXIgdGVzdCBDQTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABNqJi8Egnukt8w3MFis1xjh6inFPHrIu+Afv
PI2E6Lx/W8RNzOdw89LnXfwUeEoisuLNsdyGtfbmmf8IeD8A+tyjUzBRMB0GA1Ud
DgQWBBTv1d0DM/57jywc7FIvQjew3dEmbzAfBgNVHSMEGDAWgBTv1d0DM/57jywc
7FIvQjew3dEmbzAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIG3d
FemBfnhJkZkLfy6Bg41S03XGq/oBNMKTp03qfHRuAiEAx8Q5FXlMQQg2yAnLEbXj
3TTlOIc8Y5NqgFr9Fs4nxmE=
-----END CERTIFICATE-----
`
