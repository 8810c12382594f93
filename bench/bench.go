package bench

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// drainStall is how long waiting for keys goes on without a new key before
// the bench records the missing ones and moves on.
const drainStall = time.Minute

// Run measures every configured scenario in turn, each on a fresh database,
// and returns the report. It removes every database (and the throwaway
// server) it made, also when it fails or ctx ends.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	say := func(format string, args ...any) { fmt.Fprintf(cfg.Progress, format+"\n", args...) }
	started := time.Now()

	if cfg.DatabaseURL == "" {
		say("▸ starting a throwaway PostgreSQL with durable commits (fsync, full_page_writes, synchronous_commit on) and track_commit_timestamp=on…")
	} else {
		say("▸ connecting to the given server…")
	}
	srv, err := startServer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	say("  %s", srv.describe())

	r := &Report{
		KeyworkerVersion: cfg.Version,
		StartedAt:        started.UTC().Truncate(time.Second),
		Machine: Machine{
			Cores:     runtime.NumCPU(),
			CPUModel:  cpuModel(),
			OS:        runtime.GOOS,
			Arch:      runtime.GOARCH,
			GoVersion: runtime.Version(),
		},
		Postgres: Postgres{Version: srv.version, Server: "given", Settings: srv.settings},
		Parameters: Parameters{
			Clients:   cfg.Clients,
			Rate:      cfg.Rate,
			DurationS: cfg.Duration.Seconds(),
			PhaseS:    cfg.phaseLength().Seconds(),
			WarmupS:   cfg.Warmup.Seconds(),
			Backlog:   cfg.Backlog,
			Rounds:    cfg.Rounds,
			Scenarios: cfg.Scenarios,
		},
		KeyLatencyMethod: MethodCreatedAt,
	}
	if srv.pg != nil {
		r.Postgres.Server = "throwaway"
	}
	if srv.commitTimestamps {
		r.KeyLatencyMethod = MethodCommitTimestamps
	}

	rounds := map[string][]Scenario{}
	for round := 1; round <= cfg.Rounds; round++ {
		if cfg.Rounds > 1 {
			say("▸ round %d of %d", round, cfg.Rounds)
		}
		for _, name := range cfg.Scenarios {
			sc, notes, err := runScenario(ctx, cfg, srv, name, say)
			if err != nil {
				return nil, fmt.Errorf("scenario %s: %w", name, err)
			}
			rounds[name] = append(rounds[name], *sc)
			for _, n := range notes {
				if cfg.Rounds > 1 {
					n = fmt.Sprintf("round %d: %s", round, n)
				}
				r.Notes = append(r.Notes, n)
			}
		}
	}
	for _, name := range cfg.Scenarios {
		r.Scenarios = append(r.Scenarios, mergeRounds(rounds[name]))
	}
	r.ElapsedS = round(time.Since(started).Seconds(), 1)
	r.finish()
	return r, nil
}

