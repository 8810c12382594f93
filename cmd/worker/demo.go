package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"

	"github.com/keyworker/keyworker/demo"
	"github.com/keyworker/keyworker/pgtemp"
)

func demoFlags(fs *flag.FlagSet) {
	fs.String("addr", "", "HTTP address for the demo's daemon (default 127.0.0.1:8080, or a free port if taken)")
	fs.Int("users", 3, "how many users sign up at the start")
	fs.Bool("exit", false, "exit after the scripted part instead of waiting for Ctrl-C")
	fs.Bool("logs", false, "show the daemon's own log lines on stderr")
}

func cmdDemo(ctx context.Context, e env, v *values, fs *flag.FlagSet) error {
	if len(v.args) > 0 {
		return &usageError{fmt.Sprintf("worker demo takes flags only, got %q", v.args)}
	}
	users, err := strconv.Atoi(fs.Lookup("users").Value.String())
	if err != nil || users < 1 || users > 1000 {
		return &usageError{"--users must be between 1 and 1000"}
	}
	mode, err := v.oneOf("KEYWORKER_MODE", "auto", "logical", "listen")
	if err != nil {
		return &usageError{err.Error()}
	}
	cfg := demo.Config{
		HTTPAddr: fs.Lookup("addr").Value.String(),
		Mode:     mode,
		Users:    users,
		Exit:     fs.Lookup("exit").Value.String() == "true",
		Out:      e.stdout,
		In:       e.stdin,
		// As the tests do: a database of the demo's own on that server
		// instead of a throwaway server.
		ServerURL: e.getenv(pgtemp.EnvTestDatabaseURL),
	}
	if fs.Lookup("logs").Value.String() == "true" {
		logger, err := newLogger(e, v)
		if err != nil {
			return err
		}
		cfg.Logger = logger
	}
	return demo.Run(ctx, cfg)
}
