package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/keyworker/keyworker/pgtemp"
	kwsql "github.com/keyworker/keyworker/sql"
)

var harness = pgtemp.NewHarness(pgtemp.HarnessConfig{Prepare: func(ctx context.Context, url string) error {
	_, err := kwsql.MigrateURL(ctx, url, kwsql.Config{})
	return err
}})

func TestMain(m *testing.M) { os.Exit(harness.Run(m)) }

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a command
// and the reads of a test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// invoke runs the worker command in-process with the given environment.
func invoke(ctx context.Context, envv map[string]string, stdin string, args ...string) (stdout, stderr string, err error) {
	var out, errb syncBuffer
	e := env{
		stdin:  strings.NewReader(stdin),
		stdout: &out,
		stderr: &errb,
		getenv: func(k string) string { return envv[k] },
		readFile: func(name string) ([]byte, error) {
			if v, ok := envv["file:"+name]; ok {
				return []byte(v), nil
			}
			return nil, os.ErrNotExist
		},
	}
	err = run(ctx, args, e)
	return out.String(), errb.String(), err
}

func wantUsageError(t *testing.T, err error, substr string) {
	t.Helper()
	var u *usageError
	if !errors.As(err, &u) {
		t.Fatalf("want a usage error containing %q, got %v", substr, err)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("usage error %q does not contain %q", err, substr)
	}
}
