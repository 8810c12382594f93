package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/keyworker/keyworker/internal/testenv"
)

var harness = testenv.NewHarness(testenv.HarnessConfig{Prepare: testenv.Migrate})

func TestMain(m *testing.M) { os.Exit(harness.Run(m)) }

// invoke runs the worker command in-process with the given environment.
func invoke(ctx context.Context, envv map[string]string, stdin string, args ...string) (stdout, stderr string, err error) {
	var out, errb testenv.LogBuffer
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
