package main

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/keyworker/keyworker/daemon"
	"github.com/keyworker/keyworker/jobs"
	"github.com/keyworker/keyworker/listener"
	kwsql "github.com/keyworker/keyworker/sql"
)

// TestSettingsFieldPathsExist: every field the settings table names is a
// field of the Config it claims, so that a renamed field cannot leave an
// error untranslated (the libraries name the new name, the table the old).
func TestSettingsFieldPathsExist(t *testing.T) {
	t.Parallel()
	others := map[string]reflect.Type{
		"sql":      reflect.TypeFor[kwsql.Config](),
		"listener": reflect.TypeFor[listener.Config](),
		"jobs":     reflect.TypeFor[jobs.Config](),
	}
	paths := daemonConfigPaths()
	seen := map[string]string{}
	for _, s := range settings {
		if s.field == "" {
			if !strings.HasPrefix(s.env, "KEYWORKER_LOG_") {
				t.Errorf("%s has no field: every setting but the logger's fills a daemon.Config field", s.env)
			}
			continue
		}
		if !slices.Contains(paths, s.field) {
			t.Errorf("%s: field %q is not a field path of daemon.Config", s.env, s.field)
		}
		if other, ok := seen[s.field]; ok {
			t.Errorf("%s and %s both claim field %q", other, s.env, s.field)
		}
		seen[s.field] = s.env
		for _, a := range s.also {
			pkg, field, _ := strings.Cut(a, ".")
			if pkg == "daemon" {
				if !slices.Contains(paths, field) {
					t.Errorf("%s: also %q is not a field path of daemon.Config", s.env, a)
				}
				continue
			}
			typ, ok := others[pkg]
			if !ok {
				t.Errorf("%s: also %q names a package whose Config this test does not know", s.env, a)
				continue
			}
			if _, ok := typ.FieldByName(field); !ok {
				t.Errorf("%s: also %q is not a field of %s", s.env, a, typ)
			}
		}
	}
	for last := range plainWords {
		if !slices.ContainsFunc(settings, func(s setting) bool { return strings.HasSuffix(s.field, "."+last) }) {
			t.Errorf("plainWords lists %q, which is no setting's field", last)
		}
	}
	// sql/errors.go names these for `worker migrate`.
	for _, f := range []string{"UsersTable", "UsersIDColumn"} {
		if got := fieldNames.translate(f); !strings.HasPrefix(got, "KEYWORKER_USERS_") {
			t.Errorf("sql.Config's %s translates to %q", f, got)
		}
	}
	if _, ok := reflect.TypeFor[daemon.Config]().FieldByName("Tokens"); !ok {
		t.Fatal("daemon.Config has no Tokens: the scopes below are stale")
	}
}

