package testenv

import (
	"fmt"
	"strings"
	"testing"
)

// recorder is a testing.TB that records Skip and Fatal instead of ending
// the goroutine, so Need's choice can be observed.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                      {}
func (r *recorder) Skip(args ...any)             { r.skipped = fmt.Sprint(args...) }
func (r *recorder) Fatalf(f string, args ...any) { r.failed = fmt.Sprintf(f, args...) }

// TestNeedSkipsLocallyAndFailsUnderCI: a missing tool skips the test on a
// developer's machine and fails it under CI=true, naming the install hint
// both times; what is present does neither.
func TestNeedSkipsLocallyAndFailsUnderCI(t *testing.T) {
	for _, ci := range []string{"", "1", "true"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			r := &recorder{TB: t}
			NeedTool(r, "keyworker-no-such-tool", "apt-get install -y no-such-tool")
			got := r.skipped
			if ci == "true" {
				got = r.failed
				if r.skipped != "" {
					t.Errorf("under CI=true the test was skipped: %q", r.skipped)
				}
			} else if r.failed != "" {
				t.Errorf("without CI=true the test failed: %q", r.failed)
			}
			if !strings.Contains(got, "keyworker-no-such-tool is not installed") || !strings.Contains(got, "apt-get install -y no-such-tool") {
				t.Errorf("message %q does not name the tool and the install hint", got)
			}

			r = &recorder{TB: t}
			NeedTool(r, "go", "go test puts it on PATH")
			Need(r, true, "present")
			if r.skipped != "" || r.failed != "" {
				t.Errorf("a present tool skipped (%q) or failed (%q) the test", r.skipped, r.failed)
			}
		})
	}
}
