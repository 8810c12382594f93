package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// Goals of the batched key pipeline (issue 11), on a 2-core machine running
// Postgres and the worker.
const (
	// GoalClients is the client count the throughput goal is stated at.
	GoalClients = 16
	// GoalRate is the rate the key latency goal is stated at.
	GoalRate = 500
	// GoalKeyP99 is the key latency goal: p99 at most it.
	GoalKeyP99 = 50 * time.Millisecond
	// GoalCatchupKeysPerS is the catch-up goal: at least it, and at least
	// GoalCatchupVsTrigger times the trigger's burst signups/s.
	GoalCatchupKeysPerS  = 10000
	GoalCatchupVsTrigger = 2
	// GoalBurstDrain is how soon after a burst every key must be made.
	GoalBurstDrain = 2 * time.Second
	// GoalNoticesPerS is the webhook notice catch-up goal: at least it.
	GoalNoticesPerS = 5000
	// GoalCPUPerKey is the worker CPU goal per key (steady phase): at most.
	GoalCPUPerKey = 100 * time.Microsecond
	// GoalSteadyRSS is the memory goal: steady RSS at most it.
	GoalSteadyRSS = 64 << 20
)

// Key latency methods (Report.KeyLatencyMethod).
const (
	// MethodCommitTimestamps: both commits' timestamps, from
	// pg_xact_commit_timestamp of the rows' xmin (track_commit_timestamp=on).
	MethodCommitTimestamps = "commit_timestamps"
	// MethodCreatedAt: the rows' created_at, both transactions' start times
	// (track_commit_timestamp=off on a given server); an approximation.
	MethodCreatedAt = "created_at"
)

// Report is the result of a run. Its JSON form (WriteJSON) is meant for
// scripts: the field names are stable. Figures that were not measured (a
// scenario not run, a worker figure for a scenario without one) are null.
type Report struct {
	KeyworkerVersion string     `json:"keyworker_version,omitempty"`
	StartedAt        time.Time  `json:"started_at"`
	ElapsedS         float64    `json:"elapsed_s"`
	Machine          Machine    `json:"machine"`
	Postgres         Postgres   `json:"postgres"`
	Parameters       Parameters `json:"parameters"`
	// KeyLatencyMethod is MethodCommitTimestamps or MethodCreatedAt.
	KeyLatencyMethod string     `json:"key_latency_method"`
	Scenarios        []Scenario `json:"scenarios"`

	// PrimaryScenario is the keyworker scenario the headline figures below
	// come from: logical (the default mode), else listen.
	PrimaryScenario string `json:"primary_scenario,omitempty"`
	// KeyLatencyMS is the primary scenario's signup-to-key latency in the
	// steady phase (the burst phase when there is none).
	KeyLatencyMS *Latency `json:"key_latency_ms"`
	// CatchupKeysPerS is the primary scenario's catch-up rate.
	CatchupKeysPerS *float64 `json:"catchup_keys_per_s"`
	// CatchupNoticesPerS is the primary scenario's webhook notice rate in
	// the catch-up.
	CatchupNoticesPerS *float64 `json:"catchup_notices_per_s"`
	// BurstDrainS is how long after the primary scenario's burst its last
	// key was made.
	BurstDrainS *float64 `json:"burst_drain_s"`
	// WorkerCPUMSPerKey is the primary scenario's worker CPU per key in the
	// steady phase.
	WorkerCPUMSPerKey *float64 `json:"worker_cpu_ms_per_key"`
	// WorkerPeakRSSBytes is the primary scenario's worker peak RSS, over
	// the whole run and the catch-up.
	WorkerPeakRSSBytes *int64 `json:"worker_peak_rss_bytes"`
	// WorkerSteadyRSSBytes is the largest RSS sampled during the primary
	// scenario's steady phase.
	WorkerSteadyRSSBytes *int64 `json:"worker_steady_rss_bytes"`
	// WorkerCPUS is the primary scenario's worker CPU time, start to exit,
	// both phases (the catch-up process not included).
	WorkerCPUS *float64 `json:"worker_cpu_s"`

	Goals []Goal   `json:"goals"`
	Notes []string `json:"notes,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	Cores     int    `json:"cores"`
	CPUModel  string `json:"cpu_model,omitempty"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	GoVersion string `json:"go_version"`
}

