package main

import (
	"flag"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keyworker/keyworker/daemon"
	"github.com/keyworker/keyworker/jobs"
	"github.com/keyworker/keyworker/server"
)

// setting is one configuration value, read from a flag, an environment
// variable, or (for secrets) a file named by <ENV>_FILE, in that order of
// precedence, else its default. The table below is the one list of them: the
// README's configuration table is printed from it (`worker help settings`).
type setting struct {
	env string // DATABASE_URL, KEYWORKER_MODE, ...
	// field is the daemon.Config field the setting fills, as a path
	// ("KeyTTL", "Tokens.JWTSecret", "HTTP.Addr"), or "" when none does
	// (the log settings). Libraries name fields in their errors and logs;
	// names (names.go) turns them into env for the CLI user.
	field string
	// also lists other fields the setting fills: another component's
	// Config field that names it differently, as package.Field
	// ("sql.UsersTable"), or another daemon.Config path it is copied to
	// ("daemon.HTTP.PublicURL").
	also   []string
	flag   string // database-url, mode, ...
	def    string
	help   string
	secret bool     // may come from <env>_FILE; never printed
	groups []string // subcommands that take it ("*" for all)
}

var settings = []setting{
	{env: "DATABASE_URL", field: "DatabaseURL", also: []string{"listener.ConnString"}, flag: "database-url", help: "PostgreSQL connection string: the direct connection, or (listen mode) Supabase's session pooler on port 5432; never the transaction pooler on 6543", secret: true, groups: []string{"run", "migrate", "replay", "status", "keys", "trace"}},
	{env: "KEYWORKER_MODE", field: "Mode", flag: "mode", def: "auto", help: "how signups are read: logical (replication slot), listen (trigger + outbox table, woken by NOTIFY), or auto: logical when a publication exists or this role may make one, listen otherwise (hosted Supabase); the choice and why are logged, shown by `worker status` and on /metrics", groups: []string{"run", "status", "demo"}},
	{env: "KEYWORKER_SCHEMA", field: "Schema", flag: "schema", def: "keyworker", help: "schema holding keyworker's tables, functions and River's tables; end users are served from <schema>_api (at most 59 characters, not ending in _api)", groups: []string{"run", "migrate", "replay", "status", "keys", "trace"}},
	{env: "KEYWORKER_USERS_TABLE", field: "Table", also: []string{"sql.UsersTable"}, flag: "users-table", def: "auth.users", help: "schema-qualified users table", groups: []string{"run", "migrate", "replay", "status", "keys", "trace"}},
	{env: "KEYWORKER_USERS_ID_COLUMN", field: "Table.IDColumn", also: []string{"sql.UsersIDColumn"}, flag: "users-id-column", def: "id", help: "users table's uuid primary key", groups: []string{"run", "migrate", "replay", "keys", "trace"}},
	{env: "KEYWORKER_USERS_CREATED_AT_COLUMN", field: "Table.CreatedAtColumn", flag: "users-created-at-column", def: "created_at", help: `users table's signup time column ("-" if none)`, groups: []string{"run", "replay", "trace"}},
	{env: "KEYWORKER_USERS_ANONYMOUS_COLUMN", field: "Table.AnonymousColumn", flag: "users-anonymous-column", def: "is_anonymous", help: `users table's anonymous flag ("-" if none)`, groups: []string{"run", "replay", "trace"}},
	{env: "KEYWORKER_USERS_DELETED_AT_COLUMN", field: "Table.DeletedAtColumn", flag: "users-deleted-at-column", def: "deleted_at", help: `users table's soft-delete column ("-" if none)`, groups: []string{"run", "replay", "trace"}},
	{env: "KEYWORKER_USERS_EMAIL_COLUMN", field: "EmailColumn", flag: "users-email-column", def: "email", help: "users table's email column, read when an email notice is sent", groups: []string{"run"}},
	{env: "KEYWORKER_INCLUDE_ANONYMOUS", field: "IncludeAnonymous", flag: "include-anonymous", def: "false", help: "give anonymous users keys too", groups: []string{"run", "replay"}},
	{env: "KEYWORKER_SLOT", field: "SlotName", flag: "slot", def: "keyworker", help: "logical replication slot name (permanent)", groups: []string{"run", "status"}},
	{env: "KEYWORKER_PUBLICATION", field: "PublicationName", flag: "publication", def: "keyworker_signups", help: "publication on the users table", groups: []string{"run", "status"}},
	{env: "KEYWORKER_KEY_PREFIX", field: "KeyPrefix", flag: "key-prefix", def: "sk", help: `key prefix: lowercase letters, digits and "_" (e.g. acme_live)`, groups: []string{"run", "keys"}},
	{env: "KEYWORKER_KEY_TTL", field: "KeyTTL", flag: "key-ttl", def: "0", help: "lifetime of signup keys (e.g. 8760h); 0 means they do not expire", groups: []string{"run"}},
	{env: "KEYWORKER_REVEAL_TTL", field: "RevealTTL", flag: "reveal-ttl", def: "168h", help: "how long a new key waits for its one pick-up", groups: []string{"run", "keys"}},
	{env: "KEYWORKER_SEALING_KEY", field: "SealingKey", flag: "sealing-key", help: "32 bytes, base64 (openssl rand -base64 32 > a file, once): seals secrets waiting for pick-up; keep it out of the database, the same on every replica (its fingerprint is recorded and another key is refused)", secret: true, groups: []string{"run", "keys"}},
	{env: "KEYWORKER_SEALING_KEY_PREVIOUS", field: "PreviousSealingKey", flag: "sealing-key-previous", help: "while rotating the sealing key: the key KEYWORKER_SEALING_KEY replaces; it still opens what it sealed until `worker keys reseal`", secret: true, groups: []string{"run", "keys"}},
	{env: "KEYWORKER_JWT_SECRET", field: "Tokens.JWTSecret", flag: "jwt-secret", help: "Supabase JWT secret (HS256) that signs users' access tokens, for key pick-up", secret: true, groups: []string{"run"}},
	{env: "KEYWORKER_JWKS_URL", field: "Tokens.JWKSURL", flag: "jwks-url", help: "Supabase JWKS URL (asymmetric signing keys), e.g. https://<ref>.supabase.co/auth/v1/.well-known/jwks.json", groups: []string{"run"}},
	{env: "KEYWORKER_JWT_AUDIENCE", field: "Tokens.Audience", flag: "jwt-audience", def: "authenticated", help: "required aud claim of access tokens", groups: []string{"run"}},
	{env: "KEYWORKER_JWT_ISSUER", field: "Tokens.Issuer", flag: "jwt-issuer", help: "required iss claim of access tokens (default: the JWKS URL without /.well-known/jwks.json, e.g. https://<ref>.supabase.co/auth/v1; not checked with only a JWT secret)", groups: []string{"run"}},
	{env: "KEYWORKER_JWKS_MAX_STALENESS", field: "Tokens.JWKSMaxStaleness", flag: "jwks-max-staleness", def: "1h", help: "how long the last fetched signing keys are trusted while refreshing them fails; then reveal answers 503 for RS256/ES256 tokens", groups: []string{"run"}},
	{env: "KEYWORKER_HTTP_ADDR", field: "HTTP.Addr", flag: "http-addr", def: "127.0.0.1:8080", help: "listen address for reveal, dashboard, metrics and health; on loopback, only requests for localhost, 127.0.0.1, [::1] or the public URL's host are served (DNS rebinding)", groups: []string{"run", "trace"}},
	{env: "KEYWORKER_PUBLIC_URL", field: "PublicURL", also: []string{"daemon.HTTP.PublicURL"}, flag: "public-url", help: "public base URL of this server, used for pick-up links in notices (default http://<http-addr>); its host and origin are also accepted by the Host and cross-origin checks", groups: []string{"run", "trace"}},
	{env: "KEYWORKER_METRICS_ADDR", field: "HTTP.MetricsAddr", flag: "metrics-addr", help: "serve /metrics (and /healthz) on this address of its own, without credentials, e.g. 10.0.0.5:9090 or 127.0.0.1:9090; empty: on KEYWORKER_HTTP_ADDR behind the dashboard's credentials", groups: []string{"run"}},
	{env: "KEYWORKER_TRUSTED_PROXIES", field: "HTTP.TrustedProxies", flag: "trusted-proxies", help: "comma-separated CIDRs or addresses of the proxies in front of the server (e.g. 10.0.0.0/8,fd00::/8); X-Forwarded-For is honoured only from them, taking the right-most address that is not one of them", groups: []string{"run"}},
	{env: "KEYWORKER_REVEAL_PER_USER", field: "HTTP.RevealPerUser", flag: "reveal-per-user", def: strconv.Itoa(server.DefaultRevealPerUser), help: "key pick-up attempts a user may make per minute", groups: []string{"run"}},
	{env: "KEYWORKER_REVEAL_PER_ADDR", field: "HTTP.RevealPerAddr", flag: "reveal-per-addr", def: strconv.Itoa(server.DefaultRevealPerAddr), help: "key pick-up requests one client address (an IPv6 /64) may make per minute, signed in or not", groups: []string{"run"}},
	{env: "KEYWORKER_MAX_KEYS_PER_USER", field: "MaxKeysPerUser", flag: "max-keys-per-user", def: strconv.Itoa(daemon.DefaultMaxKeysPerUser), help: "live keys (not revoked, not expired; disabled ones count) a user may hold through POST /v1/keys; a rotation at the limit may add one for its overlap; 0 means no limit", groups: []string{"run"}},
	{env: "KEYWORKER_KEYS_PER_USER", field: "HTTP.KeysPerUser", flag: "keys-per-user", def: strconv.Itoa(server.DefaultKeysPerUser), help: "keys API requests (/v1/keys: list, create, rotate, disable, enable, revoke) a user may make per minute", groups: []string{"run"}},
	{env: "KEYWORKER_KEYS_PER_ADDR", field: "HTTP.KeysPerAddr", flag: "keys-per-addr", def: strconv.Itoa(server.DefaultKeysPerAddr), help: "keys API requests one client address (an IPv6 /64) may make per minute, signed in or not", groups: []string{"run"}},
	{env: "KEYWORKER_CORS_ORIGINS", field: "HTTP.CORSOrigins", flag: "cors-origins", help: "comma-separated origins of browser apps that may call /v1/keys and reveal, e.g. https://app.example.com (exact scheme://host[:port]; * is refused; tokens travel in Authorization, never cookies; verify never answers CORS)", groups: []string{"run"}},
	{env: "KEYWORKER_VERIFY_TOKENS", field: "HTTP.VerifyTokens", flag: "verify-tokens", help: "comma-separated service tokens (at least 32 characters each, e.g. openssl rand -hex 32) your backends send as Authorization: Bearer to POST /v1/keys/verify; without one, verify answers 503; two during a rotation", secret: true, groups: []string{"run"}},
	{env: "KEYWORKER_TLS_CERT_FILE", field: "HTTP.TLSCertFile", flag: "tls-cert-file", help: "serve HTTPS with this certificate (with KEYWORKER_TLS_KEY_FILE)", groups: []string{"run"}},
	{env: "KEYWORKER_TLS_KEY_FILE", field: "HTTP.TLSKeyFile", flag: "tls-key-file", help: "private key for KEYWORKER_TLS_CERT_FILE", groups: []string{"run"}},
	{env: "KEYWORKER_DASHBOARD_USER", field: "HTTP.DashboardUser", flag: "dashboard-user", help: "River UI basic-auth user", groups: []string{"run"}},
	{env: "KEYWORKER_DASHBOARD_PASSWORD", field: "HTTP.DashboardPassword", flag: "dashboard-password", help: "River UI basic-auth password", secret: true, groups: []string{"run"}},
	{env: "KEYWORKER_DASHBOARD_TOKEN", field: "HTTP.DashboardToken", flag: "dashboard-token", help: "River UI bearer token (alternative to user/password)", secret: true, groups: []string{"run"}},
	{env: "KEYWORKER_WEBHOOK_URL", field: "Webhook.URL", flag: "webhook-url", help: "notice webhook (Standard Webhooks), called once per key and event: api_key.created, .rotated, .revoked, .disabled, .expiring, .expired", groups: []string{"run"}},
	{env: "KEYWORKER_WEBHOOK_ALLOW_HTTP", field: "Webhook.AllowHTTP", flag: "webhook-allow-http", def: "false", help: "allow an http:// KEYWORKER_WEBHOOK_URL to a host other than this machine (notices cross the network unencrypted)", groups: []string{"run"}},
	{env: "KEYWORKER_WEBHOOK_SECRET", field: "Webhook.Secret", flag: "webhook-secret", help: "whsec_<base64> secret that signs webhook calls", secret: true, groups: []string{"run"}},
	{env: "KEYWORKER_SMTP_URL", field: "SMTP.URL", flag: "smtp-url", help: "notice email server, smtp://user:pass@host:587 (STARTTLS) or smtps://...:465", secret: true, groups: []string{"run"}},
	{env: "KEYWORKER_MAIL_FROM", field: "SMTP.From", flag: "mail-from", help: "From address of notice emails", groups: []string{"run"}},
	{env: "KEYWORKER_MAIL_TEXT_TEMPLATE", field: "SMTP.TextTemplate", flag: "mail-text-template", help: "file with a Go text/template for the notice email's plain-text body (fields: .Type .KeyID .Prefix .Last4 .PickupURL .RevealExpiresAt ...; one template serves every event type: branch on .Type)", groups: []string{"run"}},
	{env: "KEYWORKER_MAIL_HTML_TEMPLATE", field: "SMTP.HTMLTemplate", flag: "mail-html-template", help: "file with a Go html/template for the notice email's HTML body", groups: []string{"run"}},
	{env: "KEYWORKER_PICKUP_URL", field: "PickupURL", flag: "pickup-url", help: "your app's page where a user picks a new signup key up, with {key_id} where the key id goes, e.g. https://app.example.com/keys/{key_id}/pickup; notices link it (without it they say to sign in to the app: the reveal endpoint is POST-only, for your app to call)", groups: []string{"run"}},
	{env: "KEYWORKER_EXPIRING_NOTICE_BEFORE", field: "ExpiringNoticeBefore", flag: "expiring-notice-before", def: "72h", help: "how long before a key expires its api_key.expiring notice is sent (to keys that live longer than this), between 1m and 8760h (0: the default); off: no expiring notices", groups: []string{"run"}},
	{env: "KEYWORKER_NOTIFY_LOG", field: "NotifyLog", flag: "notify-log", def: "auto", help: "log each notice (true, false, or auto: when no webhook or SMTP is set)", groups: []string{"run"}},
	{env: "KEYWORKER_RECONCILE_INTERVAL", field: "ReconcileInterval", flag: "reconcile-interval", def: "5m", help: "how often the leader looks for eligible users without a key", groups: []string{"run"}},
	{env: "KEYWORKER_JOB_RETENTION", field: "JobRetention", also: []string{"jobs.CompletedJobRetention"}, flag: "job-retention", def: "168h", help: "how long completed jobs stay visible in the dashboard", groups: []string{"run"}},
	{env: "KEYWORKER_KEY_WORKERS", field: "KeyWorkers", flag: "key-workers", def: strconv.Itoa(jobs.DefaultKeyWorkers), help: "create-keys jobs (batches of up to 1000 users) run at once (1-1000); the connection pool grows to fit unless DATABASE_URL sets pool_max_conns", groups: []string{"run"}},
	{env: "KEYWORKER_NOTICE_WORKERS", field: "NoticeWorkers", flag: "notice-workers", def: strconv.Itoa(jobs.DefaultNoticeWorkers), help: "notice jobs (batches of keys) run at once (1-1000)", groups: []string{"run"}},
	{env: "KEYWORKER_NOTICE_CONCURRENCY", field: "NoticeConcurrency", flag: "notice-concurrency", def: strconv.Itoa(jobs.DefaultNoticeConcurrency), help: "notices one notice job sends at once, each key to each sink one send (1-1000)", groups: []string{"run"}},
	{env: "KEYWORKER_JOB_TIMEOUT", field: "JobTimeout", flag: "job-timeout", def: "1m", help: "longest one job attempt may run; a crashed worker's jobs run again this plus 15s later", groups: []string{"run"}},
	{env: "KEYWORKER_SHUTDOWN_TIMEOUT", field: "ShutdownTimeout", flag: "shutdown-timeout", def: "30s", help: "how long running jobs may finish on SIGTERM", groups: []string{"run"}},
	{env: "KEYWORKER_LOG_LEVEL", flag: "log-level", def: "info", help: "debug, info, warn or error", groups: []string{"*"}},
	{env: "KEYWORKER_LOG_FORMAT", flag: "log-format", def: "text", help: "text or json", groups: []string{"*"}},
}

