package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/listener"
)

// env is the process's outside world, injected so commands run in tests.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	readFile       func(string) ([]byte, error)
}

type command struct {
	name, args, summary string
	run                 func(ctx context.Context, e env, v *values, fs *flag.FlagSet) error
	extraFlags          func(fs *flag.FlagSet)
}

var commands []command

func init() {
	commands = []command{
		{name: "run", summary: "run the daemon: capture signups, make keys, deliver notices, serve pick-up and dashboard", run: cmdRun},
		{name: "migrate", summary: "create or upgrade keyworker's schema (River's tables included) and exit", run: cmdMigrate},
		{name: "replay", args: "[--since T] [--until T] [--dry-run]", summary: "enqueue keys for eligible users that have none (signups the worker missed)", run: cmdReplay, extraFlags: replayFlags},
		{name: "trace", args: "USER_ID [--json]", summary: "print one user's history: signup seen, jobs and their attempts, key, notices, pick-up", run: cmdTrace, extraFlags: traceFlags},
		{name: "status", summary: "show mode, slot lag, checkpoint, queue depth and the last signup seen", run: cmdStatus, extraFlags: statusFlags},
		{name: "keys", args: "create|list|revoke|rotate|verify|reseal ...", summary: "operate on keys (`worker keys help`)", run: cmdKeys},
		{name: "demo", summary: "run everything against a throwaway Postgres (with TEST_DATABASE_URL, a database of its own on that server) and show a key made, delivered and picked up", run: cmdDemo, extraFlags: demoFlags},
		{name: "bench", summary: "measure signup throughput and key latency against the trigger it replaces", run: cmdBench, extraFlags: benchFlags},
		{name: "version", summary: "print the version", run: cmdVersion},
	}
}

// usageError is a mistake in how the command was called; exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func exitCode(err error) int {
	var u *usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

func run(ctx context.Context, args []string, e env) error {
	if len(args) == 0 {
		usage(e.stderr)
		return &usageError{"no command given"}
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "--help", "-help":
		if len(rest) > 0 && rest[0] == "settings" {
			printSettingsTable(e.stdout)
			return nil
		}
		usage(e.stdout)
		return nil
	}
	for _, c := range commands {
		if c.name != name {
			continue
		}
		fs := flag.NewFlagSet("worker "+c.name, flag.ContinueOnError)
		// flag prints its own error and the whole usage on a mistake; we
		// print one line instead, and the usage only for --help.
		fs.SetOutput(io.Discard)
		if c.extraFlags != nil {
			c.extraFlags(fs)
		}
		// Asked for (--help), the usage is the answer: standard output.
		printUsage := func() {
			fs.SetOutput(e.stdout)
			fmt.Fprintf(fs.Output(), "usage: worker %s %s\n\n%s\n\nsettings (flag, environment variable):\n", c.name, c.args, c.summary)
			printSettingsFor(fs.Output(), c.name)
			extra := false
			fs.VisitAll(func(f *flag.Flag) {
				if isSettingFlag(f.Name, c.name) {
					return
				}
				if !extra {
					fmt.Fprintln(fs.Output(), "\noptions:")
					extra = true
				}
				def := ""
				if f.DefValue != "" && f.DefValue != "false" {
					def = " (default " + f.DefValue + ")"
				}
				fmt.Fprintf(fs.Output(), "  --%s\t%s%s\n", f.Name, f.Usage, def)
			})
		}
		v, err := parseSettings(fs, c.name, c.name == "keys", rest, e.getenv, e.readFile)
		if errors.Is(err, flag.ErrHelp) {
			printUsage()
			return nil
		}
		if err != nil {
			return &usageError{fmt.Sprintf("%v (see `worker %s --help`)", strings.Replace(err.Error(), " -", " --", 1), c.name)}
		}
		// Components name their Config fields; the user set env vars.
		return translateError(c.run(ctx, e, v, fs))
	}
	usage(e.stderr)
	return &usageError{fmt.Sprintf("unknown command %q", name)}
}

// isSettingFlag reports whether the flag is one of cmd's settings, listed
// with its environment variable rather than among the command's options.
func isSettingFlag(name, cmd string) bool {
	for _, s := range settings {
		if s.flag == name && s.takes(cmd) {
			return true
		}
	}
	return false
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: worker <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "keyworker gives every new user of a Postgres application an API key,")
	fmt.Fprintln(w, "outside the signup transaction, with every step visible as River jobs.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "`worker <command> --help` lists its flags; `worker help settings` prints every setting.")
}

// newLogger builds the process logger from KEYWORKER_LOG_LEVEL and
// KEYWORKER_LOG_FORMAT; logs go to stderr, with the Config field names
// components log turned into env names (names.go).
func newLogger(e env, v *values) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(v.str("KEYWORKER_LOG_LEVEL"))); err != nil {
		return nil, &usageError{fmt.Sprintf("KEYWORKER_LOG_LEVEL=%q is not a level: use debug, info, warn or error", v.str("KEYWORKER_LOG_LEVEL"))}
	}
	format, err := v.oneOf("KEYWORKER_LOG_FORMAT", "text", "json")
	if err != nil {
		return nil, &usageError{err.Error()}
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(e.stderr, opts)
	if format == "json" {
		h = slog.NewJSONHandler(e.stderr, opts)
	}
	return slog.New(newNamesHandler(h)), nil
}

// warnFlagSecrets logs a warning for each secret given as a flag.
func warnFlagSecrets(logger *slog.Logger, v *values) {
	for _, w := range v.flagSecretWarnings() {
		logger.Warn(w, "component", "cli")
	}
}

// connect opens a pool on DATABASE_URL and pings it, with errors that never
// show the password. It warns (on stderr, as a log line) about secrets given
// as flags and about a connection to another machine whose server
// certificate is not verified.
func connect(ctx context.Context, e env, v *values) (*pgxpool.Pool, error) {
	url, err := v.require("DATABASE_URL", "set it to your database's direct connection string, e.g. postgres://postgres:<password>@db.<ref>.supabase.co:5432/postgres")
	if err != nil {
		return nil, &usageError{err.Error()}
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx redacts the password in ParseConfigError.
		return nil, &usageError{fmt.Sprintf("DATABASE_URL is malformed: %v (want postgres://user:password@host:5432/database)", err)}
	}
	// Session advisory locks (migrations) and LISTEN do not survive a
	// transaction pooler; a session pooler carries them (not replication,
	// which `worker run` checks for its mode).
	if err := listener.CheckDirect(url, listener.ModeListen); err != nil {
		return nil, &usageError{err.Error()}
	}
	if logger, err := newLogger(e, v); err == nil {
		warnFlagSecrets(logger, v)
		if w := listener.CheckTLS(url); w != "" {
			logger.Warn(w, "component", "cli")
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to the database at %s: %w", redactedTarget(cfg.ConnConfig), err)
	}
	return pool, nil
}

func redactedTarget(c *pgx.ConnConfig) string {
	return fmt.Sprintf("%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " (" + s.Value[:12] + ")"
		}
	}
	return v
}

func cmdVersion(ctx context.Context, e env, v *values, fs *flag.FlagSet) error {
	fmt.Fprintf(e.stdout, "keyworker %s\n", strings.TrimSpace(version()))
	return nil
}
