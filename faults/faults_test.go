package faults

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyworker/keyworker/pgtemp"
)

// plan is how much of everything a run does.
type plan struct {
	name string
	// rate is signups per second.
	rate int
	// killSeries series of kills, kills per series, full check after
	// each series.
	killSeries, kills int
	// restarts are PostgreSQL restarts under the running worker.
	restarts []pgtemp.ShutdownMode
	// walSenders, slotDrops, hookFaults and smtpFaults count those faults.
	walSenders, slotDrops, hookFaults, smtpFaults int
	// streamAfter is how long signups go on after a fault (and while the
	// slot is missing) before the check.
	streamAfter time.Duration
	// settleTimeout bounds the wait for the pipeline to catch up, as long
	// as it keeps catching up (settle also fails after settleStall without
	// progress). A kill leaves the jobs it interrupted running until River
	// rescues them: one job timeout (jobTimeout) plus 15s and up to a rescuer
	// interval (30s) later.
	settleTimeout time.Duration
	// httpRevealsPerCheck, storeRevealsPerCheck: keys picked up per
	// check; the final check picks up every key left. finalScanKeys bounds
	// the final check's ScanForSecrets sample.
	httpRevealsPerCheck, storeRevealsPerCheck, finalScanKeys int
	// jobTimeout is the worker's KEYWORKER_JOB_TIMEOUT ("" for its
	// default, 1m). A shorter one shortens the wait for River to rescue
	// the jobs a killed worker was running, which is most of the small
	// version's time; it stays above the webhook timeout (10s), so timed-out
	// deliveries fail as they would in production.
	jobTimeout string
	// downs counts stretches of plan.downFor with no worker while signups
	// go on (it is killed first, so nothing is handed over in a shutdown).
	downs   int
	downFor time.Duration
	// listen adds a run in listen mode: one kill series, a fast and an
	// immediate restart, one webhook and one SMTP outage.
	listen bool
}

var smallPlan = plan{
	name:       "small",
	rate:       200,
	killSeries: 1, kills: 5,
	restarts:   []pgtemp.ShutdownMode{pgtemp.ShutdownFast, pgtemp.ShutdownImmediate},
	walSenders: 1, slotDrops: 1, hookFaults: 1, smtpFaults: 1,
	streamAfter: 2 * time.Second,
	downs:       1, downFor: 3 * time.Second,
	settleTimeout:       8 * time.Minute,
	jobTimeout:          "20s",
	httpRevealsPerCheck: 2, storeRevealsPerCheck: 20, finalScanKeys: 100,
}

var fullPlan = plan{
	name:       "full",
	rate:       300,
	killSeries: 3, kills: 5,
	restarts:   []pgtemp.ShutdownMode{pgtemp.ShutdownFast, pgtemp.ShutdownImmediate, pgtemp.ShutdownFast, pgtemp.ShutdownImmediate},
	walSenders: 2, slotDrops: 2, hookFaults: 2, smtpFaults: 2,
	streamAfter: 4 * time.Second,
	downs:       2, downFor: 5 * time.Second,
	settleTimeout:       10 * time.Minute,
	httpRevealsPerCheck: 2, storeRevealsPerCheck: 10, finalScanKeys: 150,
	listen: true,
}

// TestFaults runs the worker binary against a real PostgreSQL while
// signups stream in, breaks things, and checks after each fault that every
// eligible user has exactly one key, every key exactly one notice id, the
// reconciler finds nothing, no plaintext is anywhere, and the worker is
// healthy (see doc.go).
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite takes minutes; skipped with -short")
	}
	p := smallPlan
	switch v := os.Getenv("KEYWORKER_FAULTS"); v {
	case "", "small":
	case "full":
		p = fullPlan
	default:
		t.Fatalf("KEYWORKER_FAULTS=%q: use small (the default) or full", v)
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("KEYWORKER_FAULTS_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("KEYWORKER_FAULTS_SEED=%q is not an unsigned integer", v)
		}
	}
	t.Logf("%s version, seed %d (replay with KEYWORKER_FAULTS_SEED=%d), worker built with -race: %v", p.name, seed, seed, workerRace)

	modes := []string{"logical", "hosted"}
	if p.listen {
		modes = append(modes, "listen")
	}
	if v := os.Getenv("KEYWORKER_FAULTS_MODES"); v != "" {
		modes = strings.Split(v, ",")
	}
	for _, mode := range modes {
		switch mode {
		case "logical":
			t.Run("logical", func(t *testing.T) { runMode(t, "logical", p, seed) })
		case "listen":
			// No slot, no WAL sender; one kill series.
			lp := p
			lp.killSeries = 1
			lp.restarts = []pgtemp.ShutdownMode{pgtemp.ShutdownFast, pgtemp.ShutdownImmediate}
			lp.walSenders, lp.slotDrops, lp.hookFaults, lp.smtpFaults = 0, 0, 1, 1
			t.Run("listen", func(t *testing.T) { runMode(t, "listen", lp, seed+1) })
		case "hosted":
			t.Run("hosted", func(t *testing.T) { runMode(t, "hosted", hostedPlan(p), seed+2) })
		default:
			t.Fatalf("KEYWORKER_FAULTS_MODES names mode %q: use logical, listen, hosted, comma-separated", mode)
		}
	}
}