// runScenario measures one scenario on a database of its own.
func runScenario(ctx context.Context, cfg Config, srv *server, name string, say func(string, ...any)) (_ *Scenario, notes []string, err error) {
	say("▸ %s: creating a fresh Supabase-shaped database", name)
	db, err := srv.createDatabase(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if derr := db.drop(); derr != nil {
			say("  %v", derr)
		}
	}()
	if name == ScenarioTrigger {
		if err := db.installTrigger(ctx); err != nil {
			return nil, nil, err
		}
		say("  installed the seed trigger: pgcrypto, public.profiles, handle_new_user() SECURITY DEFINER, AFTER INSERT ON auth.users")
	}

	if name == ScenarioOutbox {
		w, err := startWorker(ctx, cfg.WorkerCommand, db, ScenarioListen, cfg.Progress)
		if err != nil {
			return nil, nil, err
		}
		if err := w.stop(); err != nil {
			return nil, nil, err
		}
		say("  the worker installed listen mode's trigger and outbox and stopped: signups pay for capture only, no key is made during the load")
	}

	var w *worker
	if name == ScenarioLogical || name == ScenarioListen {
		w, err = startWorker(ctx, cfg.WorkerCommand, db, name, cfg.Progress)
		if err != nil {
			return nil, nil, err
		}
		defer func() {
			if w != nil {
				_ = w.stop()
			}
		}()
		say("  worker running in %s mode (pid %d), ready after %s", name, w.cmd.Process.Pid, w.ready.Sub(w.started).Round(time.Millisecond))
	}

	cl, err := openClients(ctx, db.url, cfg.Clients)
	if err != nil {
		return nil, nil, err
	}
	defer cl.close()

	sc := &Scenario{Name: name}
	phaseLen := cfg.phaseLength()
	say("  burst: %d clients, unthrottled, %s (+%s warm-up)", cfg.Clients, phaseLen, cfg.Warmup)
	sc.Burst, err = runPhase(ctx, db, cl, w, name, phaseSpec{name: "burst", warmup: cfg.Warmup, measure: phaseLen}, say)
	if err != nil {
		return nil, nil, err
	}
	if cfg.Rate > 0 {
		say("  steady: %d signups/s over %d clients, %s (+%s warm-up)", cfg.Rate, cfg.Clients, phaseLen, cfg.Warmup)
		sc.Steady, err = runPhase(ctx, db, cl, w, name, phaseSpec{name: "steady", rate: cfg.Rate, warmup: cfg.Warmup, measure: phaseLen}, say)
		if err != nil {
			return nil, nil, err
		}
		if sc.Steady.SignupTPS < 0.95*float64(cfg.Rate) {
			notes = append(notes, fmt.Sprintf("%s: the steady phase reached %.0f of the %d signups/s asked for", name, sc.Steady.SignupTPS, cfg.Rate))
		}
	}
	cl.close()

	sc.SignupTPS = sc.Burst.SignupTPS
	latPhase := sc.Burst
	sc.SignupLatencyPhase = "burst"
	if sc.Steady != nil {
		latPhase = sc.Steady
		sc.SignupLatencyPhase = "steady"
	}
	sc.SignupP50MS, sc.SignupP99MS = latPhase.SignupLatencyMS.P50, latPhase.SignupLatencyMS.P99
	sc.SignupTPSMin, sc.SignupTPSMax = sc.SignupTPS, sc.SignupTPS
	sc.KeyLatencyMS = latPhase.KeyLatencyMS
	for _, ph := range []*Phase{sc.Burst, sc.Steady} {
		if ph != nil && ph.Errors > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d signups failed; the first: %s", name, ph.Errors, ph.FirstError))
		}
	}

	if w != nil {
		err := w.stop()
		sc.Worker = &Worker{CPUS: round(w.cpu.Seconds(), 2), PeakRSSBytes: w.maxRSS, LogLines: w.logLines()}
		if sc.Steady != nil {
			sc.Worker.SteadyRSSBytes = sc.Steady.WorkerMaxRSSBytes
		}
		w = nil
		if err != nil {
			return nil, nil, err
		}
	}

	if name == ScenarioOutbox {
		// Every signup of the load waits in the outbox: the worker makes
		// their keys now.
		w, err := startWorker(ctx, cfg.WorkerCommand, db, ScenarioListen, cfg.Progress)
		if err != nil {
			return nil, nil, err
		}
		start := time.Now()
		done, werr := waitKeys(ctx, db, ScenarioListen, w, say)
		if serr := w.stop(); werr == nil {
			werr = serr
		}
		if werr != nil {
			return nil, nil, werr
		}
		say("  then the worker made every key the outbox held in %.2f s", done.Sub(start).Seconds())
	}
	if sc.Users, sc.Keys, err = db.counts(ctx, name); err != nil {
		return nil, nil, err
	}
	if sc.KeysMissing, err = db.missingKeys(ctx, name); err != nil {
		return nil, nil, err
	}
	if sc.KeysMissing > 0 {
		notes = append(notes, fmt.Sprintf("%s: %d of %d users have no key", name, sc.KeysMissing, sc.Users))
	}

	if (name == ScenarioLogical || name == ScenarioListen) && cfg.Backlog > 0 {
		c, cw, err := catchUp(ctx, cfg, db, name, say)
		if err != nil {
			return nil, nil, err
		}
		sc.Catchup = c
		sc.CatchupKeysPerS = ptr(c.KeysPerS)
		sc.Worker.PeakRSSBytes = max(sc.Worker.PeakRSSBytes, c.WorkerPeakRSS)
		sc.Worker.LogLines += cw
		if sc.Users, sc.Keys, err = db.counts(ctx, name); err != nil {
			return nil, nil, err
		}
		if sc.KeysMissing, err = db.missingKeys(ctx, name); err != nil {
			return nil, nil, err
		}
		if c.KeysMissing > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d backlog users got no key", name, c.KeysMissing))
		}
	}
	return sc, notes, nil
}