// TestTranslateFieldNames: field names become env names, resolved in the
// scope a parent's prefix gives; other words are left alone.
func TestTranslateFieldNames(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{"JWTSecret must be at least 32 bytes, got 5", "KEYWORKER_JWT_SECRET must be at least 32 bytes, got 5"},
		{"Tokens: validating access token config: Issuer is required", "validating access token config: KEYWORKER_JWT_ISSUER is required"},
		{"set Tokens.JWTSecret or Tokens.JWKSURL", "set KEYWORKER_JWT_SECRET or KEYWORKER_JWKS_URL"},
		// A name two components have resolves in its scope, and only there.
		{"Webhook: configuring webhook: URL is required", "configuring webhook: KEYWORKER_WEBHOOK_URL is required"},
		{"SMTP: configuring email: URL is required", "configuring email: KEYWORKER_SMTP_URL is required"},
		{"URL is required", "URL is required"},
		{"HTTP: MetricsAddr is the same as Addr, 127.0.0.1:1", "KEYWORKER_METRICS_ADDR is the same as KEYWORKER_HTTP_ADDR, 127.0.0.1:1"},
		{"listening on 127.0.0.1:1 (Addr): in use", "listening on 127.0.0.1:1 (KEYWORKER_HTTP_ADDR): in use"},
		// A scoped field without a setting stays, never becoming a
		// top-level setting of the same name.
		{"Table: Schema is invalid", "Schema is invalid"},
		{"Schema is invalid", "KEYWORKER_SCHEMA is invalid"},
		{"Tokens: JWKSMaxStaleness must be between the JWKS refresh interval (JWKSRefresh, 10m0s) and 1h", "KEYWORKER_JWKS_MAX_STALENESS must be between the JWKS refresh interval (JWKSRefresh, 10m0s) and 1h"},
		{"HTTP: PublicURL is not a base URL", "KEYWORKER_PUBLIC_URL is not a base URL"},
		{"users table has no column \"x\": set IDColumn to the right column", "users table has no column \"x\": set KEYWORKER_USERS_ID_COLUMN to the right column"},
		{"set Table to your schema-qualified users table", "set KEYWORKER_USERS_TABLE to your schema-qualified users table"},
		{"or use listen mode (Mode=listen)", "or use listen mode (KEYWORKER_MODE=listen)"},
		{"set ConnString to the database itself", "set DATABASE_URL to the database itself"},
		{"give another slot name (SlotName)", "give another slot name (KEYWORKER_SLOT)"},
		{"the users table does not exist: set UsersTable", "the users table does not exist: set KEYWORKER_USERS_TABLE"},
		{"CompletedJobRetention must be -1", "KEYWORKER_JOB_RETENTION must be -1"},
		{"refusing to start with this SealingKey: mismatch (PreviousSealingKey), then run `worker keys reseal`", "refusing to start with this KEYWORKER_SEALING_KEY: mismatch (KEYWORKER_SEALING_KEY_PREVIOUS), then run `worker keys reseal`"},
		{"run `worker migrate` first (with the same Schema)", "run `worker migrate` first (with the same KEYWORKER_SCHEMA)"},
		{"listen failed\n\n(Mode=auto tried logical mode first: x)", "listen failed\n\n(KEYWORKER_MODE=auto tried logical mode first: x)"},
		// Plain words stay outside a scope; env names, paths, URLs and
		// type names are never touched.
		{"From is required", "From is required"},
		{"SMTP: From is required", "KEYWORKER_MAIL_FROM is required"},
		{"KEYWORKER_MODE=listen and $KEYWORKER_SCHEMA", "KEYWORKER_MODE=listen and $KEYWORKER_SCHEMA"},
		{"https://h/Mode/x.Schema notify.Notice KeyTTLs", "https://h/Mode/x.Schema notify.Notice KeyTTLs"},
		{"HTTP server: failed", "HTTP server: failed"},
		{"", ""},
	} {
		if got := fieldNames.translate(c.in); got != c.want {
			t.Errorf("translate(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
	}
}

// TestTranslateErrorKeepsItsChain: the translated error still unwraps to
// the original, so errors.Is and usageError's exit code hold.
func TestTranslateErrorKeepsItsChain(t *testing.T) {
	t.Parallel()
	sentinel := errors.New("KeyTTL must not be negative, got -1h")
	err := translateError(&usageError{sentinel.Error()})
	if err.Error() != "KEYWORKER_KEY_TTL must not be negative, got -1h" || exitCode(err) != 2 {
		t.Errorf("got %q, exit %d", err, exitCode(err))
	}
	wrapped := translateError(errors.Join(sentinel))
	if !errors.Is(wrapped, sentinel) {
		t.Errorf("translated error lost its chain: %v", wrapped)
	}
	if plain := errors.New("nothing to translate"); translateError(plain) != plain {
		t.Error("an error without field names was wrapped")
	}
}

// TestLoggerTranslatesFieldNames: what components log through the logger
// cmd/worker builds names env vars, in both formats; other attributes are
// logged as they came.
func TestLoggerTranslatesFieldNames(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		v := &values{v: map[string]string{"KEYWORKER_LOG_LEVEL": "info", "KEYWORKER_LOG_FORMAT": format}}
		logger, err := newLogger(env{stderr: &buf}, v)
		if err != nil {
			t.Fatal(err)
		}
		logger.With("component", "daemon").WithGroup("g").Warn("key pick-up is disabled: set Tokens.JWTSecret or Tokens.JWKSURL",
			"error", errors.New("HTTP: Addr is taken"), "detail", "Mode=listen", "host", "Mode")
		out := buf.String()
		for _, want := range []string{"set KEYWORKER_JWT_SECRET or KEYWORKER_JWKS_URL", "KEYWORKER_HTTP_ADDR is taken", "KEYWORKER_MODE=listen", "Mode"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: log %q lacks %q", format, out, want)
			}
		}
		if strings.Contains(out, "KEYWORKER_MODE\"") || strings.Contains(out, "host=KEYWORKER_MODE") {
			t.Errorf("%s: an attribute outside the translated keys was translated: %q", format, out)
		}
	}
}
