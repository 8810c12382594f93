package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/keyworker/keyworker/internal/testenv"
)

// The deploy files are not run here (no Docker engine, no systemd as PID 1),
// so these tests check what can be checked: every setting they name exists,
// the YAML parses, the systemd unit verifies, the image runs `worker run`.

func deployFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir("../../deploy", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil || len(files) < 6 {
		t.Fatalf("deploy files: %v (%d found)", err, len(files))
	}
	return files
}

func TestDeployFilesNameOnlyRealSettings(t *testing.T) {
	t.Parallel()
	known := map[string]bool{}
	for _, s := range settings {
		known[s.env] = true
		if s.secret {
			known[s.env+"_FILE"] = true
		}
	}
	re := regexp.MustCompile(`\b(KEYWORKER_[A-Z0-9_]+|DATABASE_URL)\b`)
	seen := 0
	for _, f := range deployFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range re.FindAllString(string(b), -1) {
			seen++
			if !known[name] {
				t.Errorf("%s names %s, which is not a setting (worker help settings)", f, name)
			}
		}
	}
	if seen < 10 {
		t.Fatalf("only %d settings named in deploy/: is the pattern right?", seen)
	}
}

func TestDeployYAMLParses(t *testing.T) {
	t.Parallel()
	testenv.Need(t, exec.Command("python3", "-c", "import yaml").Run() == nil,
		"python3 with PyYAML is not installed (apt-get install -y python3-yaml)")
	n := 0
	for _, f := range deployFiles(t) {
		if !strings.HasSuffix(f, ".yaml") {
			continue
		}
		n++
		out, err := exec.Command("python3", "-c", "import sys, yaml; docs = list(yaml.safe_load_all(open(sys.argv[1]))); assert docs and all(docs), 'empty document'", f).CombinedOutput()
		if err != nil {
			t.Errorf("%s does not parse: %v\n%s", f, err, out)
		}
	}
	if n < 4 {
		t.Fatalf("only %d YAML files checked", n)
	}
}

func TestSystemdUnitVerifies(t *testing.T) {
	t.Parallel()
	testenv.NeedTool(t, "systemd-analyze", "apt-get install -y systemd")
	dir := t.TempDir()
	bin := filepath.Join(dir, "worker")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("building worker: %v\n%s", err, out)
	}
	unit, err := os.ReadFile("../../deploy/keyworker.service")
	if err != nil {
		t.Fatal(err)
	}
	// The unit as installed, but pointing at this build and an env file that
	// exists.
	envFile := filepath.Join(dir, "env")
	if err := os.WriteFile(envFile, []byte("DATABASE_URL=postgres://localhost/postgres\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	u := strings.ReplaceAll(string(unit), "/usr/local/bin/worker", bin)
	u = strings.ReplaceAll(u, "EnvironmentFile=/etc/keyworker/env", "EnvironmentFile="+envFile)
	u = strings.ReplaceAll(u, "ReadOnlyPaths=/etc/keyworker", "ReadOnlyPaths="+dir)
	path := filepath.Join(dir, "keyworker.service")
	if err := os.WriteFile(path, []byte(u), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The command line the unit runs is one the binary takes.
	if !strings.Contains(u, "ExecStart="+bin+" run\n") {
		t.Fatal("the unit does not run `worker run`")
	}
}

func TestDockerfileBuildsAndRunsTheWorker(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../deploy/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	d := string(b)
	for _, want := range []string{"./cmd/worker", `ENTRYPOINT ["/usr/local/bin/worker"]`, `CMD ["run"]`, "USER nonroot", "CGO_ENABLED=0"} {
		if !strings.Contains(d, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}