// runPhase runs one load phase and, when the scenario makes keys, waits
// for them and reads their latency.
func runPhase(ctx context.Context, db *database, cl *clients, w *worker, scenario string, spec phaseSpec, say func(string, ...any)) (*Phase, error) {
	db.checkpoint(ctx)
	var cpu0 time.Duration
	if w != nil {
		cpu0 = w.cpuTime()
	}
	// The machine's CPU is read when the warm-up and the measured window
	// end, not when the last in-flight signup returns.
	mcCh := make(chan machineCPU, 2)
	readMC := func() {
		m, _ := readMachineCPU()
		mcCh <- m
	}
	warm := time.AfterFunc(spec.warmup, readMC)
	end := time.AfterFunc(spec.warmup+spec.measure, readMC)
	res, err := cl.run(ctx, spec)
	firedWarm, firedEnd := !warm.Stop(), !end.Stop()
	if err != nil {
		return nil, err
	}
	var mc0, mc1 machineCPU
	if firedWarm && firedEnd {
		mc0, mc1 = <-mcCh, <-mcCh
	}
	loadEnd := time.Now()
	p := &Phase{
		TargetRate:      spec.rate,
		MeasuredS:       round(spec.measure.Seconds(), 3),
		Signups:         len(res.ids),
		SignupTPS:       round(res.tps(), 1),
		SignupLatencyMS: summarize(durationsMS(res.lats)),
		Errors:          res.errors,
		FirstError:      res.firstErr,
	}
	if mc0.total > 0 && mc1.total > 0 {
		p.MachineCPUBusyPct = ptr(busyPercent(mc0, mc1))
	}
	if w != nil {
		if err := w.exitedEarly(); err != nil {
			return nil, err
		}
		if rss := w.sampler.maxBetween(res.measureFrom, res.end); rss > 0 {
			p.WorkerMaxRSSBytes = ptr(rss)
		}
	}
	line := fmt.Sprintf("    %.0f signups/s, signup p50 %.2f ms, p99 %.2f ms", p.SignupTPS, p.SignupLatencyMS.P50, p.SignupLatencyMS.P99)

	// The outbox scenario makes its keys after the load, not during it.
	if keyTable(scenario) != "" && scenario != ScenarioOutbox {
		done, err := waitKeys(ctx, db, scenario, w, say)
		if err != nil {
			return nil, err
		}
		if w != nil {
			p.DrainS = ptr(round(max(done.Sub(loadEnd), 0).Seconds(), 3))
			if cpu0 >= 0 {
				if cpu1 := w.cpuTime(); cpu1 >= 0 {
					p.WorkerCPUS = ptr(round((cpu1 - cpu0).Seconds(), 2))
					if res.committed > 0 {
						p.WorkerCPUMSPerKey = ptr(round(float64(cpu1-cpu0)/float64(time.Millisecond)/float64(res.committed), 3))
					}
				}
			}
			// Notices are the rest of the phase's work: let them finish so
			// the next phase starts on a quiet worker.
			if err := waitJobsIdle(ctx, db, w); err != nil {
				return nil, err
			}
		}
		lat, err := db.keyLatencies(ctx, scenario, res.ids)
		if err != nil {
			return nil, err
		}
		l := summarize(lat)
		p.KeyLatencyMS = &l
		line += fmt.Sprintf("; key p50 %.2f ms, p99 %.2f ms, max %.2f ms", l.P50, l.P99, l.Max)
		if p.DrainS != nil {
			line += fmt.Sprintf("; last key %.2f s after the load stopped", *p.DrainS)
		}
	}
	say("%s", line)
	return p, nil
}