// values holds the resolved settings of one command.
type values struct {
	v      map[string]string
	source map[string]string // "flag", "env", "file", "default"
	args   []string          // positional arguments
}

func (s setting) takes(cmd string) bool {
	for _, g := range s.groups {
		if g == "*" || g == cmd {
			return true
		}
	}
	return false
}

// parseSettings registers the command's settings on fs, parses args, and
// resolves every setting. getenv and readFile are injected for tests.
func parseSettings(fs *flag.FlagSet, cmd string, stopAtFirstArg bool, args []string, getenv func(string) string, readFile func(string) ([]byte, error)) (*values, error) {
	flagVals := map[string]*string{}
	for _, s := range settings {
		if !s.takes(cmd) {
			continue
		}
		usage := s.help + " [$" + s.env + "]"
		if s.secret {
			usage += " (or $" + s.env + "_FILE)"
		}
		// No default on the flag itself: an unset flag falls through to the
		// environment, then the file, then the default.
		flagVals[s.env] = fs.String(s.flag, "", usage)
	}
	// Flags may come after positional arguments (worker keys revoke ID --at
	// ...), unless stopAtFirstArg: the keys command's first argument is an
	// action with flags of its own.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 || stopAtFirstArg {
			positional = append(positional, args...)
			break
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	out := &values{v: map[string]string{}, source: map[string]string{}, args: positional}
	for _, s := range settings {
		if !s.takes(cmd) {
			continue
		}
		if set[s.flag] {
			out.v[s.env], out.source[s.env] = *flagVals[s.env], "flag"
			continue
		}
		env, fileName := getenv(s.env), ""
		if s.secret {
			fileName = getenv(s.env + "_FILE")
		}
		if env != "" && fileName != "" {
			return nil, fmt.Errorf("both %s and %s_FILE are set: keep one", s.env, s.env)
		}
		switch {
		case env != "":
			out.v[s.env], out.source[s.env] = env, "env"
		case fileName != "":
			b, err := readFile(fileName)
			if err != nil {
				return nil, fmt.Errorf("reading %s_FILE: %w", s.env, err)
			}
			out.v[s.env], out.source[s.env] = strings.TrimRight(string(b), "\r\n"), "file"
		default:
			out.v[s.env], out.source[s.env] = s.def, "default"
		}
	}
	return out, nil
}