// hostedPlan is the run as hosted Supabase's postgres role, in auto mode
// (which chooses listen mode there): signups while it runs, while it is
// killed (one series) and while it is down, and a fast Postgres restart.
func hostedPlan(p plan) plan {
	hp := p
	hp.killSeries = 1
	hp.restarts = []pgtemp.ShutdownMode{pgtemp.ShutdownFast}
	hp.walSenders, hp.slotDrops, hp.hookFaults, hp.smtpFaults = 0, 0, 0, 0
	hp.downs = 1
	return hp
}

func runMode(t *testing.T, mode string, p plan, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x6b6579776f726b))
	r := newRig(t, mode, p, rng, seed)
	r.w.start(t)
	t.Logf("worker ready in %s", r.w.waitReady(t, 90*time.Second).Round(time.Millisecond))
	if mode == "hosted" {
		if n := r.count(`SELECT count(*) FROM keyworker.installation WHERE capture_mode = 'listen' AND capture_reason LIKE 'not\_publishable: %'`); n != 1 {
			t.Fatalf("as the hosted role, auto mode did not choose listen mode for want of a publication: %v",
				r.strings(`SELECT coalesce(capture_mode, '-') || ' ' || coalesce(capture_reason, '-') FROM keyworker.installation`))
		}
	}
	r.sw.start()

	r.phase("warm-up (no fault)", func() { time.Sleep(p.streamAfter) })
	for s := range p.killSeries {
		r.phase(fmt.Sprintf("kill -9 series %d (%d kills)", s+1, p.kills), r.killSeries)
	}
	for _, m := range p.restarts {
		r.phase(fmt.Sprintf("postgres restart (%s)", m), func() { r.restartPostgres(m) })
	}
	for i := range p.walSenders {
		r.phase(fmt.Sprintf("wal sender terminated (%d)", i+1), r.terminateWALSender)
	}
	for i := range p.slotDrops {
		r.phase(fmt.Sprintf("slot dropped while down (%d)", i+1), func() { r.dropSlot(i%2 == 1) })
	}
	for i := range p.hookFaults {
		r.phase(fmt.Sprintf("webhook failing and hanging (%d)", i+1), r.webhookFault)
	}
	for i := range p.smtpFaults {
		r.phase(fmt.Sprintf("SMTP server down (%d)", i+1), r.smtpFault)
	}
	for i := range p.downs {
		r.phase(fmt.Sprintf("worker down while signups commit (%d)", i+1), r.downWhileSignups)
	}
	r.phase("final", nil)
	r.sw.stop()
	r.summary()
}

// phase runs a fault while signups stream, lets signups go on until the
// worker takes them in again, pauses the streamer and checks.
func (r *rig) phase(name string, fault func()) {
	t := r.t
	t.Helper()
	res := phaseResult{name: name}
	start := time.Now()
	if fault != nil {
		fault()
	}
	res.fault = time.Since(start)
	final := fault == nil
	if !final {
		res.intake = r.waitIntake(name)
	}
	r.sw.pause()
	r.check(name, &res, final)
	if !final {
		r.sw.resume()
	}
	r.phases = append(r.phases, res)
	d := func(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }
	t.Logf("%-34s fault %6s  intake %6s  settle %6s  check %6s (reveal %s, ScanForSecrets %s, logs/notices/dump %s)  %6d eligible users, all with one key and notices",
		name, d(res.fault), d(res.intake), d(res.settle), d(res.check), d(res.reveal), d(res.scanDB), d(res.scanAll), res.users)
}

// waitIntake lets signups go on for plan.streamAfter and until this worker
// process has handed at least 20 new signups from its own listener to
// River: the intake works again, not just the reconciler.
func (r *rig) waitIntake(name string) time.Duration {
	r.t.Helper()
	start := time.Now()
	r.w.waitReady(r.t, 90*time.Second)
	from, err := r.w.captured()
	if err != nil {
		r.t.Fatalf("%s: %v", name, err)
	}
	waitFor(r.t, 90*time.Second, name+": the worker taking in new signups", func() (bool, string) {
		n, err := r.w.captured()
		if err != nil {
			return false, err.Error()
		}
		return n >= from+20 && time.Since(start) >= r.plan.streamAfter, fmt.Sprintf("%.0f signups captured since, want 20", n-from)
	})
	return time.Since(start)
}