// waitKeys waits until every user has a key, and returns when the last key
// committed (on our clock). It gives up, without an error, once no key has
// appeared for drainStall: the caller counts what is missing.
func waitKeys(ctx context.Context, db *database, scenario string, w *worker, say func(string, ...any)) (time.Time, error) {
	lastKeys, lastProgress := -1, time.Now()
	nextSay := time.Now().Add(5 * time.Second)
	for {
		users, keys, err := db.counts(ctx, scenario)
		if err != nil {
			return time.Time{}, err
		}
		seen := time.Now()
		if keys >= users {
			age, err := db.lastKeyAge(ctx, scenario)
			if err != nil {
				return time.Time{}, err
			}
			return seen.Add(-age), nil
		}
		if keys != lastKeys {
			lastKeys, lastProgress = keys, seen
		} else if seen.Sub(lastProgress) > drainStall {
			say("    no new key for %s: %d of %d users have none; moving on", drainStall, users-keys, users)
			return seen, nil
		}
		if seen.After(nextSay) {
			say("    waiting for keys: %d of %d users have one", keys, users)
			nextSay = seen.Add(5 * time.Second)
		}
		if w != nil {
			if err := w.exitedEarly(); err != nil {
				return time.Time{}, err
			}
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return time.Time{}, err
		}
	}
}

