package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"github.com/keyworker/keyworker/daemon"
	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/notify"
	"github.com/keyworker/keyworker/server"
	"github.com/keyworker/keyworker/users"
)

// tableFrom reads the users-table settings.
func tableFrom(v *values) (users.Table, error) {
	t, err := users.ParseTable(v.str("KEYWORKER_USERS_TABLE"))
	if err != nil {
		return users.Table{}, err
	}
	t.IDColumn = v.str("KEYWORKER_USERS_ID_COLUMN")
	t.CreatedAtColumn = v.str("KEYWORKER_USERS_CREATED_AT_COLUMN")
	t.AnonymousColumn = v.str("KEYWORKER_USERS_ANONYMOUS_COLUMN")
	t.DeletedAtColumn = v.str("KEYWORKER_USERS_DELETED_AT_COLUMN")
	t = t.WithDefaults()
	return t, t.Validate()
}

// daemonConfig turns the resolved settings into a daemon.Config. It only
// parses (durations, numbers, the sealing keys, template files), with errors
// that name the setting; the rules are the components', checked by
// daemon.New, whose errors name Config fields that run translates (names.go).
func daemonConfig(v *values, logger *slog.Logger, readFile func(string) ([]byte, error)) (daemon.Config, error) {
	var cfg daemon.Config
	var err error
	cfg.Logger = logger
	cfg.DatabaseURL = v.str("DATABASE_URL")
	cfg.Mode = v.str("KEYWORKER_MODE")
	cfg.Schema = v.str("KEYWORKER_SCHEMA")
	if cfg.Table, err = tableFrom(v); err != nil {
		return cfg, err
	}
	if cfg.IncludeAnonymous, err = v.boolean("KEYWORKER_INCLUDE_ANONYMOUS"); err != nil {
		return cfg, err
	}
	cfg.SlotName = v.str("KEYWORKER_SLOT")
	cfg.PublicationName = v.str("KEYWORKER_PUBLICATION")
	cfg.KeyPrefix = v.str("KEYWORKER_KEY_PREFIX")
	if cfg.KeyTTL, err = v.duration("KEYWORKER_KEY_TTL"); err != nil {
		return cfg, err
	}
	if cfg.RevealTTL, err = v.duration("KEYWORKER_REVEAL_TTL"); err != nil {
		return cfg, err
	}
	sealing, err := v.require("KEYWORKER_SEALING_KEY", "it seals new keys until their owner picks them up; make one once with `(umask 077; openssl rand -base64 32 > /etc/keyworker/sealing_key)` and set KEYWORKER_SEALING_KEY_FILE=/etc/keyworker/sealing_key (the same file on every replica)")
	if err != nil {
		return cfg, err
	}
	if cfg.SealingKey, err = keys.ParseSealingKey(sealing); err != nil {
		return cfg, fmt.Errorf("KEYWORKER_SEALING_KEY: %w", err)
	}
	if prev := v.str("KEYWORKER_SEALING_KEY_PREVIOUS"); prev != "" {
		if cfg.PreviousSealingKey, err = keys.ParseSealingKey(prev); err != nil {
			return cfg, fmt.Errorf("KEYWORKER_SEALING_KEY_PREVIOUS: %w", err)
		}
	}
	if s := v.str("KEYWORKER_JWT_SECRET"); s != "" {
		cfg.Tokens.JWTSecret = []byte(s)
	}
	cfg.Tokens.JWKSURL = v.str("KEYWORKER_JWKS_URL")
	cfg.Tokens.Audience = v.str("KEYWORKER_JWT_AUDIENCE")
	cfg.Tokens.Issuer = v.str("KEYWORKER_JWT_ISSUER")
	if cfg.Tokens.JWKSMaxStaleness, err = v.duration("KEYWORKER_JWKS_MAX_STALENESS"); err != nil {
		return cfg, err
	}

	cfg.HTTP = server.Config{
		Addr:              v.str("KEYWORKER_HTTP_ADDR"),
		TLSCertFile:       v.str("KEYWORKER_TLS_CERT_FILE"),
		TLSKeyFile:        v.str("KEYWORKER_TLS_KEY_FILE"),
		DashboardUser:     v.str("KEYWORKER_DASHBOARD_USER"),
		DashboardPassword: v.str("KEYWORKER_DASHBOARD_PASSWORD"),
		DashboardToken:    v.str("KEYWORKER_DASHBOARD_TOKEN"),
		MetricsAddr:       v.str("KEYWORKER_METRICS_ADDR"),
	}
	if raw := v.str("KEYWORKER_TRUSTED_PROXIES"); raw != "" {
		cfg.HTTP.TrustedProxies = strings.Split(raw, ",")
	}
	if cfg.HTTP.RevealPerUser, err = v.integer("KEYWORKER_REVEAL_PER_USER", 1, server.MaxRateLimit); err != nil {
		return cfg, err
	}
	if cfg.HTTP.RevealPerAddr, err = v.integer("KEYWORKER_REVEAL_PER_ADDR", 1, server.MaxRateLimit); err != nil {
		return cfg, err
	}
	cfg.PublicURL = v.str("KEYWORKER_PUBLIC_URL")
	if cfg.HTTP.KeysPerUser, err = v.integer("KEYWORKER_KEYS_PER_USER", 1, server.MaxRateLimit); err != nil {
		return cfg, err
	}
	if cfg.HTTP.KeysPerAddr, err = v.integer("KEYWORKER_KEYS_PER_ADDR", 1, server.MaxRateLimit); err != nil {
		return cfg, err
	}
	cfg.HTTP.CORSOrigins = commaList(v.str("KEYWORKER_CORS_ORIGINS"))
	cfg.HTTP.VerifyTokens = commaList(v.str("KEYWORKER_VERIFY_TOKENS"))
	if cfg.MaxKeysPerUser, err = v.integer("KEYWORKER_MAX_KEYS_PER_USER", 0, daemon.MaxMaxKeysPerUser); err != nil {
		return cfg, err
	}
	if cfg.MaxKeysPerUser == 0 {
		cfg.MaxKeysPerUser = -1 // no limit
	}

	cfg.Webhook = notify.WebhookConfig{URL: v.str("KEYWORKER_WEBHOOK_URL"), Secret: v.str("KEYWORKER_WEBHOOK_SECRET")}
	if cfg.Webhook.AllowHTTP, err = v.boolean("KEYWORKER_WEBHOOK_ALLOW_HTTP"); err != nil {
		return cfg, err
	}
	cfg.SMTP = notify.SMTPConfig{URL: v.str("KEYWORKER_SMTP_URL"), From: v.str("KEYWORKER_MAIL_FROM")}
	for _, t := range []struct {
		env string
		dst *string
	}{{"KEYWORKER_MAIL_TEXT_TEMPLATE", &cfg.SMTP.TextTemplate}, {"KEYWORKER_MAIL_HTML_TEMPLATE", &cfg.SMTP.HTMLTemplate}} {
		if path := v.str(t.env); path != "" {
			b, err := readFile(path)
			if err != nil {
				return cfg, fmt.Errorf("%s: reading the template: %w", t.env, err)
			}
			*t.dst = string(b)
		}
	}
	cfg.PickupURL = v.str("KEYWORKER_PICKUP_URL")
	if v.str("KEYWORKER_EXPIRING_NOTICE_BEFORE") == "off" {
		cfg.ExpiringNoticeBefore = -1 // jobs: no expiring notices
	} else if cfg.ExpiringNoticeBefore, err = v.duration("KEYWORKER_EXPIRING_NOTICE_BEFORE"); err != nil {
		return cfg, fmt.Errorf("%w (or off)", err)
	}
	cfg.EmailColumn = v.str("KEYWORKER_USERS_EMAIL_COLUMN")
	switch v.str("KEYWORKER_NOTIFY_LOG") {
	case "auto":
		cfg.NotifyLog = cfg.Webhook.URL == "" && cfg.SMTP.URL == ""
	default:
		if cfg.NotifyLog, err = v.boolean("KEYWORKER_NOTIFY_LOG"); err != nil {
			return cfg, fmt.Errorf("%w (or auto)", err)
		}
	}
	if cfg.ReconcileInterval, err = v.duration("KEYWORKER_RECONCILE_INTERVAL"); err != nil {
		return cfg, err
	}
	if cfg.JobRetention, err = v.duration("KEYWORKER_JOB_RETENTION"); err != nil {
		return cfg, err
	}
	if cfg.KeyWorkers, err = v.integer("KEYWORKER_KEY_WORKERS", 1, 1000); err != nil {
		return cfg, err
	}
	if cfg.NoticeWorkers, err = v.integer("KEYWORKER_NOTICE_WORKERS", 1, 1000); err != nil {
		return cfg, err
	}
	if cfg.NoticeConcurrency, err = v.integer("KEYWORKER_NOTICE_CONCURRENCY", 1, 1000); err != nil {
		return cfg, err
	}
	if cfg.JobTimeout, err = v.duration("KEYWORKER_JOB_TIMEOUT"); err != nil {
		return cfg, err
	}
	if cfg.ShutdownTimeout, err = v.duration("KEYWORKER_SHUTDOWN_TIMEOUT"); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// commaList splits a comma-separated setting, dropping blanks and spaces
// around each entry.
func commaList(raw string) []string {
	var out []string
	for _, p := range strings.Split(raw, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func cmdRun(ctx context.Context, e env, v *values, fs *flag.FlagSet) error {
	if len(v.args) > 0 {
		return &usageError{fmt.Sprintf("worker run takes no arguments, got %q", v.args)}
	}
	logger, err := newLogger(e, v)
	if err != nil {
		return err
	}
	warnFlagSecrets(logger, v)
	cfg, err := daemonConfig(v, logger, e.readFile)
	if err != nil {
		return &usageError{err.Error()}
	}
	d, err := daemon.New(cfg)
	if err != nil {
		return &usageError{err.Error()}
	}
	return d.Run(ctx)
}