// Postgres describes the server.
type Postgres struct {
	Version string `json:"version"`
	// Server is "throwaway" (started by the bench) or "given"
	// (--database-url).
	Server   string            `json:"server"`
	Settings map[string]string `json:"settings"`
}

// Parameters are the run's settings after defaults.
type Parameters struct {
	Clients   int      `json:"clients"`
	Rate      int      `json:"rate"`
	DurationS float64  `json:"duration_s"`
	PhaseS    float64  `json:"phase_s"`
	WarmupS   float64  `json:"warmup_s"`
	Backlog   int      `json:"backlog"`
	Rounds    int      `json:"rounds"`
	Scenarios []string `json:"scenarios"`
}

// Scenario is one scenario's results.
type Scenario struct {
	// Name is none, trigger, logical or listen.
	Name string `json:"name"`
	// SignupTPS is the signups/s accepted in the burst phase (unthrottled);
	// with several rounds, the median, and SignupTPSMin and SignupTPSMax
	// the range (one round: all three equal).
	SignupTPS    float64 `json:"signup_tps"`
	SignupTPSMin float64 `json:"signup_tps_min"`
	SignupTPSMax float64 `json:"signup_tps_max"`
	// SignupP50MS and SignupP99MS are signup latencies (INSERT sent to
	// COMMIT returned) in SignupLatencyPhase: the steady phase, or the burst
	// phase when there is none.
	SignupP50MS        float64 `json:"signup_p50_ms"`
	SignupP99MS        float64 `json:"signup_p99_ms"`
	SignupLatencyPhase string  `json:"signup_latency_phase"`
	// VsNone and VsTrigger divide this scenario's figures by theirs.
	VsNone    *Ratio `json:"vs_none"`
	VsTrigger *Ratio `json:"vs_trigger"`
	// KeyLatencyMS is signup commit to key commit in SignupLatencyPhase;
	// null for none, all zero for the trigger (same transaction).
	KeyLatencyMS *Latency `json:"key_latency_ms"`
	// CatchupKeysPerS is Catchup.KeysPerS (the median over rounds); null
	// without a catch-up.
	CatchupKeysPerS *float64 `json:"catchup_keys_per_s"`
	// Users and Keys count the database's users and those with a key at the
	// end; KeysMissing is users without one (it should be 0). Summed over
	// rounds.
	Users       int `json:"users"`
	Keys        int `json:"keys"`
	KeysMissing int `json:"keys_missing"`

	Burst   *Phase   `json:"burst"`
	Steady  *Phase   `json:"steady"`
	Catchup *Catchup `json:"catchup"`
	Worker  *Worker  `json:"worker"`

	// Rounds holds every round's own record when there were several: the
	// figures above are medians over them, and Burst, Steady, Catchup and
	// Worker's CPU come from the median round by burst signups/s. Worker's
	// memory figures are the largest of any round.
	Rounds []Scenario `json:"rounds,omitempty"`
}

// Ratio compares a scenario with another.
type Ratio struct {
	SignupTPS float64 `json:"signup_tps"`
	SignupP99 float64 `json:"signup_p99"`
}