// waitJobsIdle waits until River has no job waiting or running, for at
// most drainStall.
func waitJobsIdle(ctx context.Context, db *database, w *worker) error {
	deadline := time.Now().Add(drainStall)
	for time.Now().Before(deadline) {
		n, err := db.pendingJobs(ctx)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if err := w.exitedEarly(); err != nil {
			return err
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// catchUp runs after the scenario's worker stopped: it inserts the
// backlog, starts a new worker and times it until every user has a key. It
// returns the catch-up and how many lines the worker logged.
func catchUp(ctx context.Context, cfg Config, db *database, mode string, say func(string, ...any)) (*Catchup, int, error) {
	if mode == ScenarioLogical {
		if err := db.waitSlotReleased(ctx); err != nil {
			return nil, 0, err
		}
	}
	say("  catch-up: worker stopped; inserting %d signups, one transaction each…", cfg.Backlog)
	t0 := time.Now()
	if err := db.insertBacklog(ctx, cfg.Backlog); err != nil {
		return nil, 0, err
	}
	c := &Catchup{Backlog: cfg.Backlog, LoadS: round(time.Since(t0).Seconds(), 2)}
	users, keys, err := db.counts(ctx, mode)
	if err != nil {
		return nil, 0, err
	}
	say("    inserted in %.2f s; %d users without a key; starting the worker", c.LoadS, users-keys)

	// Notices go to a local webhook receiver here (the phases use the log
	// sink), to time their delivery too.
	hook, err := startReceiver()
	if err != nil {
		return nil, 0, err
	}
	defer hook.close()
	secret, err := webhookSecret()
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	w, err := startWorker(ctx, cfg.WorkerCommand, db, mode, cfg.Progress,
		"KEYWORKER_WEBHOOK_URL="+hook.url, "KEYWORKER_WEBHOOK_SECRET="+secret)
	if err != nil {
		return nil, 0, err
	}
	defer func() {
		if w != nil {
			_ = w.stop()
		}
	}()
	c.WorkerReadyS = round(w.ready.Sub(w.started).Seconds(), 3)
	done, err := waitKeys(ctx, db, mode, w, say)
	if err != nil {
		return nil, 0, err
	}
	c.Seconds = round(done.Sub(start).Seconds(), 3)
	if c.Seconds > 0 {
		c.KeysPerS = round(float64(users-keys)/done.Sub(start).Seconds(), 0)
	}
	got, last, err := hook.waitNotices(ctx, users-keys)
	if err != nil {
		return nil, 0, err
	}
	c.Notices = got
	if got > 0 {
		c.NoticesS = round(last.Sub(start).Seconds(), 3)
		c.NoticesPerS = round(float64(got)/last.Sub(start).Seconds(), 0)
	}
	if m, err := w.metrics(ctx); err == nil {
		c.SignupsViaSource = m["keyworker_signups_captured_total"]
		c.FoundByReconcile = m["keyworker_reconcile_found_total"]
	}
	if c.KeysMissing, err = db.missingKeys(ctx, mode); err != nil {
		return nil, 0, err
	}
	err = w.stop()
	c.WorkerCPUS = round(w.cpu.Seconds(), 2)
	c.WorkerPeakRSS = w.maxRSS
	lines := w.logLines()
	w = nil
	if err != nil {
		return nil, 0, err
	}
	say("    %d keys in %.2f s from starting the worker = %.0f keys/s (ready after %.2f s; %.0f via the %s source, %.0f found by reconcile)",
		users-keys, c.Seconds, c.KeysPerS, c.WorkerReadyS, c.SignupsViaSource, mode, c.FoundByReconcile)
	say("    %d webhook notices in %.2f s from starting the worker = %.0f notices/s", c.Notices, c.NoticesS, c.NoticesPerS)
	return c, lines, nil
}

// cpuModel is the first "model name" of /proc/cpuinfo, or "".
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// mergeRounds combines one scenario's rounds: each headline figure is the
// median over the rounds (signups/s also with its range), counts are summed,
// memory is the largest; the phase, catch-up and worker details are those
// of the median round by burst signups/s, and every round is kept in Rounds.
func mergeRounds(rs []Scenario) Scenario {
	if len(rs) == 1 {
		return rs[0]
	}
	med := func(get func(Scenario) float64) float64 {
		var v []float64
		for _, sc := range rs {
			if x := get(sc); !math.IsNaN(x) {
				v = append(v, x)
			}
		}
		if len(v) == 0 {
			return 0
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return round((v[len(v)/2-1]+v[len(v)/2])/2, 2)
	}
	order := make([]int, len(rs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(rs[a].SignupTPS, rs[b].SignupTPS) })
	out := rs[order[(len(rs)-1)/2]]
	out.Rounds = slices.Clone(rs)
	out.SignupTPS = med(func(s Scenario) float64 { return s.SignupTPS })
	out.SignupTPSMin, out.SignupTPSMax = rs[order[0]].SignupTPS, rs[order[len(order)-1]].SignupTPS
	out.SignupP50MS = med(func(s Scenario) float64 { return s.SignupP50MS })
	out.SignupP99MS = med(func(s Scenario) float64 { return s.SignupP99MS })
	out.Users, out.Keys, out.KeysMissing = 0, 0, 0
	for _, sc := range rs {
		out.Users += sc.Users
		out.Keys += sc.Keys
		out.KeysMissing += sc.KeysMissing
	}
	if out.KeyLatencyMS != nil {
		l := Latency{}
		lat := func(get func(Latency) float64) float64 {
			return med(func(s Scenario) float64 {
				if s.KeyLatencyMS == nil {
					return math.NaN()
				}
				return get(*s.KeyLatencyMS)
			})
		}
		for _, sc := range rs {
			if sc.KeyLatencyMS != nil {
				l.N += sc.KeyLatencyMS.N
			}
		}
		l.P50 = lat(func(l Latency) float64 { return l.P50 })
		l.P95 = lat(func(l Latency) float64 { return l.P95 })
		l.P99 = lat(func(l Latency) float64 { return l.P99 })
		l.Max = lat(func(l Latency) float64 { return l.Max })
		out.KeyLatencyMS = &l
	}
	if out.CatchupKeysPerS != nil {
		out.CatchupKeysPerS = ptr(med(func(s Scenario) float64 {
			if s.CatchupKeysPerS == nil {
				return math.NaN()
			}
			return *s.CatchupKeysPerS
		}))
	}
	if out.Worker != nil {
		w := *out.Worker
		w.CPUS = med(func(s Scenario) float64 { return s.Worker.CPUS })
		w.LogLines = 0
		for _, sc := range rs {
			w.PeakRSSBytes = max(w.PeakRSSBytes, sc.Worker.PeakRSSBytes)
			if sc.Worker.SteadyRSSBytes != nil && (w.SteadyRSSBytes == nil || *sc.Worker.SteadyRSSBytes > *w.SteadyRSSBytes) {
				w.SteadyRSSBytes = sc.Worker.SteadyRSSBytes
			}
			w.LogLines += sc.Worker.LogLines
		}
		out.Worker = &w
	}
	return out
}
