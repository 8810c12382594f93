package bench

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Scenario names, in the order they run and are reported.
const (
	// ScenarioNone signs users up with nothing attached: the baseline.
	ScenarioNone = "none"
	// ScenarioTrigger installs the seed trigger keyworker replaces: an AFTER
	// INSERT, SECURITY DEFINER trigger that writes a pgcrypto key in
	// plaintext into public.profiles inside the signup transaction.
	ScenarioTrigger = "trigger"
	// ScenarioLogical runs `worker run` in logical mode beside the load.
	ScenarioLogical = "logical"
	// ScenarioListen runs `worker run` in listen mode beside the load.
	ScenarioListen = "listen"
	// ScenarioOutbox is listen mode's capture alone: the worker installs
	// its trigger and outbox and stops, the load runs with the trigger
	// writing the outbox and nothing making keys, and then the worker
	// starts and makes them. It is what the trigger path itself costs
	// signups, apart from the work of making keys on the same machine.
	ScenarioOutbox = "outbox"
)

// Scenarios lists every scenario in run order.
var Scenarios = []string{ScenarioNone, ScenarioTrigger, ScenarioOutbox, ScenarioLogical, ScenarioListen}

// Defaults of Config.
const (
	DefaultClients  = 16
	DefaultRate     = 500
	DefaultDuration = 20 * time.Second
	DefaultWarmup   = time.Second
	DefaultBacklog  = 20_000
	DefaultRounds   = 1
)

// Off turns off Rate (no steady phase), Warmup and Backlog (no catch-up),
// whose zero value means their default.
const Off = -1

// Bounds checked by validation.
const (
	MaxClients  = 200
	MaxRate     = 100_000
	MinDuration = time.Second
	MaxDuration = time.Hour
	MaxBacklog  = 10_000_000
	MaxRounds   = 20
)

// Config configures a benchmark run. The zero value is not usable:
// WorkerCommand is required when a keyworker scenario runs.
type Config struct {
	// DatabaseURL points at an existing server to measure, as a role that
	// may CREATE DATABASE (every scenario gets a fresh database, dropped
	// afterwards) and create roles and schemas in it (a superuser, in
	// practice); logical mode also needs wal_level=logical and REPLICATION.
	// Defaults to "": a throwaway server started with pgtemp, with durable
	// commits (fsync, full_page_writes and synchronous_commit on) and
	// track_commit_timestamp on.
	DatabaseURL string

	// Scenarios picks what to measure, from Scenarios; they always run in
	// that order. Defaults to all of them.
	Scenarios []string

	// Clients is how many connections sign users up, each signup its own
	// transaction. Defaults to DefaultClients (16).
	Clients int

	// Rate is the total signups per second of the steady phase, in which key
	// latency is measured. -1 (Off) skips the steady phase: only the
	// unthrottled burst phase runs, and latencies come from it. Defaults to
	// DefaultRate (500).
	Rate int

	// Duration is the measured load time per scenario, split evenly between
	// the burst and the steady phase (all of it to the burst when there is no
	// steady phase). Defaults to DefaultDuration (20s).
	Duration time.Duration

	// Warmup runs before each phase's measured window, at the phase's load,
	// and is not counted. -1 (Off) for none. Defaults to DefaultWarmup (1s).
	Warmup time.Duration

	// Backlog is how many signups, each its own transaction, are made while
	// the worker is stopped, to time the catch-up when it starts again. -1
	// (Off) skips the catch-up. Defaults to DefaultBacklog (20,000).
	Backlog int

	// Rounds repeats the whole sequence of scenarios, each time on fresh
	// databases; the report gives each figure's median over the rounds, and
	// every round's own. On a noisy machine one round's ratios can mislead:
	// three rounds, interleaved, show how much to trust them. Defaults to
	// DefaultRounds (1).
	Rounds int

	// WorkerCommand runs the worker: the executable and its arguments, for
	// example {"/usr/local/bin/worker", "run"}. The bench adds the settings
	// through the environment (DATABASE_URL, KEYWORKER_MODE, ...). It must
	// exec the worker itself, not a wrapper, since its CPU time and memory
	// are read from the process. Required for the logical and listen
	// scenarios.
	WorkerCommand []string

	// Progress receives a line per step, for a person watching. Defaults to
	// discarding.
	Progress io.Writer

	// Version is keyworker's version, recorded in the report. Optional.
	Version string
}

func (c Config) withDefaults() Config {
	if len(c.Scenarios) == 0 {
		c.Scenarios = Scenarios
	}
	c.Clients = cmp.Or(c.Clients, DefaultClients)
	switch c.Rate {
	case 0:
		c.Rate = DefaultRate
	case Off:
		c.Rate = 0
	}
	c.Duration = cmp.Or(c.Duration, DefaultDuration)
	switch c.Warmup {
	case 0:
		c.Warmup = DefaultWarmup
	case Off:
		c.Warmup = 0
	}
	switch c.Backlog {
	case 0:
		c.Backlog = DefaultBacklog
	case Off:
		c.Backlog = 0
	}
	c.Rounds = cmp.Or(c.Rounds, DefaultRounds)
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	// Canonical order, so reports compare run to run.
	var ordered []string
	for _, s := range Scenarios {
		if slices.Contains(c.Scenarios, s) {
			ordered = append(ordered, s)
		}
	}
	for _, s := range c.Scenarios {
		if !slices.Contains(Scenarios, s) {
			ordered = append(ordered, s) // validate names it
		}
	}
	c.Scenarios = ordered
	return c
}

func (c Config) validate() error {
	for _, s := range c.Scenarios {
		if !slices.Contains(Scenarios, s) {
			return fmt.Errorf("Scenarios: %q is not a scenario: use %s", s, strings.Join(Scenarios, ", "))
		}
	}
	if c.Clients < 1 || c.Clients > MaxClients {
		return fmt.Errorf("Clients must be between 1 and %d, got %d", MaxClients, c.Clients)
	}
	if c.Rate < 0 || c.Rate > MaxRate {
		return fmt.Errorf("Rate must be between 0 and %d signups/s, got %d", MaxRate, c.Rate)
	}
	if c.Duration < MinDuration || c.Duration > MaxDuration {
		return fmt.Errorf("Duration must be between %s and %s, got %s", MinDuration, MaxDuration, c.Duration)
	}
	if c.Warmup < 0 || c.Warmup > time.Minute {
		return fmt.Errorf("Warmup must be between 0s and 1m, got %s", c.Warmup)
	}
	if c.Backlog < 0 || c.Backlog > MaxBacklog {
		return fmt.Errorf("Backlog must be between 0 and %d, got %d", MaxBacklog, c.Backlog)
	}
	if c.Rounds < 1 || c.Rounds > MaxRounds {
		return fmt.Errorf("Rounds must be between 1 and %d, got %d", MaxRounds, c.Rounds)
	}
	if c.hasWorker() && len(c.WorkerCommand) == 0 {
		return errors.New("WorkerCommand is required for the logical and listen scenarios: the worker binary and \"run\"")
	}
	return nil
}

// phaseLength is the measured window of each phase.
func (c Config) phaseLength() time.Duration {
	if c.Rate == 0 {
		return c.Duration
	}
	return c.Duration / 2
}

func (c Config) hasWorker() bool {
	return slices.Contains(c.Scenarios, ScenarioLogical) || slices.Contains(c.Scenarios, ScenarioListen) || slices.Contains(c.Scenarios, ScenarioOutbox)
}
