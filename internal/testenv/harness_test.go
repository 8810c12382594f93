package testenv

import (
	"context"
	"strings"
	"testing"

	"github.com/keyworker/keyworker/pgtemp"
)

// TestHarnessOffersTestDatabaseURL: without server binaries the test
// harness, which honours TEST_DATABASE_URL, says so.
func TestHarnessOffersTestDatabaseURL(t *testing.T) {
	t.Setenv(pgtemp.EnvTestDatabaseURL, "")
	h := NewHarness(HarnessConfig{Server: pgtemp.Config{BinDir: t.TempDir()}})
	err := h.start(context.Background())
	if err == nil {
		h.stop()
		t.Fatal("the harness started without binaries")
	}
	if !strings.Contains(err.Error(), "set TEST_DATABASE_URL") || !strings.Contains(err.Error(), "apt-get install") {
		t.Fatalf("harness error does not offer both fixes: %v", err)
	}
}
