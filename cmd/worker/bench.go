package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/keyworker/keyworker/bench"
)

func benchFlags(fs *flag.FlagSet) {
	fs.String("database-url", "", "measure on this server instead of a throwaway one: a role that may CREATE DATABASE (a superuser in practice), wal_level=logical for the logical scenario; every scenario gets a fresh database, dropped afterwards ($DATABASE_URL is deliberately not read)")
	fs.String("scenarios", strings.Join(bench.Scenarios, ","), "comma-separated scenarios: none (no key generation), trigger (the seed's pgcrypto trigger), outbox (listen mode's trigger and outbox alone, keys made after the load), logical and listen (keyworker's modes)")
	fs.Int("clients", bench.DefaultClients, "connections signing users up, one signup per transaction")
	fs.Int("rate", bench.DefaultRate, "signups/s of the steady phase, where key latency is measured; 0 runs only the unthrottled burst phase")
	fs.Duration("duration", bench.DefaultDuration, "measured load per scenario, split between the burst and the steady phase")
	fs.Duration("warmup", bench.DefaultWarmup, "unmeasured load before each phase")
	fs.Int("backlog", bench.DefaultBacklog, "signups made while the worker is stopped, to time its catch-up; 0 skips it")
	fs.Int("rounds", bench.DefaultRounds, "run the scenarios this many times in turn and report medians, to see through a noisy machine")
	fs.String("worker-binary", "", "the worker executable to measure (default: this one)")
	fs.Bool("json", false, "print one JSON object instead of tables (progress still goes to stderr)")
	fs.String("json-file", "", "also write the JSON object to this file")
}

func cmdBench(ctx context.Context, e env, v *values, fs *flag.FlagSet) error {
	if len(v.args) > 0 {
		return &usageError{fmt.Sprintf("worker bench takes flags only, got %q", v.args)}
	}
	get := func(name string) any { return fs.Lookup(name).Value.(flag.Getter).Get() }
	cfg := bench.Config{
		DatabaseURL: get("database-url").(string),
		Clients:     get("clients").(int),
		Rate:        get("rate").(int),
		Duration:    get("duration").(time.Duration),
		Warmup:      get("warmup").(time.Duration),
		Backlog:     get("backlog").(int),
		Rounds:      get("rounds").(int),
		Progress:    e.stderr,
		Version:     strings.TrimSpace(version()),
	}
	for _, s := range strings.Split(get("scenarios").(string), ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.Scenarios = append(cfg.Scenarios, s)
		}
	}
	if len(cfg.Scenarios) == 0 {
		return &usageError{"--scenarios is empty: name at least one of " + strings.Join(bench.Scenarios, ", ")}
	}
	// On the command line 0 means none; in bench.Config it means the default.
	switch {
	case cfg.Rate < 0 || cfg.Backlog < 0 || cfg.Warmup < 0:
		return &usageError{"--rate, --backlog and --warmup must not be negative"}
	case cfg.Duration < bench.MinDuration:
		return &usageError{fmt.Sprintf("--duration must be at least %s, got %s", bench.MinDuration, cfg.Duration)}
	case cfg.Rounds < 1:
		return &usageError{fmt.Sprintf("--rounds must be at least 1, got %d", cfg.Rounds)}
	}
	cfg.Rate = cmp.Or(cfg.Rate, bench.Off)
	cfg.Backlog = cmp.Or(cfg.Backlog, bench.Off)
	cfg.Warmup = cmp.Or(cfg.Warmup, bench.Off)
	bin := get("worker-binary").(string)
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return fmt.Errorf("finding this executable to run as the worker: %w (pass --worker-binary)", err)
		}
	}
	cfg.WorkerCommand = []string{bin, "run"}

	r, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if path := get("json-file").(string); path != "" {
		var b strings.Builder
		if err := r.WriteJSON(&b); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			return fmt.Errorf("writing --json-file: %w", err)
		}
	}
	if get("json").(bool) {
		err = r.WriteJSON(e.stdout)
	} else {
		err = r.WriteText(e.stdout)
	}
	if err != nil {
		return err
	}
	// Missing keys break keyworker's first invariant: that is a failure,
	// whatever the speed.
	for _, sc := range r.Scenarios {
		if sc.KeysMissing > 0 {
			return fmt.Errorf("scenario %s: %d of %d users got no key", sc.Name, sc.KeysMissing, sc.Users)
		}
	}
	return nil
}