func (v *values) str(env string) string { return v.v[env] }

func (v *values) duration(env string) (time.Duration, error) {
	raw := v.v[env]
	if raw == "0" || raw == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(raw)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s=%q is not a duration: use Go syntax like 30s, 5m or 168h", env, raw)
	}
	return d, nil
}

func (v *values) integer(env string, lo, hi int) (int, error) {
	raw := v.v[env]
	n, err := strconv.Atoi(raw)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s=%q is not allowed: use a whole number from %d to %d", env, raw, lo, hi)
	}
	return n, nil
}

func (v *values) boolean(env string) (bool, error) {
	raw := v.v[env]
	if raw == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(raw)
	if err != nil {
		return false, fmt.Errorf("%s=%q is not a boolean: use true or false", env, raw)
	}
	return b, nil
}

func (v *values) oneOf(env string, allowed ...string) (string, error) {
	raw := v.v[env]
	for _, a := range allowed {
		if raw == a {
			return raw, nil
		}
	}
	return "", fmt.Errorf("%s=%q is not allowed: use one of %s", env, raw, strings.Join(allowed, ", "))
}

func (v *values) require(env, why string) (string, error) {
	if v.v[env] == "" {
		return "", fmt.Errorf("%s is not set: %s", env, why)
	}
	return v.v[env], nil
}

