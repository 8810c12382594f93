package faults

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/keyworker/keyworker/pgtemp"
)

// Set by TestMain for every test of the package.
var (
	// testBinaryRace is true when this test binary runs with the race
	// detector (race_test.go).
	testBinaryRace bool
	// workerBin is the worker binary built from ./cmd/worker.
	workerBin string
	// workerRace says whether workerBin was built with -race.
	workerRace bool
	// server is the suite's own PostgreSQL server: the faults restart it,
	// so nothing else shares it.
	server *pgtemp.Server
	// artifacts holds the binary and the logs; kept when a test fails.
	artifacts string
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run() // every test skips itself
	}
	var err error
	artifacts, err = os.MkdirTemp("", "keyworker-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	start := time.Now()
	if err := buildWorker(); err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	built := time.Since(start)

	if os.Getenv(pgtemp.EnvTestDatabaseURL) != "" {
		fmt.Fprintf(os.Stderr, "faults: %s is set but not used: the suite restarts and breaks its PostgreSQL, so it always starts one of its own (it needs the server binaries)\n", pgtemp.EnvTestDatabaseURL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	server, err = pgtemp.Start(ctx, pgtemp.Config{Settings: map[string]string{
		// A WAL sender whose worker was killed notices the dead peer at
		// once on loopback; this bounds the case where it does not.
		"wal_sender_timeout": "5s",
		"max_connections":    "400",
	}})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults: starting PostgreSQL:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "faults: worker built in %s (race: %v), PostgreSQL %d on port %d, artifacts in %s\n",
		built.Round(time.Millisecond), workerRace, server.Version(), server.Port(), artifacts)

	code := m.Run()
	_ = server.Stop()
	if code == 0 {
		_ = os.RemoveAll(artifacts)
	} else {
		fmt.Fprintf(os.Stderr, "faults: logs kept in %s\n", artifacts)
	}
	return code
}

// buildWorker builds ./cmd/worker into artifacts, with -race when this test
// binary has it unless KEYWORKER_FAULTS_WORKER_RACE says otherwise.
func buildWorker() error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	workerRace = testBinaryRace
	if v := os.Getenv("KEYWORKER_FAULTS_WORKER_RACE"); v != "" {
		workerRace, err = strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("KEYWORKER_FAULTS_WORKER_RACE=%q is not a boolean", v)
		}
	}
	workerBin = filepath.Join(artifacts, "worker")
	args := []string{"build", "-o", workerBin}
	if workerRace {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/worker")
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("finding the go command to build the worker: %w", err)
	}
	cmd := exec.Command(goBin, args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building the worker (go %v): %w\n%s", args, err, out)
	}
	return nil
}

// moduleRoot walks up from the working directory to the directory holding
// go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding the module root: no go.mod above the working directory")
		}
		dir = parent
	}
}
