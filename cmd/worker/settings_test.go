package main

import (
	"context"
	"flag"
	"io"
	"os"
	"strings"
	"testing"
)

func resolve(t *testing.T, cmd string, args []string, envv map[string]string) (*values, error) {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return parseSettings(fs, cmd, false, args, func(k string) string { return envv[k] }, func(name string) ([]byte, error) {
		if v, ok := envv["file:"+name]; ok {
			return []byte(v), nil
		}
		return nil, os.ErrNotExist
	})
}

func TestSettingsPrecedenceFlagEnvFileDefault(t *testing.T) {
	t.Parallel()
	v, err := resolve(t, "run", []string{"--schema", "from_flag"}, map[string]string{
		"KEYWORKER_SCHEMA":           "from_env",
		"KEYWORKER_KEY_PREFIX":       "acme_live",
		"KEYWORKER_SEALING_KEY_FILE": "/secrets/sealing",
		"file:/secrets/sealing":      "c2VhbGVk\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	for env, want := range map[string]string{
		"KEYWORKER_SCHEMA":      "from_flag",
		"KEYWORKER_KEY_PREFIX":  "acme_live",
		"KEYWORKER_SEALING_KEY": "c2VhbGVk",
		"KEYWORKER_MODE":        "auto",
		"KEYWORKER_HTTP_ADDR":   "127.0.0.1:8080",
	} {
		if got := v.str(env); got != want {
			t.Errorf("%s = %q, want %q (source %s)", env, got, want, v.source[env])
		}
	}
	if v.source["KEYWORKER_SEALING_KEY"] != "file" || v.source["KEYWORKER_MODE"] != "default" {
		t.Errorf("sources: %v", v.source)
	}
}

func TestSettingsRejectBothValueAndFile(t *testing.T) {
	t.Parallel()
	_, err := resolve(t, "run", nil, map[string]string{"KEYWORKER_SEALING_KEY": "x", "KEYWORKER_SEALING_KEY_FILE": "/f"})
	if err == nil || !strings.Contains(err.Error(), "both KEYWORKER_SEALING_KEY and KEYWORKER_SEALING_KEY_FILE") {
		t.Fatalf("got %v", err)
	}
	_, err = resolve(t, "run", nil, map[string]string{"KEYWORKER_JWT_SECRET_FILE": "/missing"})
	if err == nil || !strings.Contains(err.Error(), "KEYWORKER_JWT_SECRET_FILE") {
		t.Fatalf("unreadable file: %v", err)
	}
}

func TestEverySecretSettingReadsFromAFile(t *testing.T) {
	t.Parallel()
	for _, s := range settings {
		if !s.secret {
			continue
		}
		cmd := s.groups[0]
		v, err := resolve(t, cmd, nil, map[string]string{s.env + "_FILE": "/s", "file:/s": "value\r\n"})
		if err != nil {
			t.Fatalf("%s: %v", s.env, err)
		}
		if v.str(s.env) != "value" {
			t.Errorf("%s from file = %q", s.env, v.str(s.env))
		}
	}
}

func TestRunConfigErrorsNameTheSettingAndValue(t *testing.T) {
	t.Parallel()
	base := map[string]string{
		"DATABASE_URL":          "postgres://u:pw@127.0.0.1:1/db",
		"KEYWORKER_SEALING_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
	}
	cases := []struct {
		set  map[string]string
		want string
	}{
		{map[string]string{"KEYWORKER_SEALING_KEY": ""}, "KEYWORKER_SEALING_KEY is not set"},
		{map[string]string{"KEYWORKER_SEALING_KEY": "c2hvcnQ="}, "KEYWORKER_SEALING_KEY: sealing key must be 32 bytes"},
		{map[string]string{"DATABASE_URL": ""}, "DATABASE_URL is required: set it to your database's direct connection string"},
		{map[string]string{"KEYWORKER_MODE": "cdc"}, `KEYWORKER_MODE must be auto, logical or listen, got "cdc"`},
		{map[string]string{"KEYWORKER_KEY_PREFIX": "Acme"}, "KEYWORKER_KEY_PREFIX: "},
		{map[string]string{"KEYWORKER_KEY_TTL": "1 year"}, `KEYWORKER_KEY_TTL="1 year" is not a duration`},
		{map[string]string{"KEYWORKER_INCLUDE_ANONYMOUS": "maybe"}, `KEYWORKER_INCLUDE_ANONYMOUS="maybe" is not a boolean`},
		{map[string]string{"KEYWORKER_USERS_TABLE": "users"}, `users table "users" is invalid`},
		{map[string]string{"KEYWORKER_WEBHOOK_URL": "https://example.com/hook"}, "KEYWORKER_WEBHOOK_SECRET is required"},
		{map[string]string{"KEYWORKER_WEBHOOK_SECRET": "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}, "KEYWORKER_WEBHOOK_URL is required"},
		{map[string]string{"KEYWORKER_WEBHOOK_URL": "http://hooks.example.com/k", "KEYWORKER_WEBHOOK_SECRET": "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}, "KEYWORKER_WEBHOOK_URL is http:// to hooks.example.com, which is not this machine: the notices (key id, user id, pick-up link) would cross the network unencrypted; use https://, or set KEYWORKER_WEBHOOK_ALLOW_HTTP=true to send them in plaintext anyway"},
		{map[string]string{"KEYWORKER_SMTP_URL": "smtp://mail.example.com"}, "KEYWORKER_MAIL_FROM is required"},
		{map[string]string{"KEYWORKER_LOG_LEVEL": "loud"}, `KEYWORKER_LOG_LEVEL="loud"`},
		{map[string]string{"KEYWORKER_KEY_WORKERS": "0"}, `KEYWORKER_KEY_WORKERS="0" is not allowed: use a whole number from 1 to 1000`},
		{map[string]string{"KEYWORKER_NOTICE_WORKERS": "many"}, `KEYWORKER_NOTICE_WORKERS="many" is not allowed`},
		{map[string]string{"KEYWORKER_JOB_TIMEOUT": "2h"}, "KEYWORKER_JOB_TIMEOUT must be between 1s and 1h0m0s, got 2h0m0s"},
		{map[string]string{"KEYWORKER_JOB_TIMEOUT": "5s", "KEYWORKER_WEBHOOK_URL": "https://example.com/hook", "KEYWORKER_WEBHOOK_SECRET": "whsec_MDEyMzQ1Njc4OWFiY2RlZg=="}, "KEYWORKER_JOB_TIMEOUT must be longer than the webhook's timeout (10s), or every slow delivery is cut short, got 5s"},
		{map[string]string{"KEYWORKER_HTTP_ADDR": "0.0.0.0:8080"}, "KEYWORKER_DASHBOARD_PASSWORD"},
		{map[string]string{"KEYWORKER_JWKS_MAX_STALENESS": "soon"}, `KEYWORKER_JWKS_MAX_STALENESS="soon" is not a duration`},
		{map[string]string{"KEYWORKER_JWKS_URL": "https://ref.supabase.co/auth/v1/.well-known/jwks.json", "KEYWORKER_JWKS_MAX_STALENESS": "1m"}, "KEYWORKER_JWKS_MAX_STALENESS must be between the JWKS refresh interval (JWKSRefresh, 10m0s) and 168h0m0s, got 1m0s"},
		{map[string]string{"KEYWORKER_JWKS_URL": "https://keys.example.com/jwks"}, `KEYWORKER_JWT_ISSUER is required: it cannot be derived from KEYWORKER_JWKS_URL "https://keys.example.com/jwks"`},
		{map[string]string{"KEYWORKER_TRUSTED_PROXIES": "10.0.0.0/8, proxy.internal"}, `KEYWORKER_TRUSTED_PROXIES: " proxy.internal" is neither a CIDR nor an address`},
		{map[string]string{"KEYWORKER_REVEAL_PER_USER": "0"}, `KEYWORKER_REVEAL_PER_USER="0" is not allowed: use a whole number from 1 to 1000000`},
		{map[string]string{"KEYWORKER_REVEAL_PER_ADDR": "lots"}, `KEYWORKER_REVEAL_PER_ADDR="lots" is not allowed`},
		{map[string]string{"KEYWORKER_METRICS_ADDR": "9090"}, `KEYWORKER_METRICS_ADDR "9090" is invalid`},
		{map[string]string{"KEYWORKER_PUBLIC_URL": "keys.example.com"}, `KEYWORKER_PUBLIC_URL "keys.example.com" is not a base URL`},
		{map[string]string{"KEYWORKER_HTTP_ADDR": "localhost"}, `KEYWORKER_HTTP_ADDR "localhost" is invalid: want host:port`},
		{map[string]string{"KEYWORKER_USERS_ID_COLUMN": "Id"}, `users id column "Id" is invalid`},
		{map[string]string{"KEYWORKER_JWT_SECRET": "short"}, "KEYWORKER_JWT_SECRET must be at least 32 bytes, got 5"},
		{map[string]string{"KEYWORKER_TLS_CERT_FILE": "/c.pem"}, "set KEYWORKER_TLS_CERT_FILE and KEYWORKER_TLS_KEY_FILE"},
		{map[string]string{"KEYWORKER_DASHBOARD_USER": "admin"}, "dashboard credentials need both KEYWORKER_DASHBOARD_USER and KEYWORKER_DASHBOARD_PASSWORD"},
		{map[string]string{"KEYWORKER_HTTP_ADDR": "0.0.0.0:8080"}, "set KEYWORKER_DASHBOARD_USER and KEYWORKER_DASHBOARD_PASSWORD (or KEYWORKER_DASHBOARD_TOKEN), or listen on 127.0.0.1"},
		{map[string]string{"KEYWORKER_SMTP_URL": "smtp://127.0.0.1:25", "KEYWORKER_MAIL_FROM": "keys@example.com", "KEYWORKER_MAIL_TEXT_TEMPLATE": "/t.txt", "file:/t.txt": "{{.Nope"}, "KEYWORKER_MAIL_TEXT_TEMPLATE: "},
		{map[string]string{"DATABASE_URL": "postgres://u:pw@aws-0-eu-west-1.pooler.supabase.com:6543/postgres"}, "Supabase's transaction pooler"},
		{map[string]string{"DATABASE_URL": "postgres://u:pw@aws-0-eu-west-1.pooler.supabase.com:5432/postgres", "KEYWORKER_MODE": "logical"}, "logical replication does not pass through a pooler"},
		{map[string]string{"DATABASE_URL": "postgres://u:pw@db.example.com:6543/postgres"}, "port 6543 is the transaction pooler's port"},
		{map[string]string{"KEYWORKER_SMTP_URL": "smtp://127.0.0.1:25", "KEYWORKER_MAIL_FROM": "keys@example.com", "KEYWORKER_MAIL_TEXT_TEMPLATE": "/missing.tmpl"}, "KEYWORKER_MAIL_TEXT_TEMPLATE: reading the template"},
		{map[string]string{"KEYWORKER_SMTP_URL": "smtp://127.0.0.1:25", "KEYWORKER_MAIL_FROM": "keys@example.com", "KEYWORKER_MAIL_HTML_TEMPLATE": "/t.html", "file:/t.html": "<p>{{.Secret}}</p>"}, "Secret"},
	}
	for _, c := range cases {
		envv := map[string]string{}
		for k, v := range base {
			envv[k] = v
		}
		for k, v := range c.set {
			envv[k] = v
		}
		_, _, err := invoke(context.Background(), envv, "", "run")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("with %v: got %v, want it to contain %q", c.set, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "pw@") {
			t.Errorf("error shows the database password: %v", err)
		}
	}
}

func TestCommandLineMistakesExitTwo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, _, err := invoke(ctx, nil, "")
	wantUsageError(t, err, "no command given")
	_, stderr, err := invoke(ctx, nil, "", "frobnicate")
	wantUsageError(t, err, `unknown command "frobnicate"`)
	if !strings.Contains(stderr, "commands:") {
		t.Errorf("unknown command does not list the commands: %q", stderr)
	}
	_, _, err = invoke(ctx, nil, "", "migrate", "--no-such-flag")
	wantUsageError(t, err, "no-such-flag")
	if exitCode(err) != 2 {
		t.Errorf("exit code %d, want 2", exitCode(err))
	}
	_, _, err = invoke(ctx, nil, "", "replay", "--since", "yesterday")
	wantUsageError(t, err, `--since="yesterday" is not a time`)
	_, _, err = invoke(ctx, map[string]string{"DATABASE_URL": "postgres://u:pw@db.example.com:6543/postgres"}, "", "migrate")
	wantUsageError(t, err, "direct connection")
}

func TestHelpForEveryCommand(t *testing.T) {
	t.Parallel()
	out, _, err := invoke(context.Background(), nil, "", "help")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range commands {
		if !strings.Contains(out, "  "+c.name+" ") {
			t.Errorf("help does not list %s", c.name)
		}
		// Asked for, the usage goes to standard output (worker run --help | less).
		for _, flag := range []string{"--help", "-h"} {
			stdout, stderr, err := invoke(context.Background(), nil, "", c.name, flag)
			if err != nil {
				t.Errorf("%s %s: %v", c.name, flag, err)
			}
			if !strings.Contains(stdout, "usage: worker "+c.name) || stderr != "" {
				t.Errorf("%s %s printed %q on stdout and %q on stderr, want the usage on stdout alone", c.name, flag, stdout, stderr)
			}
		}
	}
	for _, args := range [][]string{{"keys", "help"}, {"keys", "--help"}, {"keys", "create", "--help"}} {
		stdout, stderr, err := invoke(context.Background(), nil, "", args...)
		if err != nil || !strings.Contains(stdout, "usage: worker keys") || stderr != "" {
			t.Errorf("worker %s: %v, stdout %q, stderr %q; want the usage on stdout alone", strings.Join(args, " "), err, stdout, stderr)
		}
	}
	// Called wrongly, the usage goes with the error to standard error.
	for _, args := range [][]string{{}, {"keys"}, {"nosuchcommand"}} {
		stdout, stderr, err := invoke(context.Background(), nil, "", args...)
		if exitCode(err) != 2 || stdout != "" || !strings.Contains(stderr, "usage: worker") {
			t.Errorf("worker %s: exit %d, stdout %q, stderr %q; want exit 2 and the usage on stderr", strings.Join(args, " "), exitCode(err), stdout, stderr)
		}
	}
	table, _, err := invoke(context.Background(), nil, "", "help", "settings")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		if !strings.Contains(table, "`"+s.env+"`") {
			t.Errorf("settings table lacks %s", s.env)
		}
	}
}

func TestREADMEConfigurationTableIsCurrent(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	printSettingsTable(&b)
	if !strings.Contains(string(readme), b.String()) {
		t.Fatal("README.md's configuration table differs from `worker help settings`: paste the output of `go run ./cmd/worker help settings` into it")
	}
}