// Phase is one load phase of a scenario.
type Phase struct {
	// TargetRate is the signups/s asked for; 0 is unthrottled.
	TargetRate int     `json:"target_rate"`
	MeasuredS  float64 `json:"measured_s"`
	// Signups committed inside the measured window, and per second.
	Signups         int     `json:"signups"`
	SignupTPS       float64 `json:"signup_tps"`
	SignupLatencyMS Latency `json:"signup_latency_ms"`
	Errors          int     `json:"errors"`
	FirstError      string  `json:"first_error,omitempty"`
	// MachineCPUBusyPct is the share of all cores busy in the window.
	MachineCPUBusyPct *float64 `json:"machine_cpu_busy_pct"`
	// KeyLatencyMS covers the window's signups.
	KeyLatencyMS *Latency `json:"key_latency_ms"`
	// DrainS is how long after the load stopped the last key committed.
	DrainS *float64 `json:"drain_s"`
	// WorkerCPUS is the worker's CPU time from the phase's start until its
	// keys were made; WorkerCPUMSPerKey divides it by the phase's signups.
	WorkerCPUS        *float64 `json:"worker_cpu_s"`
	WorkerCPUMSPerKey *float64 `json:"worker_cpu_ms_per_key"`
	// WorkerMaxRSSBytes is the largest RSS sampled in the window.
	WorkerMaxRSSBytes *int64 `json:"worker_max_rss_bytes"`
}

// Catchup is the backlog test: signups made while the worker was stopped,
// then the time from starting it until the last of their keys committed.
type Catchup struct {
	Backlog int `json:"backlog"`
	// LoadS is how long inserting the backlog took (not measured further).
	LoadS float64 `json:"load_s"`
	// Seconds runs from starting the worker process (start-up included)
	// to the last backlog key's commit.
	Seconds  float64 `json:"seconds"`
	KeysPerS float64 `json:"keys_per_s"`
	// WorkerReadyS is how long the worker took to answer /readyz.
	WorkerReadyS float64 `json:"worker_ready_s"`
	// SignupsViaSource is the worker's keyworker_signups_captured_total
	// (read from the slot, or from listen mode's catch-up scans and
	// notifications); FoundByReconcile is keyworker_reconcile_found_total
	// (the leader's start-up reconcile). A user found both ways gets one job.
	SignupsViaSource float64 `json:"signups_via_source"`
	FoundByReconcile float64 `json:"found_by_reconcile"`
	KeysMissing      int     `json:"keys_missing"`
	WorkerCPUS       float64 `json:"worker_cpu_s"`
	WorkerPeakRSS    int64   `json:"worker_peak_rss_bytes"`
	// Notices is how many distinct webhook notices (webhook-id) a local
	// receiver got; NoticesS runs from starting the worker to the last of
	// them, and NoticesPerS is Notices over NoticesS.
	Notices     int     `json:"notices"`
	NoticesS    float64 `json:"notices_s"`
	NoticesPerS float64 `json:"notices_per_s"`
}

// Worker is the worker process's account for a scenario.
type Worker struct {
	// CPUS is user+system CPU time of the process that ran both phases,
	// from start to exit.
	CPUS float64 `json:"cpu_s"`
	// PeakRSSBytes is the peak resident set (the kernel's maxrss) over that
	// process and the catch-up's.
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
	// SteadyRSSBytes is the largest RSS sampled in the steady phase.
	SteadyRSSBytes *int64 `json:"steady_rss_bytes"`
	// LogLines counts the lines it logged at warn or error level.
	LogLines int `json:"log_lines"`
}

// Goal is one of the goals and where the run stands against it.
type Goal struct {
	Goal     string   `json:"goal"`
	Scenario string   `json:"scenario"`
	Target   float64  `json:"target"`
	Value    *float64 `json:"value"`
	Measured string   `json:"measured"`
	// Met is null when the run did not measure it.
	Met  *bool  `json:"met"`
	Note string `json:"note,omitempty"`
}

// WriteJSON writes the report as one indented JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *Report) scenario(name string) *Scenario {
	for i := range r.Scenarios {
		if r.Scenarios[i].Name == name {
			return &r.Scenarios[i]
		}
	}
	return nil
}

