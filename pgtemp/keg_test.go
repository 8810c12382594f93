package pgtemp_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/pgtemp"
)

// TestHomebrewKegIsSearched: a keg-only Homebrew formula (postgresql@16 is
// not linked into PATH) is found where Homebrew puts it, on Apple silicon,
// Intel and Linux.
func TestHomebrewKegIsSearched(t *testing.T) {
	t.Parallel()
	real, version, err := pgtemp.FindBinaries("")
	testenv.Need(t, err == nil, fmt.Sprintf("no PostgreSQL binaries to stand in for a keg (apt-get install -y postgresql): %v", err))
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
		dir, v, _ := pgtemp.PickBinaries(pgtemp.GlobbedDirs(root))
		if dir != keg || v != version {
			t.Errorf("keg under %s: found %q (version %d), want %q (version %d)", prefix, dir, v, keg, version)
		}
	}
}
