package pgtemp

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHomebrewKegIsSearched: a keg-only Homebrew formula (postgresql@16 is
// not linked into PATH) is found where Homebrew puts it, on Apple silicon,
// Intel and Linux.
func TestHomebrewKegIsSearched(t *testing.T) {
	t.Parallel()
	real, version, err := FindBinaries("")
	if err != nil {
		t.Skipf("no PostgreSQL binaries to stand in for a keg: %v", err)
	}
	for _, prefix := range []string{"/opt/homebrew", "/usr/local", "/home/linuxbrew/.linuxbrew"} {
		root := t.TempDir()
		keg := filepath.Join(root, prefix, "opt", "postgresql@16", "bin")
		if err := os.MkdirAll(keg, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, bin := range []string{"initdb", "postgres"} {
			if err := os.Symlink(filepath.Join(real, bin), filepath.Join(keg, bin)); err != nil {
				t.Fatal(err)
			}
		}
		dir, v, _ := pickBinaries(globbedDirs(root))
		if dir != keg || v != version {
			t.Errorf("keg under %s: found %q (version %d), want %q (version %d)", prefix, dir, v, keg, version)
		}
	}
}

// TestHarnessOffersTestDatabaseURL: without server binaries the test
// harness, which honours TEST_DATABASE_URL, says so.
func TestHarnessOffersTestDatabaseURL(t *testing.T) {
	t.Setenv(EnvTestDatabaseURL, "")
	h := NewHarness(HarnessConfig{Server: Config{BinDir: t.TempDir()}})
	err := h.start(context.Background())
	if err == nil {
		h.stop()
		t.Fatal("the harness started without binaries")
	}
	if !strings.Contains(err.Error(), "set TEST_DATABASE_URL") || !strings.Contains(err.Error(), "apt-get install") {
		t.Fatalf("harness error does not offer both fixes: %v", err)
	}
}