// finish fills the ratios, the headline figures and the goals.
func (r *Report) finish() {
	none, trig := r.scenario(ScenarioNone), r.scenario(ScenarioTrigger)
	ratio := func(sc, base *Scenario) *Ratio {
		if base == nil || base.SignupTPS == 0 || base.SignupP99MS == 0 {
			return nil
		}
		return &Ratio{SignupTPS: round(sc.SignupTPS/base.SignupTPS, 3), SignupP99: round(sc.SignupP99MS/base.SignupP99MS, 3)}
	}
	for i := range r.Scenarios {
		sc := &r.Scenarios[i]
		sc.VsNone, sc.VsTrigger = ratio(sc, none), ratio(sc, trig)
	}

	primary := r.scenario(ScenarioLogical)
	if primary == nil {
		primary = r.scenario(ScenarioListen)
	}
	if primary != nil {
		r.PrimaryScenario = primary.Name
		r.KeyLatencyMS = primary.KeyLatencyMS
		r.CatchupKeysPerS = primary.CatchupKeysPerS
		if c := primary.Catchup; c != nil && c.Notices > 0 {
			r.CatchupNoticesPerS = ptr(c.NoticesPerS)
		}
		if primary.Burst != nil {
			r.BurstDrainS = primary.Burst.DrainS
		}
		if primary.Steady != nil {
			r.WorkerCPUMSPerKey = primary.Steady.WorkerCPUMSPerKey
		}
		if w := primary.Worker; w != nil {
			r.WorkerPeakRSSBytes = &w.PeakRSSBytes
			r.WorkerSteadyRSSBytes = w.SteadyRSSBytes
			r.WorkerCPUS = &w.CPUS
		}
	}
	r.Goals = r.goals(trig)
}

