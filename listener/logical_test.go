package listener

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

func TestTenThousandUsersInOneTransactionAreEnqueuedExactlyOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var batches atomic.Int64
	cfg := e.config("kw_one_tx")
	// Nine chunks of DefaultBatchMaxRows in one hand-off, in user id order
	// across all of them.
	cfg.Enqueuer = testEnqueuer{checkFields: true, checkOrder: true}
	cfg.OnBatch = func(Batch) { batches.Add(1) }
	l := start(t, cfg)

	e.insertOneTx(10_000)
	e.waitAllJobs(60 * time.Second)
	e.assertExactlyOnce()
	if n := e.count(`SELECT count(*) FROM public.test_jobs`); n != 9_000 {
		t.Fatalf("%d jobs, want 9000 (every tenth user is anonymous)", n)
	}
	waitFor(t, 5*time.Second, "status to count 9000 signups", func() bool { return l.Status().Signups == 9_000 })
	st := l.Status()
	if st.Filtered != 1_000 || st.Signups != 9_000 || st.Role != RoleStreaming {
		t.Fatalf("status: filtered %d, signups %d, role %s; want 1000, 9000, streaming", st.Filtered, st.Signups, st.Role)
	}
	// One replication transaction is never split: one hand-off carries it,
	// so the checkpoint never points into its middle.
	if b := batches.Load(); b != 1 {
		t.Fatalf("%d hand-offs for one replication transaction, want 1", b)
	}

	// Stop sends the last acknowledgement: the slot is confirmed at least
	// up to the checkpoint.
	ck := e.checkpoint("kw_one_tx")
	l.Stop()
	if conf := e.slotConfirmed("kw_one_tx"); !e.lsnAtLeast(conf, ck) {
		t.Fatalf("after Stop the slot is confirmed at %s, behind the checkpoint %s", conf, ck)
	}
	if l.Status().Role != RoleStopped {
		t.Fatalf("role after Stop is %s", l.Status().Role)
	}
}

func TestTenThousandUsersInSeparateTransactionsAreEnqueuedExactlyOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	l := start(t, e.config("kw_sep_tx"))

	e.insertSeparateTx(10_000)
	e.waitAllJobs(60 * time.Second)
	e.assertExactlyOnce()
	if n := e.count(`SELECT count(*) FROM public.test_jobs`); n != 9_000 {
		t.Fatalf("%d jobs, want 9000", n)
	}
	// The checkpoint row carries the count and the position.
	var signups int
	var lsn string
	if err := e.pool.QueryRow(context.Background(), `SELECT signups, lsn::text FROM keyworker.replication_checkpoints WHERE slot_name = 'kw_sep_tx'`).Scan(&signups, &lsn); err != nil {
		t.Fatal(err)
	}
	if signups != 9_000 {
		t.Fatalf("checkpoint row counts %d signups, want 9000", signups)
	}
	waitFor(t, 5*time.Second, "status to count 9000 signups", func() bool { return l.Status().Signups == 9_000 })
	st := l.Status()
	if st.Checkpoint.String() != lsn || st.Batches == 0 || st.Batches > 9_000 {
		t.Fatalf("status checkpoint %s (row %s), %d batches", st.Checkpoint, lsn, st.Batches)
	}
	t.Logf("%d hand-offs for 10000 transactions", st.Batches)
}

func TestStopIsIdempotentAndSafeBeforeStart(t *testing.T) {
	t.Parallel()
	e := setup(t)
	l, err := NewLogical(e.config("kw_stop"))
	if err != nil {
		t.Fatal(err)
	}
	l.Stop()
	l.Stop()
	if err := l.Start(context.Background()); err == nil {
		t.Fatal("Start after Stop succeeded")
	}
	ln, err := NewListen(e.config("kw_stop"))
	if err != nil {
		t.Fatal(err)
	}
	ln.Stop()
	ln.Stop()
	if l.Status().Role != RoleStopped || ln.Status().Role != RoleStopped {
		t.Fatalf("roles %s, %s; want stopped", l.Status().Role, ln.Status().Role)
	}
}

func TestIdleUsersTableStillAdvancesTheSlot(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.exec(`CREATE TABLE public.other (x int)`)
	cfg := e.config("kw_idle")
	cfg.StatusInterval = time.Second
	l := start(t, cfg)
	waitFor(t, 10*time.Second, "streaming", func() bool { return l.Status().Role == RoleStreaming })
	before := e.checkpoint("kw_idle")

	// Writes elsewhere, none to the users table.
	for i := range 50 {
		e.exec(`INSERT INTO public.other VALUES ($1)`, i)
	}
	var walAfter string
	if err := e.pool.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&walAfter); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "confirmed_flush_lsn to pass the writes elsewhere", func() bool {
		return e.lsnAtLeast(e.slotConfirmed("kw_idle"), walAfter)
	})
	// And again: it keeps advancing, not once.
	for i := range 50 {
		e.exec(`INSERT INTO public.other VALUES ($1)`, i)
	}
	if err := e.pool.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&walAfter); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "confirmed_flush_lsn to pass the second writes", func() bool {
		return e.lsnAtLeast(e.slotConfirmed("kw_idle"), walAfter)
	})
	// Nothing was handed off, so the checkpoint did not move.
	if after := e.checkpoint("kw_idle"); after != before {
		t.Fatalf("checkpoint moved from %s to %s without signups", before, after)
	}
	if st := l.Status(); st.Batches != 0 || st.Confirmed <= st.Checkpoint {
		t.Fatalf("status: %d batches, confirmed %s, checkpoint %s", st.Batches, st.Confirmed, st.Checkpoint)
	}
}

