package daemon_test

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/keyworker/keyworker/daemon"
	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/jobs"
	"github.com/keyworker/keyworker/notify"
)

var updateSeries = flag.Bool("update-series", false, "rewrite testdata/series.txt from this run's /metrics")

// seriesFile lists every keyworker_* series /metrics served before the move
// to client_golang (taken by running the hand-written registry's code with
// -update-series): one "# family <name> <type> <help>" line per family,
// then one line per series, labels sorted by name. Dashboards and alert
// rules are built on these.
const seriesFile = "testdata/series.txt"

// TestMetricsSeriesAreKept: a worker in logical mode and one in listen
// mode, with a webhook that fails once, refuses once and then accepts, and
// reveals that succeed, find nothing and are refused, together serve every
// keyworker_* family of seriesFile with the same type and help, and every
// series of it; and the Go runtime and process collectors besides.
func TestMetricsSeriesAreKept(t *testing.T) {
	t.Parallel()
	got := map[string]bool{}
	families := map[string]string{}
	var sawGo, sawProcess bool
	for _, mode := range []string{daemon.ModeLogical, daemon.ModeListen} {
		f := setup(t)
		hook := newWebhookReceiver(t)
		var calls atomic.Int64
		hook.setRespond(func(int) (int, http.Header, bool) {
			switch calls.Add(1) {
			case 1:
				return http.StatusInternalServerError, nil, false // failed, retried
			case 2:
				return http.StatusBadRequest, nil, false // discarded
			}
			return http.StatusOK, nil, false
		})
		cfg := f.config(mode)
		cfg.Webhook = notify.WebhookConfig{URL: hook.srv.URL, Secret: hook.secret}
		d := f.start(cfg)
		users := f.signUpMany(4, false)
		f.waitCount(30*time.Second, "a notice delivered or discarded per user", len(users),
			`SELECT count(*) FROM keyworker.key_events WHERE event IN ('notified', 'notify_discarded')`)
		f.waitQuiet(30 * time.Second)
		// A second job for a user who has a key: skipped, key_exists.
		rc, err := river.NewClient(riverpgxv5.New(f.db), &river.Config{Schema: schema, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rc.Insert(context.Background(), jobs.CreateKeysArgs{UserIDs: users[1:2], Source: "test"}, nil); err != nil {
			t.Fatal(err)
		}
		f.waitCount(30*time.Second, "the repeat to be skipped", 1, `SELECT count(*) FROM keyworker.key_events WHERE event = 'skipped' AND user_id = $1`, users[1])
		f.waitQuiet(30 * time.Second)
		if a := reveal(t, d, f.token(users[0])); a.status != http.StatusOK {
			t.Fatalf("reveal: %d %s", a.status, a.body)
		}
		reveal(t, d, f.token(users[0]))
		reveal(t, d, "not.a.token")

		addr := d.MetricsAddr()
		if addr == "" {
			addr = d.Addr()
		}
		status, body := get(t, "http://"+addr+"/metrics")
		if status != http.StatusOK {
			t.Fatalf("/metrics answered %d: %s", status, body)
		}
		// River reports job completions a moment after they commit.
		waitFor(t, 10*time.Second, "River's completion of the repeat job to be observed", func() (bool, error) {
			_, ok := scrapeMetrics(t, d).value("keyworker_keys_skipped_total", "reason", "key_exists")
			return ok, nil
		})
		status, body = get(t, "http://"+addr+"/metrics")
		if status != http.StatusOK {
			t.Fatalf("/metrics answered %d: %s", status, body)
		}
		fams, series := inventory(t, body)
		for name, desc := range fams {
			if prev, ok := families[name]; ok && prev != desc {
				t.Errorf("%s is %q in one mode and %q in the other", name, prev, desc)
			}
			families[name] = desc
			sawGo = sawGo || name == "go_goroutines"
			sawProcess = sawProcess || name == "process_resident_memory_bytes"
		}
		for _, s := range series {
			got[s] = true
		}
	}

	if *updateSeries {
		var b strings.Builder
		names := make([]string, 0, len(families))
		for n := range families {
			if strings.HasPrefix(n, "keyworker_") {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		for _, n := range names {
			fmt.Fprintf(&b, "# family %s %s\n", n, families[n])
			var ss []string
			for s := range got {
				if seriesFamily(s, families) == n {
					ss = append(ss, s)
				}
			}
			slices.Sort(ss)
			for _, s := range ss {
				b.WriteString(s + "\n")
			}
		}
		if err := os.WriteFile(seriesFile, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}

	want, err := os.ReadFile(seriesFile)
	if err != nil {
		t.Fatal(err)
	}
	nFam, nSeries := 0, 0
	for _, line := range strings.Split(strings.TrimSpace(string(want)), "\n") {
		if rest, ok := strings.CutPrefix(line, "# family "); ok {
			nFam++
			name, desc, _ := strings.Cut(rest, " ")
			if g, ok := families[name]; !ok {
				t.Errorf("family %s is no longer served", name)
			} else if g != desc {
				t.Errorf("family %s: served as %q, was %q", name, g, desc)
			}
			continue
		}
		nSeries++
		if !got[line] {
			t.Errorf("series %s is no longer served", line)
		}
	}
	if nFam < 15 || nSeries < 50 {
		t.Fatalf("%s holds %d families and %d series: too few to be the worker's", seriesFile, nFam, nSeries)
	}
	checkDeploySeries(t, families)
	if !sawGo || !sawProcess {
		t.Errorf("go_goroutines served: %t, process_resident_memory_bytes served: %t; want both", sawGo, sawProcess)
	}
}

// inventory reads a text exposition: each family's "<type> <help>" and
// each series as name{labels sorted by name}, without its value.
func inventory(t *testing.T, body string) (map[string]string, []string) {
	t.Helper()
	help, typ := map[string]string{}, map[string]string{}
	var series []string
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# HELP "); ok {
			n, h, _ := strings.Cut(rest, " ")
			help[n] = h
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			n, ty, _ := strings.Cut(rest, " ")
			typ[n] = ty
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id := line[:strings.LastIndexByte(line, ' ')]
		name, labels, hasLabels := strings.Cut(id, "{")
		if hasLabels {
			pairs := splitLabels(strings.TrimSuffix(labels, "}"))
			slices.Sort(pairs)
			name += "{" + strings.Join(pairs, ",") + "}"
		}
		series = append(series, name)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for n, ty := range typ {
		out[n] = ty + " " + help[n]
	}
	return out, series
}

// splitLabels splits `a="x",b="y,z"` at the commas between pairs.
func splitLabels(s string) []string {
	var out []string
	inQuote, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// seriesFamily is the family a series belongs to (histograms' _bucket,
// _sum and _count series belong to theirs).
func seriesFamily(series string, families map[string]string) string {
	name, _, _ := strings.Cut(series, "{")
	if _, ok := families[name]; ok {
		return name
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if _, ok := families[base]; ok {
				return base
			}
		}
	}
	return name
}

// deploySeriesRe finds the series a rule or panel names: the worker's own
// and those of client_golang's collectors. (up and ALERTS are Prometheus's
// own.)
var deploySeriesRe = regexp.MustCompile(`\b(?:keyworker|go|process|promhttp)_[a-z0-9_]+\b`)

// checkDeploySeries: every series that deploy/prometheus's rules and
// deploy/grafana's dashboards name is one of families (a histogram's
// _bucket, _sum and _count count as its family), the families a running
// worker served.
func checkDeploySeries(t *testing.T, families map[string]string) {
	t.Helper()
	var files []string
	for _, pattern := range []string{"../deploy/prometheus/*.yaml", "../deploy/grafana/*.json"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	named := 0
	for _, f := range files {
		if strings.HasSuffix(f, ".test.yaml") {
			continue // promtool's test input, not a rule
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		if strings.HasSuffix(f, ".json") {
			// A Grafana dashboard: the queries of its panels.
			var dash struct {
				Panels []struct {
					Title   string `json:"title"`
					Targets []struct {
						Expr string `json:"expr"`
					} `json:"targets"`
				} `json:"panels"`
			}
			if err := json.Unmarshal(b, &dash); err != nil {
				t.Fatalf("%s is not JSON: %v", f, err)
			}
			var exprs []string
			for _, p := range dash.Panels {
				for _, q := range p.Targets {
					if q.Expr == "" {
						t.Errorf("%s: panel %q has a query without an expression", f, p.Title)
					}
					exprs = append(exprs, q.Expr)
				}
			}
			text = strings.Join(exprs, "\n")
			checkPromQL(t, f, exprs)
		}
		for _, name := range deploySeriesRe.FindAllString(text, -1) {
			named++
			fam := seriesFamily(name, families)
			if _, ok := families[fam]; !ok {
				t.Errorf("%s names %s, which the worker does not serve", f, name)
			}
		}
	}
	if len(files) < 2 || named < 30 {
		t.Fatalf("%d deploy files name %d series: is the glob or the pattern wrong?", len(files), named)
	}
}

// checkPromQL has promtool parse a dashboard's queries, with Grafana's
// variables given values, as recording rules.
func checkPromQL(t *testing.T, file string, exprs []string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		// The other checks of the test still run: this one is skipped, not
		// the test, except under CI, where it must run.
		if testenv.InCI() {
			t.Fatalf("promtool is not installed (apt-get install prometheus): %s's queries are not parsed", file)
		}
		t.Logf("promtool is not installed (apt-get install prometheus): %s's queries are not parsed", file)
		return
	}
	vars := strings.NewReplacer("$__rate_interval", "5m", "$job", ".*")
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		q, _ := json.Marshal(vars.Replace(e)) // a JSON string is a YAML string
		fmt.Fprintf(&b, "      - record: panel_query_%d\n        expr: %s\n", i, q)
	}
	rules := filepath.Join(t.TempDir(), "dashboard.yaml")
	if err := os.WriteFile(rules, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", rules).CombinedOutput(); err != nil {
		t.Errorf("%s: promtool does not parse its queries: %v\n%s", file, err, out)
	}
}