func (r *Report) goals(trig *Scenario) []Goal {
	var goals []Goal
	p := r.Parameters
	for _, name := range []string{ScenarioLogical, ScenarioListen} {
		sc := r.scenario(name)
		if sc == nil {
			continue
		}

		g := Goal{Goal: fmt.Sprintf("signup throughput at least the trigger's at %d clients", GoalClients), Scenario: name, Target: 1}
		if trig != nil && sc.VsTrigger != nil {
			g.Value = ptr(sc.VsTrigger.SignupTPS)
			g.Met = ptr(sc.VsTrigger.SignupTPS >= 1)
			g.Measured = fmt.Sprintf("%.0f vs %.0f signups/s (%.2f×)", sc.SignupTPS, trig.SignupTPS, sc.VsTrigger.SignupTPS)
			if p.Rounds > 1 {
				g.Measured = fmt.Sprintf("%.0f (%.0f–%.0f) vs %.0f (%.0f–%.0f) signups/s (%.2f×)", sc.SignupTPS, sc.SignupTPSMin, sc.SignupTPSMax,
					trig.SignupTPS, trig.SignupTPSMin, trig.SignupTPSMax, sc.VsTrigger.SignupTPS)
			}
			if p.Clients != GoalClients {
				g.Note = fmt.Sprintf("measured at %d clients", p.Clients)
			}
		} else {
			g.Measured = "not measured: the trigger scenario did not run"
		}
		goals = append(goals, g)

		g = Goal{Goal: fmt.Sprintf("signup-to-key p99 at most %d ms at %d signups/s", GoalKeyP99.Milliseconds(), GoalRate), Scenario: name, Target: float64(GoalKeyP99.Milliseconds())}
		if sc.KeyLatencyMS != nil && sc.KeyLatencyMS.N > 0 {
			g.Value = ptr(sc.KeyLatencyMS.P99)
			g.Met = ptr(sc.KeyLatencyMS.P99 <= float64(GoalKeyP99.Milliseconds()))
			where := "under an unthrottled burst"
			if sc.Steady != nil {
				where = fmt.Sprintf("at %.0f signups/s", sc.Steady.SignupTPS)
			}
			g.Measured = fmt.Sprintf("p99 %.1f ms %s (p50 %.1f, max %.1f)", sc.KeyLatencyMS.P99, where, sc.KeyLatencyMS.P50, sc.KeyLatencyMS.Max)
			switch {
			case sc.Steady == nil:
				g.Note = "no steady phase"
			case p.Rate != GoalRate:
				g.Note = fmt.Sprintf("measured at --rate %d", p.Rate)
			case sc.Steady.SignupTPS < 0.95*float64(p.Rate):
				g.Note = fmt.Sprintf("the load did not reach %d signups/s", p.Rate)
			}
		} else {
			g.Measured = "not measured"
		}
		goals = append(goals, g)

		if name == ScenarioListen {
			goals = append(goals, r.listenGoals(sc, trig)...)
		}

		g = Goal{Goal: fmt.Sprintf("every key within %s of the burst's end", GoalBurstDrain), Scenario: name, Target: GoalBurstDrain.Seconds()}
		if sc.Burst != nil && sc.Burst.DrainS != nil {
			g.Value = ptr(*sc.Burst.DrainS)
			g.Met = ptr(*sc.Burst.DrainS <= GoalBurstDrain.Seconds() && sc.KeysMissing == 0)
			g.Measured = fmt.Sprintf("last key %.2f s after the load stopped", *sc.Burst.DrainS)
		} else {
			g.Measured = "not measured"
		}
		goals = append(goals, g)

		g = Goal{Goal: fmt.Sprintf("catch-up at least %d keys/s and %d× the trigger's burst", GoalCatchupKeysPerS, GoalCatchupVsTrigger), Scenario: name, Target: GoalCatchupKeysPerS}
		if c := sc.Catchup; c != nil && sc.CatchupKeysPerS != nil {
			g.Value = ptr(*sc.CatchupKeysPerS)
			met := *sc.CatchupKeysPerS >= GoalCatchupKeysPerS && sc.KeysMissing == 0
			g.Measured = fmt.Sprintf("%.0f keys/s (%d backlog, from starting the worker)", *sc.CatchupKeysPerS, c.Backlog)
			if trig != nil && trig.SignupTPS > 0 {
				vs := *sc.CatchupKeysPerS / trig.SignupTPS
				met = met && vs >= GoalCatchupVsTrigger
				g.Measured += fmt.Sprintf(", %.2f× the trigger's %.0f signups/s", vs, trig.SignupTPS)
			}
			g.Met = ptr(met)
			if sc.KeysMissing > 0 {
				g.Note = fmt.Sprintf("%d users got no key", sc.KeysMissing)
			}
		} else {
			g.Measured = "not measured: no backlog"
		}
		goals = append(goals, g)

		g = Goal{Goal: fmt.Sprintf("webhook notices at least %d/s in the catch-up", GoalNoticesPerS), Scenario: name, Target: GoalNoticesPerS}
		if c := sc.Catchup; c != nil && c.Notices > 0 {
			g.Value = ptr(c.NoticesPerS)
			g.Met = ptr(c.NoticesPerS >= GoalNoticesPerS && c.Notices >= c.Backlog)
			g.Measured = fmt.Sprintf("%d notices in %.2f s = %.0f/s", c.Notices, c.NoticesS, c.NoticesPerS)
			if c.Notices < c.Backlog {
				g.Note = fmt.Sprintf("%d of %d notices arrived", c.Notices, c.Backlog)
			}
		} else {
			g.Measured = "not measured: no backlog"
		}
		goals = append(goals, g)

		g = Goal{Goal: fmt.Sprintf("worker CPU at most %.1f ms per key", float64(GoalCPUPerKey)/float64(time.Millisecond)), Scenario: name, Target: float64(GoalCPUPerKey) / float64(time.Millisecond)}
		if sc.Steady != nil && sc.Steady.WorkerCPUMSPerKey != nil {
			g.Value = ptr(*sc.Steady.WorkerCPUMSPerKey)
			g.Met = ptr(*sc.Steady.WorkerCPUMSPerKey <= float64(GoalCPUPerKey)/float64(time.Millisecond))
			g.Measured = fmt.Sprintf("%.3f ms per key in the steady phase", *sc.Steady.WorkerCPUMSPerKey)
			if c := sc.Catchup; c != nil && c.Backlog > 0 && c.WorkerCPUS > 0 {
				g.Measured += fmt.Sprintf(" (%.3f in the catch-up)", c.WorkerCPUS*1000/float64(c.Backlog))
			}
		} else {
			g.Measured = "not measured: no steady phase"
		}
		goals = append(goals, g)

		g = Goal{Goal: fmt.Sprintf("worker memory at most %d MiB steady", GoalSteadyRSS>>20), Scenario: name, Target: GoalSteadyRSS >> 20}
		if w := sc.Worker; w != nil && w.SteadyRSSBytes != nil {
			g.Value = ptr(mib(*w.SteadyRSSBytes))
			g.Met = ptr(*w.SteadyRSSBytes <= GoalSteadyRSS)
			g.Measured = fmt.Sprintf("%.1f MiB in the steady phase (peak %.1f MiB)", mib(*w.SteadyRSSBytes), mib(w.PeakRSSBytes))
		} else {
			g.Measured = "not measured: no steady phase, or /proc unreadable"
		}
		goals = append(goals, g)
	}
	if p.Rounds > 1 {
		for i := range goals {
			if goals[i].Met != nil {
				goals[i].Measured += fmt.Sprintf(", median of %d rounds", p.Rounds)
			}
		}
	}
	return goals
}