func TestReplicationTransactionsAtOrBelowTheCheckpointAreSkipped(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cfg := e.config("kw_crash")
	var crashAt atomic.Uint64
	first := start(t, cfg)
	first.Stop()

	// The listener dies between its commit and its acknowledgement.
	l, err := NewLogical(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l.afterCommit = func(lsn pglogrepl.LSN) bool {
		return crashAt.CompareAndSwap(0, uint64(lsn))
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Stop)
	e.insertOneTx(500)
	waitFor(t, 30*time.Second, "the simulated crash", func() bool { return crashAt.Load() != 0 })
	l.Stop()
	ck := e.checkpoint("kw_crash")
	if ck != pglogrepl.LSN(crashAt.Load()).String() {
		t.Fatalf("checkpoint %s, want the crashed commit's %s", ck, pglogrepl.LSN(crashAt.Load()))
	}
	if conf := e.slotConfirmed("kw_crash"); e.lsnAtLeast(conf, ck) {
		t.Fatalf("the server was told %s, at or past the commit %s it should not have heard of", conf, ck)
	}
	e.assertExactlyOnce()

	// The next listener is made to start where the server thinks it should
	// (the slot's confirmed position, behind the checkpoint), so the server
	// sends the committed transaction again: the listener must skip it. (A
	// listener normally starts at its checkpoint, and the server then does
	// not send it at all.)
	cfg.Logger = cfg.Logger.With("listener", "again")
	again, err := NewLogical(cfg)
	if err != nil {
		t.Fatal(err)
	}
	again.startAtSlot = true
	if err := again.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(again.Stop)
	e.insertOneTx(500)
	e.waitAllJobs(30 * time.Second)
	e.assertExactlyOnce()
	if st := again.Status(); st.Replays != 1 {
		t.Fatalf("status reports %d replays, want 1", st.Replays)
	}
	if n := e.count(`SELECT count(*) FROM public.test_jobs`); n != 900 {
		t.Fatalf("%d jobs, want 900", n)
	}
	again.Stop()

	// And a normal restart after all that adds nothing twice.
	third := start(t, e.config("kw_crash"))
	e.insertOneTx(100)
	e.waitAllJobs(30 * time.Second)
	e.assertExactlyOnce()
	waitFor(t, 5*time.Second, "the third listener to count 90 signups", func() bool { return third.Status().Signups == 90 })
}

func TestTwoListenersOnOneSlotOneStreamsOneWaits(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cfg := e.config("kw_two")
	a := start(t, cfg)
	waitFor(t, 10*time.Second, "a streaming", func() bool { return a.Status().Role == RoleStreaming })
	b := start(t, cfg)
	waitFor(t, 10*time.Second, "b standing by", func() bool { return b.Status().Role == RoleStandby })

	e.insertSeparateTx(300)
	e.waitAllJobs(30 * time.Second)
	if st := b.Status(); st.Batches != 0 || st.Role != RoleStandby {
		t.Fatalf("the standby handed off %d batches (role %s)", st.Batches, st.Role)
	}
	// Status follows the commit by a moment.
	waitFor(t, 5*time.Second, "a to count 270 signups", func() bool { return a.Status().Signups == 270 })

	a.Stop()
	waitFor(t, 10*time.Second, "b taking over", func() bool { return b.Status().Role == RoleStreaming })
	e.insertSeparateTx(300)
	e.waitAllJobs(30 * time.Second)
	e.assertExactlyOnce()
	waitFor(t, 5*time.Second, "b to count 270 signups", func() bool { return b.Status().Signups == 270 })
	if !strings.Contains(e.logs.String(), "another replica holds the replication slot") {
		t.Fatal("the standby did not log why it waits")
	}
}

func TestSlotDroppedWhileDownIsRecreatedAndReconciled(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cfg := e.config("kw_dropped")
	cfg.Enqueuer = testEnqueuer{fillOnReconcile: true}
	a := start(t, cfg)
	e.insertOneTx(100)
	e.waitAllJobs(30 * time.Second)
	a.Stop()

	e.waitSlotInactive("kw_dropped")
	e.exec(`SELECT pg_drop_replication_slot('kw_dropped')`)
	e.insertSeparateTx(100) // no slot: the stream never sees these

	b := start(t, cfg)
	st := b.Status()
	if st.SlotsCreated != 1 || st.Reconciles != 1 {
		t.Fatalf("status: %d slots created, %d reconciles; want 1 and 1", st.SlotsCreated, st.Reconciles)
	}
	e.insertSeparateTx(100)
	e.waitAllJobs(30 * time.Second)
	e.assertExactlyOnce()
	if n := e.count(`SELECT count(*) FROM public.test_jobs WHERE source = 'reconcile'`); n != 90 {
		t.Fatalf("the reconcile enqueued %d users, want the 90 permanent ones made while the slot was gone", n)
	}
	if n := e.count(`SELECT count(*) FROM public.test_reconciles WHERE reason LIKE '%missing%'`); n != 1 {
		t.Fatalf("%d reconciles name the missing slot, want 1", n)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "REPLICATION SLOT MISSING") {
		t.Fatalf("the recreation was not logged loudly:\n%s", logs)
	}
}