// flagSecretWarnings returns one warning for each secret given as a flag,
// which every user of the machine can read in `ps` and /proc/<pid>/cmdline.
// A connection string counts only when it carries a password.
func (v *values) flagSecretWarnings() []string {
	var out []string
	for _, s := range settings {
		if !s.secret || v.source[s.env] != "flag" || v.v[s.env] == "" {
			continue
		}
		if (s.env == "DATABASE_URL" || s.env == "KEYWORKER_SMTP_URL") && !hasPassword(v.v[s.env]) {
			continue
		}
		out = append(out, fmt.Sprintf("--%s puts a secret on the command line, where other users of this machine can read it (ps, /proc/<pid>/cmdline): set %s, or %s_FILE to a file only the worker can read, instead", s.flag, s.env, s.env))
	}
	return out
}

// hasPassword reports whether a connection string (URL or key=value form)
// carries a password.
func hasPassword(conn string) bool {
	if u, err := url.Parse(conn); err == nil && u.Scheme != "" && u.Host != "" {
		if _, ok := u.User.Password(); ok {
			return true
		}
		return u.Query().Has("password")
	}
	return passwordKV.MatchString(conn)
}

var passwordKV = regexp.MustCompile(`(^|\s)password\s*=`)

// printSettingsTable writes the Markdown table of every setting.
func printSettingsTable(w io.Writer) {
	fmt.Fprintln(w, "| environment | flag | default | meaning |")
	fmt.Fprintln(w, "| --- | --- | --- | --- |")
	for _, s := range settings {
		def := s.def
		if def == "" {
			def = " "
		} else {
			def = "`" + def + "`"
		}
		env := "`" + s.env + "`"
		if s.secret {
			env += " (or `_FILE`)"
		}
		fmt.Fprintf(w, "| %s | `--%s` | %s | %s |\n", env, s.flag, def, strings.ReplaceAll(s.help, "|", `\|`))
	}
}

// printSettingsFor lists the command's settings for --help.
func printSettingsFor(w io.Writer, cmd string) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	names := []setting{}
	for _, s := range settings {
		if s.takes(cmd) {
			names = append(names, s)
		}
	}
	for _, s := range names {
		def := ""
		if s.def != "" {
			def = " (default " + s.def + ")"
		}
		fmt.Fprintf(tw, "  --%s\t$%s\t%s%s\n", s.flag, s.env, s.help, def)
	}
	_ = tw.Flush()
}