// GoalSteadyP99VsTrigger is the trigger path's signup latency goal
// (issue 12): signup p99 in the steady phase at most this times the seed
// trigger's.
const GoalSteadyP99VsTrigger = 1.5

// listenGoals are the trigger path's goals beyond the common ones (issue
// 12): steady signup p99 against the trigger's, and a catch-up as fast as
// logical mode's.
func (r *Report) listenGoals(sc, trig *Scenario) []Goal {
	out := []Goal{steadyP99Goal("", sc, trig)}
	// The same two signup goals for the capture alone (outbox scenario):
	// what the trigger path costs signups when the keys are made elsewhere
	// or later.
	if ob := r.scenario(ScenarioOutbox); ob != nil {
		g := Goal{Goal: fmt.Sprintf("capture alone: signup throughput at least the trigger's at %d clients", GoalClients), Scenario: ScenarioOutbox, Target: 1}
		if trig != nil && ob.VsTrigger != nil {
			g.Value, g.Met = ptr(ob.VsTrigger.SignupTPS), ptr(ob.VsTrigger.SignupTPS >= 1 && ob.KeysMissing == 0)
			g.Measured = fmt.Sprintf("%.0f vs %.0f signups/s (%.2f×)", ob.SignupTPS, trig.SignupTPS, ob.VsTrigger.SignupTPS)
		} else {
			g.Measured = "not measured: the trigger scenario did not run"
		}
		out = append(out, g, steadyP99Goal("capture alone: ", ob, trig))
	}
	g := Goal{Goal: "catch-up at least as fast as logical mode's", Scenario: ScenarioListen, Target: 1}
	if lg := r.scenario(ScenarioLogical); lg != nil && lg.CatchupKeysPerS != nil && sc.CatchupKeysPerS != nil && *lg.CatchupKeysPerS > 0 {
		vs := *sc.CatchupKeysPerS / *lg.CatchupKeysPerS
		g.Value, g.Met = ptr(vs), ptr(vs >= 1 && sc.KeysMissing == 0)
		g.Measured = fmt.Sprintf("%.0f vs %.0f keys/s (%.2f×)", *sc.CatchupKeysPerS, *lg.CatchupKeysPerS, vs)
	} else {
		g.Measured = "not measured: needs the logical scenario and a backlog"
	}
	return append(out, g)
}