// killSeries kills the worker with SIGKILL plan.kills times at random
// moments: mostly while it works (up to 3s after it became ready), at
// least once (and then one time in four) while it starts (migrations,
// slot, River's leader election). After each kill the quick check runs and
// the worker starts again.
func (r *rig) killSeries() {
	t := r.t
	t.Helper()
	startupKill := 1 + r.rng.IntN(max(r.plan.kills-1, 1))
	for i := range r.plan.kills {
		duringStartup := i == startupKill || i > 0 && r.rng.IntN(4) == 0
		var delay time.Duration
		if duringStartup {
			r.counts.startupKills++
			delay = time.Duration(10+r.rng.IntN(600)) * time.Millisecond
		} else {
			r.w.waitReady(t, 90*time.Second)
			delay = time.Duration(r.rng.Int64N(int64(3 * time.Second)))
		}
		time.Sleep(delay)
		r.w.kill(t)
		r.counts.kills++
		r.quickCheck(fmt.Sprintf("kill %d (%s after %s)", r.counts.kills, delay.Round(time.Millisecond), map[bool]string{true: "start", false: "ready"}[duringStartup]))
		r.w.start(t)
	}
	r.w.waitReady(t, 90*time.Second)
}

// downWhileSignups kills the worker, lets signups commit for
// plan.downFor with no worker at all, and starts it again: the slot (or
// the outbox) holds them.
func (r *rig) downWhileSignups() {
	t := r.t
	t.Helper()
	r.w.kill(t)
	r.counts.kills++
	time.Sleep(r.plan.downFor)
	r.w.start(t)
	r.w.waitReady(t, 90*time.Second)
}

// restartPostgres restarts the server under the running worker, which
// must ride it out without being restarted.
func (r *rig) restartPostgres(mode pgtemp.ShutdownMode) {
	t := r.t
	t.Helper()
	starts := r.w.starts
	oldPID := r.slotPID()
	ctx, cancel := ctxT()
	defer cancel()
	if err := server.Restart(ctx, mode); err != nil {
		t.Fatalf("restarting postgres (%s): %v", mode, err)
	}
	if mode == pgtemp.ShutdownFast {
		r.counts.pgFast++
	} else {
		r.counts.pgImmediate++
	}
	r.w.waitReady(t, 90*time.Second)
	if r.mode == "logical" {
		r.waitSlotTaken(oldPID)
	}
	if r.w.starts != starts || !r.w.running() {
		t.Fatal("the worker did not ride out the restart")
	}
}

// slotPID is the pid of the WAL sender holding the worker's slot, or 0.
func (r *rig) slotPID() int {
	if r.mode != "logical" {
		return 0
	}
	ctx, cancel := ctxT()
	defer cancel()
	var pid int
	_ = r.pool.QueryRow(ctx, `SELECT coalesce(max(active_pid), 0) FROM pg_replication_slots WHERE slot_name = 'keyworker'`).Scan(&pid)
	return pid
}

// waitSlotTaken waits until a WAL sender other than oldPID holds the slot.
func (r *rig) waitSlotTaken(oldPID int) {
	r.t.Helper()
	waitFor(r.t, 90*time.Second, "the worker to stream from its slot again", func() (bool, string) {
		pid := r.slotPID()
		return pid != 0 && pid != oldPID, fmt.Sprintf("slot held by pid %d (was %d)", pid, oldPID)
	})
}

// terminateWALSender ends the WAL sender serving the worker's slot.
func (r *rig) terminateWALSender() {
	t := r.t
	t.Helper()
	r.w.waitReady(t, 90*time.Second)
	pid := 0
	waitFor(t, 60*time.Second, "a WAL sender on the slot", func() (bool, string) {
		pid = r.slotPID()
		return pid != 0, "slot not active"
	})
	if n := r.count(`SELECT count(*) FROM (SELECT pg_terminate_backend($1)) t WHERE pg_terminate_backend`, pid); n != 1 {
		t.Fatalf("pg_terminate_backend(%d) did not terminate the WAL sender", pid)
	}
	r.counts.walSenders++
	r.waitSlotTaken(pid)
}

