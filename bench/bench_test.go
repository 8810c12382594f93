package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSummarizeUsesNearestRank(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(100 - i) // 100..1, unsorted
	}
	for _, tc := range []struct {
		name string
		in   []float64
		want Latency
	}{
		{"empty", nil, Latency{}},
		{"one", []float64{7}, Latency{N: 1, P50: 7, P95: 7, P99: 7, Max: 7}},
		{"hundred", hundred, Latency{N: 100, P50: 50, P95: 95, P99: 99, Max: 100}},
		{"two", []float64{1, 1000}, Latency{N: 2, P50: 1, P95: 1000, P99: 1000, Max: 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := summarize(tc.in); got != tc.want {
				t.Fatalf("summarize = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestConfigDefaultsAndOff(t *testing.T) {
	c := Config{Rate: Off, Backlog: Off, Warmup: Off, Scenarios: []string{"listen", "none"}}.withDefaults()
	if c.Rate != 0 || c.Backlog != 0 || c.Warmup != 0 {
		t.Fatalf("Off did not turn Rate, Backlog and Warmup off: %+v", c)
	}
	if got := strings.Join(c.Scenarios, ","); got != "none,listen" {
		t.Fatalf("scenarios %s, want them in run order none,listen", got)
	}
	if c.phaseLength() != DefaultDuration {
		t.Fatalf("without a steady phase the burst gets the whole duration, got %s", c.phaseLength())
	}
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "WorkerCommand") {
		t.Fatalf("validate without a worker command = %v, want an error naming WorkerCommand", err)
	}
	d := Config{}.withDefaults()
	if d.Rate != DefaultRate || d.Backlog != DefaultBacklog || d.Clients != DefaultClients || len(d.Scenarios) != 5 {
		t.Fatalf("defaults not applied: %+v", d)
	}
	if err := (Config{Scenarios: []string{"nope"}}).withDefaults().validate(); err == nil {
		t.Fatal("an unknown scenario passed validation")
	}
}

func TestMergeRoundsTakesMediansAndKeepsEveryRound(t *testing.T) {
	rss := func(v int64) *int64 { return &v }
	mk := func(tps, p99, keyP99, catchup float64, steadyRSS int64, missing int) Scenario {
		return Scenario{
			Name: ScenarioLogical, SignupTPS: tps, SignupTPSMin: tps, SignupTPSMax: tps, SignupP99MS: p99,
			KeyLatencyMS:    &Latency{N: 10, P99: keyP99},
			CatchupKeysPerS: &catchup, Catchup: &Catchup{KeysPerS: catchup},
			Worker: &Worker{CPUS: tps / 100, PeakRSSBytes: steadyRSS + 1, SteadyRSSBytes: rss(steadyRSS)},
			Users:  100, KeysMissing: missing,
		}
	}
	got := mergeRounds([]Scenario{mk(300, 9, 50, 4000, 30, 0), mk(100, 5, 70, 6000, 40, 1), mk(200, 7, 60, 5000, 20, 0)})
	if got.SignupTPS != 200 || got.SignupTPSMin != 100 || got.SignupTPSMax != 300 || got.SignupP99MS != 7 {
		t.Errorf("signups: %v (%v–%v), p99 %v; want the median 200 (100–300), p99 7", got.SignupTPS, got.SignupTPSMin, got.SignupTPSMax, got.SignupP99MS)
	}
	if got.KeyLatencyMS.P99 != 60 || got.KeyLatencyMS.N != 30 {
		t.Errorf("key latency %+v, want the median p99 60 over 30 keys", *got.KeyLatencyMS)
	}
	if *got.CatchupKeysPerS != 5000 {
		t.Errorf("catch-up %v, want the median 5000", *got.CatchupKeysPerS)
	}
	if *got.Worker.SteadyRSSBytes != 40 || got.Worker.PeakRSSBytes != 41 {
		t.Errorf("memory: steady %v, peak %v; want the largest of any round (40, 41)", *got.Worker.SteadyRSSBytes, got.Worker.PeakRSSBytes)
	}
	if got.Users != 300 || got.KeysMissing != 1 {
		t.Errorf("users %d, missing %d; want sums 300 and 1 (a key missing in any round must show)", got.Users, got.KeysMissing)
	}
	if len(got.Rounds) != 3 || got.Rounds[1].SignupTPS != 100 {
		t.Errorf("rounds not kept in order: %+v", got.Rounds)
	}
	if one := mergeRounds([]Scenario{mk(1, 2, 3, 4, 5, 0)}); one.Rounds != nil {
		t.Error("a single round should not list itself in Rounds")
	}
}

// TestRunMeasuresEveryScenario runs a tiny bench end to end, with the real
// worker binary, and checks the JSON others script against: every field the
// issue names is there with a sane value, and every user got a key.
func TestRunMeasuresEveryScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the worker and runs four scenarios (about 40 s)")
	}
	bin := buildWorker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	r, err := Run(ctx, Config{
		Clients:       2,
		Rate:          50,
		Duration:      2 * time.Second,
		Warmup:        200 * time.Millisecond,
		Backlog:       200,
		WorkerCommand: []string{bin, "run"},
		Progress:      &progress,
	})
	if err != nil {
		t.Fatalf("Run: %v\nprogress:\n%s", err, progress.String())
	}
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil {
		t.Fatalf("the JSON output does not parse: %v", err)
	}

	num := func(path string, v any) float64 {
		t.Helper()
		f, ok := v.(float64)
		if !ok {
			t.Fatalf("%s = %v (%T), want a number\n%s", path, v, v, js.String())
		}
		return f
	}
	obj := func(path string, v any) map[string]any {
		t.Helper()
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s = %v, want an object\n%s", path, v, js.String())
		}
		return m
	}
	checkLatency := func(path string, v any, wantZero bool) {
		t.Helper()
		l := obj(path, v)
		p50, p95, p99, mx := num(path+".p50", l["p50"]), num(path+".p95", l["p95"]), num(path+".p99", l["p99"]), num(path+".max", l["max"])
		if num(path+".n", l["n"]) < 1 {
			t.Errorf("%s.n < 1: no key latency was measured", path)
		}
		if !(0 <= p50 && p50 <= p95 && p95 <= p99 && p99 <= mx) {
			t.Errorf("%s out of order: p50 %v, p95 %v, p99 %v, max %v", path, p50, p95, p99, mx)
		}
		if wantZero && mx != 0 {
			t.Errorf("%s.max = %v, want 0 (the key is made in the signup's transaction)", path, mx)
		}
		if !wantZero && (p50 <= 0 || mx > 60_000) {
			t.Errorf("%s: p50 %v, max %v: a key cannot commit before its signup, nor a minute after at this load", path, p50, mx)
		}
	}

	if cores := num("machine.cores", obj("machine", doc["machine"])["cores"]); cores < 1 {
		t.Errorf("machine.cores = %v", cores)
	}
	if v, _ := obj("postgres", doc["postgres"])["version"].(string); v == "" {
		t.Error("postgres.version is empty")
	}
	if doc["key_latency_method"] != MethodCommitTimestamps {
		t.Errorf("key_latency_method = %v, want %s on a throwaway server", doc["key_latency_method"], MethodCommitTimestamps)
	}
	checkLatency("key_latency_ms", doc["key_latency_ms"], false)
	if num("catchup_keys_per_s", doc["catchup_keys_per_s"]) <= 0 {
		t.Error("catchup_keys_per_s <= 0")
	}
	if rss := num("worker_peak_rss_bytes", doc["worker_peak_rss_bytes"]); rss < 1<<20 || rss > 1<<32 {
		t.Errorf("worker_peak_rss_bytes = %v, not a plausible process size", rss)
	}

	scenarios, _ := doc["scenarios"].([]any)
	var names []string
	for i, raw := range scenarios {
		sc := obj("scenarios[i]", raw)
		name, _ := sc["name"].(string)
		names = append(names, name)
		p := "scenarios[" + name + "]"
		if num(p+".signup_tps", sc["signup_tps"]) <= 0 {
			t.Errorf("%s.signup_tps <= 0", p)
		}
		if num(p+".signup_p99_ms", sc["signup_p99_ms"]) <= 0 {
			t.Errorf("%s.signup_p99_ms <= 0", p)
		}
		if num(p+".users", sc["users"]) < 1 {
			t.Errorf("%s.users < 1", p)
		}
		if m := num(p+".keys_missing", sc["keys_missing"]); m != 0 {
			t.Errorf("%s: %v users got no key", p, m)
		}
		steady := obj(p+".steady", sc["steady"])
		if tps := num(p+".steady.signup_tps", steady["signup_tps"]); tps < 25 || tps > 75 {
			t.Errorf("%s.steady.signup_tps = %v, want about the 50/s asked for", p, tps)
		}
		if ratio := obj(p+".vs_none", sc["vs_none"]); i == 0 && num(p+".vs_none.signup_tps", ratio["signup_tps"]) != 1 {
			t.Errorf("none compared with itself is not 1: %v", ratio)
		}
		switch name {
		case ScenarioNone:
			if sc["key_latency_ms"] != nil || sc["worker"] != nil {
				t.Errorf("%s has key latency or a worker: %v, %v", p, sc["key_latency_ms"], sc["worker"])
			}
		case ScenarioTrigger:
			checkLatency(p+".key_latency_ms", sc["key_latency_ms"], true)
		case ScenarioLogical, ScenarioListen:
			checkLatency(p+".key_latency_ms", sc["key_latency_ms"], false)
			w := obj(p+".worker", sc["worker"])
			if num(p+".worker.cpu_s", w["cpu_s"]) <= 0 {
				t.Errorf("%s.worker.cpu_s <= 0", p)
			}
			if num(p+".worker.steady_rss_bytes", w["steady_rss_bytes"]) < 1<<20 {
				t.Errorf("%s.worker.steady_rss_bytes < 1 MiB", p)
			}
			c := obj(p+".catchup", sc["catchup"])
			if num(p+".catchup.backlog", c["backlog"]) != 200 || num(p+".catchup.keys_per_s", c["keys_per_s"]) <= 0 || num(p+".catchup.keys_missing", c["keys_missing"]) != 0 ||
				num(p+".catchup.notices", c["notices"]) != 200 || num(p+".catchup.notices_per_s", c["notices_per_s"]) <= 0 {
				t.Errorf("%s.catchup = %v", p, c)
			}
		}
	}
	if got := strings.Join(names, ","); got != "none,trigger,outbox,logical,listen" {
		t.Errorf("scenarios %s, want none,trigger,outbox,logical,listen", got)
	}
	goals, _ := doc["goals"].([]any)
	if len(goals) != 18 {
		t.Errorf("%d goals, want 7 for each keyworker mode and 4 of the trigger path", len(goals))
	}
	for _, f := range []string{"catchup_notices_per_s", "burst_drain_s", "worker_cpu_ms_per_key", "catchup_keys_per_s"} {
		if num(f, doc[f]) <= 0 {
			t.Errorf("%s = %v, want a measured figure", f, doc[f])
		}
	}
	for _, g := range goals {
		if obj("goal", g)["met"] == nil {
			t.Errorf("goal %v was not measured", g)
		}
	}

	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SIGNUPS", "KEYS", "GOALS", "trigger", "logical", "listen", "fsync=on"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, text.String())
		}
	}
	if t.Failed() {
		t.Logf("table:\n%s\nprogress:\n%s", text.String(), progress.String())
	}
}

// buildWorker builds cmd/worker into the test's temporary directory.
func buildWorker(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "worker")
	out, err := exec.Command(goBin, "build", "-o", bin, "github.com/keyworker/keyworker/cmd/worker").CombinedOutput()
	if err != nil {
		t.Fatalf("building the worker: %v\n%s", err, out)
	}
	return bin
}
