package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under CI: the CI environment variable
// is "true", as CI services and .ci/run's callers set it.
func InCI() bool { return os.Getenv("CI") == "true" }

// Need skips the test when ok is false, with why as the reason; under CI it
// fails the test instead, since there the missing piece must be installed
// (.ci/run installs what the tests need). why should say what is missing
// and how to install it.
func Need(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if InCI() {
		t.Fatalf("%s (CI=true: a check that does not run must fail here, not skip)", why)
		return
	}
	t.Skip(why)
}

// NeedTool is Need for a command on PATH: it skips (or, under CI, fails)
// the test when name cannot be found, saying how to install it with hint
// (for example "apt-get install -y systemd").
func NeedTool(t testing.TB, name, hint string) {
	t.Helper()
	_, err := exec.LookPath(name)
	Need(t, err == nil, name+" is not installed ("+hint+")")
}