// dropSlot stops the worker (SIGTERM, or SIGKILL when kill is set), drops
// its slot, lets signups go on without it, and starts the worker again:
// it must recreate the slot and reconcile what it missed.
func (r *rig) dropSlot(kill bool) {
	t := r.t
	t.Helper()
	r.w.waitReady(t, 90*time.Second)
	if kill {
		r.w.kill(t)
		r.counts.kills++
	} else {
		r.w.stop(t)
	}
	waitFor(t, 60*time.Second, "the slot to be released", func() (bool, string) {
		return r.slotPID() == 0, "still active"
	})
	if n := r.count(`SELECT count(*) FROM (SELECT pg_drop_replication_slot('keyworker')) t`); n != 1 {
		t.Fatal("the slot was not dropped")
	}
	r.counts.slotDrops++
	time.Sleep(r.plan.streamAfter) // signups the slot will never see
	r.w.start(t)
	r.w.waitReady(t, 90*time.Second)
	if n := r.count(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'keyworker'`); n != 1 {
		t.Fatal("the worker did not recreate its slot")
	}
	if !strings.Contains(string(r.w.logSince(r.w.starts)), "REPLICATION SLOT MISSING") {
		t.Fatal("the worker recreated its slot without saying loudly that it was missing")
	}
}

// webhookFault makes the receiver hang for a moment (every request that
// arrives then is held past the sender's 10s timeout, which ties up every
// notice worker for that long), then answer 500 (and 503 with Retry-After)
// for a while. In this order most notices fail once, not twice, so River's
// backoff (1s, 16s, 81s, ...) stays short.
func (r *rig) webhookFault() {
	t := r.t
	t.Helper()
	before := r.hook.snapshot()
	timedOut := `SELECT count(*) FROM keyworker.key_events WHERE event = 'notify_failed' AND detail->>'sink' = 'webhook' AND detail->>'error' LIKE '%timed out%'`
	timeouts := r.count(timedOut)
	r.hook.mode.Store(hookHang)
	start := time.Now()
	waitFor(t, 60*time.Second, "the webhook receiver to hold requests", func() (bool, string) {
		s := r.hook.snapshot()
		return s.hung-before.hung >= 10 && time.Since(start) >= 1500*time.Millisecond, fmt.Sprintf("%d held", s.hung-before.hung)
	})
	r.hook.mode.Store(hookFail)
	start = time.Now()
	waitFor(t, 60*time.Second, "the webhook receiver to fail requests", func() (bool, string) {
		s := r.hook.snapshot()
		return s.failed-before.failed >= 20 && time.Since(start) >= 2*time.Second, fmt.Sprintf("%d failed", s.failed-before.failed)
	})
	r.hook.mode.Store(hookOK)
	waitFor(t, 60*time.Second, "the worker to give up on a held request", func() (bool, string) {
		return r.count(timedOut) > timeouts, "no timeout recorded yet"
	})
	r.counts.hookFaults++
}

// smtpFault stops the SMTP server for a few seconds (until at least 20
// deliveries failed) and starts it again on the same port.
func (r *rig) smtpFault() {
	t := r.t
	t.Helper()
	failedBefore := r.count(`SELECT count(*) FROM keyworker.key_events WHERE event = 'notify_failed' AND detail->>'sink' = 'email'`)
	r.mail.stop()
	start := time.Now()
	waitFor(t, 60*time.Second, "email deliveries to fail", func() (bool, string) {
		n := r.count(`SELECT count(*) FROM keyworker.key_events WHERE event = 'notify_failed' AND detail->>'sink' = 'email'`)
		return n-failedBefore >= 20 && time.Since(start) >= 3*time.Second, fmt.Sprintf("%d failed", n-failedBefore)
	})
	r.mail.start(t)
	r.counts.smtpFaults++
}

// summary logs the run's numbers.
func (r *rig) summary() {
	t := r.t
	hooks, mails := r.hook.snapshot(), r.mail.snapshot()
	c := r.counts
	var keysTotal int
	if n := len(r.phases); n > 0 {
		keysTotal = r.phases[n-1].keys
	}
	t.Logf("%s mode, %s: signups: %s", r.mode, time.Since(r.begun).Round(time.Second), r.lastRep)
	t.Logf("%d eligible users with exactly one key each (all %d revealed, %d through HTTP); %d webhook requests (%d delivered, %d answered 500/503, %d hung past the timeout), %d emails",
		keysTotal, len(r.revealed), c.httpReveals, hooks.requests, hooks.ok, hooks.failed, hooks.hung, mails.received)
	t.Logf("faults: %d kill -9 (%d during start-up), %d worker starts, %d fast and %d immediate PostgreSQL restarts, %d WAL senders terminated, %d slots dropped, %d webhook and %d SMTP outages; %d full checks, %d keys through ScanForSecrets",
		c.kills, c.startupKills, r.w.starts, c.pgFast, c.pgImmediate, c.walSenders, c.slotDrops, c.hookFaults, c.smtpFaults, c.checks, c.scannedNeedles)
}