// steadyP99Goal is the goal that sc's steady signup p99 is at most
// GoalSteadyP99VsTrigger times the trigger's; prefix starts its wording.
func steadyP99Goal(prefix string, sc, trig *Scenario) Goal {
	g := Goal{Goal: fmt.Sprintf("%ssignup p99 at %d signups/s at most %.1f× the trigger's", prefix, GoalRate, GoalSteadyP99VsTrigger),
		Scenario: sc.Name, Target: GoalSteadyP99VsTrigger}
	if trig == nil || trig.Steady == nil || sc.Steady == nil || trig.Steady.SignupLatencyMS.P99 <= 0 {
		g.Measured = "not measured: needs the trigger scenario and a steady phase"
		return g
	}
	vs := sc.Steady.SignupLatencyMS.P99 / trig.Steady.SignupLatencyMS.P99
	g.Value, g.Met = ptr(vs), ptr(vs <= GoalSteadyP99VsTrigger)
	g.Measured = fmt.Sprintf("p99 %.2f vs %.2f ms (%.2f×)", sc.Steady.SignupLatencyMS.P99, trig.Steady.SignupLatencyMS.P99, vs)
	return g
}

// WriteText writes the report as tables for a person.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	p := r.Parameters
	fmt.Fprintf(&b, "keyworker bench, %s (took %s)\n\n", r.StartedAt.Format(time.RFC3339), (time.Duration(r.ElapsedS) * time.Second).String())
	cpu := ""
	if r.Machine.CPUModel != "" {
		cpu = " (" + r.Machine.CPUModel + ")"
	}
	fmt.Fprintf(&b, "machine:   %d cores%s, %s/%s, %s; Postgres, the worker and the load generator share it\n", r.Machine.Cores, cpu, r.Machine.OS, r.Machine.Arch, r.Machine.GoVersion)
	s := r.Postgres.Settings
	fmt.Fprintf(&b, "postgres:  %s on a %s server; fsync=%s, full_page_writes=%s, synchronous_commit=%s (durable commits, as in production), shared_buffers=%s, max_wal_size=%s\n",
		r.Postgres.Version, r.Postgres.Server, s["fsync"], s["full_page_writes"], s["synchronous_commit"], s["shared_buffers"], s["max_wal_size"])
	steady := fmt.Sprintf(" and a steady phase at %d signups/s", p.Rate)
	if p.Rate == 0 {
		steady = ""
	}
	fmt.Fprintf(&b, "load:      %d clients, one signup (INSERT INTO auth.users) per transaction; each scenario on a fresh database runs a burst phase (unthrottled)%s, %s measured each after %s of warm-up, CHECKPOINT before each\n",
		p.Clients, steady, secs(p.PhaseS), secs(p.WarmupS))
	if p.Rounds > 1 {
		fmt.Fprintf(&b, "rounds:    the scenarios ran %d times in turn; figures are medians over the rounds (burst range: lowest–highest round)\n", p.Rounds)
	}
	method := "pg_xact_commit_timestamp of both rows' transactions (track_commit_timestamp=on): exact commit times on the server's clock"
	if r.KeyLatencyMethod == MethodCreatedAt {
		method = "created_at of both rows (track_commit_timestamp is off): transaction start times, an approximation"
	}
	fmt.Fprintf(&b, "key:       signup commit → key commit, from %s\n", method)
	if p.Backlog > 0 {
		fmt.Fprintf(&b, "catch-up:  %d signups (one transaction each) made while the worker is stopped; timed from starting it to the last key's commit\n", p.Backlog)
	}

	b.WriteString("\nSIGNUPS\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', tabwriter.AlignRight)
	header := "scenario\tburst signups/s\t×none\t×trigger\tburst p50 ms\tburst p99 ms\tsteady signups/s\tsteady p50 ms\tsteady p99 ms\tp99 ×none\tp99 ×trigger\terrors\t"
	if p.Rounds > 1 {
		header += "burst range\t"
	}
	fmt.Fprintln(tw, header)
	for _, sc := range r.Scenarios {
		row := []string{sc.Name, num(sc.SignupTPS, 0), ratioTPS(sc.VsNone), ratioTPS(sc.VsTrigger), "-", "-", "-", "-", "-", ratioP99(sc.VsNone), ratioP99(sc.VsTrigger), "0"}
		errs := 0
		if ph := sc.Burst; ph != nil {
			row[4], row[5] = num(ph.SignupLatencyMS.P50, 2), num(ph.SignupLatencyMS.P99, 2)
			errs += ph.Errors
		}
		if ph := sc.Steady; ph != nil {
			row[6], row[7], row[8] = num(ph.SignupTPS, 0), num(ph.SignupLatencyMS.P50, 2), num(ph.SignupLatencyMS.P99, 2)
			errs += ph.Errors
		}
		row[11] = fmt.Sprint(errs)
		if p.Rounds > 1 {
			row = append(row, num(sc.SignupTPSMin, 0)+"–"+num(sc.SignupTPSMax, 0))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	_ = tw.Flush()

	b.WriteString("\nKEYS\n")
	tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tusers\tmissing\tkey p50 ms\tkey p95 ms\tkey p99 ms\tkey max ms\tburst drain s\tcatch-up keys/s\tcatch-up notices/s\tworker CPU s\tCPU ms/key\tsteady RSS MiB\tpeak RSS MiB\t")
	for _, sc := range r.Scenarios {
		if sc.Name == ScenarioNone {
			continue
		}
		row := []string{sc.Name, fmt.Sprint(sc.Users), fmt.Sprint(sc.KeysMissing), "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-"}
		if l := sc.KeyLatencyMS; l != nil && l.N > 0 {
			row[3], row[4], row[5], row[6] = num(l.P50, 2), num(l.P95, 2), num(l.P99, 2), num(l.Max, 2)
		}
		if sc.Burst != nil && sc.Burst.DrainS != nil {
			row[7] = num(*sc.Burst.DrainS, 2)
		}
		if sc.CatchupKeysPerS != nil {
			row[8] = num(*sc.CatchupKeysPerS, 0)
		}
		if c := sc.Catchup; c != nil && c.Notices > 0 {
			row[9] = num(c.NoticesPerS, 0)
		}
		if wk := sc.Worker; wk != nil {
			row[10] = num(wk.CPUS, 2)
			row[13] = num(mib(wk.PeakRSSBytes), 1)
			if wk.SteadyRSSBytes != nil {
				row[12] = num(mib(*wk.SteadyRSSBytes), 1)
			}
		}
		if ph := sc.Steady; ph != nil && ph.WorkerCPUMSPerKey != nil {
			row[11] = num(*ph.WorkerCPUMSPerKey, 3)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	_ = tw.Flush()
	b.WriteString("key latency: steady phase (burst phase without one); trigger: 0 by construction, the key is written in the signup's transaction.\n")
	b.WriteString("burst drain: after the burst's load stopped, until its last key committed. worker CPU: the process that ran both phases; CPU ms/key: steady phase.\n")

	if len(r.Goals) > 0 {
		b.WriteString("\nGOALS (the batched pipeline, issue 11, and the trigger path, issue 12; 2 cores, Postgres and worker together)\n")
		tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "goal\tmode\tmeasured\tresult")
		for _, g := range r.Goals {
			res := "not measured"
			if g.Met != nil {
				res = "met"
				if !*g.Met {
					res = "NOT MET"
				}
			}
			if g.Note != "" {
				res += " (" + g.Note + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", g.Goal, g.Scenario, g.Measured, res)
		}
		_ = tw.Flush()
	}
	if len(r.Notes) > 0 {
		b.WriteString("\nNOTES\n")
		for _, n := range r.Notes {
			b.WriteString("- " + n + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func ratioTPS(r *Ratio) string {
	if r == nil {
		return "-"
	}
	return num(r.SignupTPS, 2)
}

func ratioP99(r *Ratio) string {
	if r == nil {
		return "-"
	}
	return num(r.SignupP99, 2)
}

func num(v float64, places int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return fmt.Sprintf("%.*f", places, v)
}

func secs(s float64) string {
	return (time.Duration(s * float64(time.Second))).String()
}

func mib(b int64) float64 { return round(float64(b)/(1<<20), 1) }

func ptr[T any](v T) *T { return &v }
