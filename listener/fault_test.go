package listener

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyworker/keyworker/pgtemp"
)

// produce signs users up, one transaction each (every tenth anonymous),
// until ctx ends, riding out a server that goes away and comes back. A
// commit whose answer was lost may or may not have happened; the tests
// compare against the users table, not against a count.
func produce(ctx context.Context, url string, made *atomic.Int64) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for i := 0; ctx.Err() == nil; i++ {
		if conn == nil || conn.IsClosed() {
			c, err := pgx.Connect(ctx, url)
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			conn = c
		}
		_, err := conn.Exec(ctx, `INSERT INTO auth.users (id, created_at, is_anonymous) VALUES (gen_random_uuid(), now(), $1)`, i%10 == 0)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			conn.Close(context.Background())
			conn = nil
			continue
		}
		made.Add(1)
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}

func TestNoSignupLostOrDoubledAcrossConnectionLossAndRestarts(t *testing.T) {
	t.Parallel()
	srv, url := dedicatedServer(t, nil, true)
	e := newEnv(t, url)
	l := start(t, e.config("kw_faults"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var made atomic.Int64
	done := make(chan error, 1)
	go func() { done <- produce(ctx, url, &made) }()

	// progress waits until the listener has handed off n more signups than
	// it had, while signups keep coming.
	progress := func(step string, n uint64) {
		t.Helper()
		from := l.Status().Signups
		waitFor(t, 60*time.Second, step+": signups flowing again", func() bool { return l.Status().Signups >= from+n })
	}
	reconnected := func(step string, after uint64) {
		t.Helper()
		waitFor(t, 60*time.Second, step+": reconnect", func() bool {
			st := l.Status()
			return st.Reconnects > after && st.Role == RoleStreaming
		})
	}
	progress("start", 100)

	// The WAL sender is terminated under the listener.
	e.exec(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'kw_faults' AND active_pid IS NOT NULL`)
	reconnected("wal sender terminated", 0)
	progress("wal sender terminated", 100)

	for i, mode := range []pgtemp.ShutdownMode{pgtemp.ShutdownFast, pgtemp.ShutdownImmediate} {
		if err := srv.Restart(context.Background(), mode); err != nil {
			t.Fatalf("restarting (%s): %v", mode, err)
		}
		reconnected(string(mode)+" restart", uint64(i+1))
		progress(string(mode)+" restart", 100)
	}

	cancel()
	<-done
	e.waitAllJobs(60 * time.Second)
	e.assertExactlyOnce()
	st := l.Status()
	t.Logf("%d signups made, %d handed off, %d filtered, %d replays skipped, %d reconnects", made.Load(), st.Signups, st.Filtered, st.Replays, st.Reconnects)
	if st.Reconnects < 3 {
		t.Fatalf("%d reconnects, want at least 3", st.Reconnects)
	}
}

func TestPreflightNoFreeSlotOrWALSender(t *testing.T) {
	t.Parallel()
	_, url := dedicatedServer(t, map[string]string{
		"max_replication_slots":  "2",
		"max_wal_senders":        "2",
		"max_slot_wal_keep_size": "1MB",
	}, true)
	e := newEnv(t, url)
	ctx := context.Background()
	cfg := e.config("kw_tight")
	cfg.Enqueuer = testEnqueuer{fillOnReconcile: true}

	// Both slots taken by others.
	e.exec(`SELECT pg_create_logical_replication_slot('other_1', 'pgoutput')`)
	e.exec(`SELECT pg_create_logical_replication_slot('other_2', 'pgoutput')`)
	l, _ := NewLogical(cfg)
	err := l.Start(ctx)
	var pf *PreflightError
	if !errors.Is(err, ErrNoFreeSlot) || !errors.As(err, &pf) || !strings.Contains(err.Error(), "max_replication_slots") {
		t.Fatalf("Start with every slot taken: %v, want ErrNoFreeSlot naming max_replication_slots", err)
	}
	e.exec(`SELECT pg_drop_replication_slot('other_1')`)
	e.exec(`SELECT pg_drop_replication_slot('other_2')`)

	// Both WAL senders busy with other clients.
	for range 2 {
		c, err := pgconn.Connect(ctx, url+"&replication=database")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
	}
	l, _ = NewLogical(cfg)
	if err := l.Start(ctx); !errors.Is(err, ErrNoWALSender) || !strings.Contains(err.Error(), "max_wal_senders") {
		t.Fatalf("Start with every WAL sender busy: %v, want ErrNoWALSender naming max_wal_senders", err)
	}
}

func TestInvalidatedSlotIsRecreatedAndReconciled(t *testing.T) {
	t.Parallel()
	_, url := dedicatedServer(t, map[string]string{"max_slot_wal_keep_size": "1MB"}, true)
	e := newEnv(t, url)
	cfg := e.config("kw_lost")
	cfg.Enqueuer = testEnqueuer{fillOnReconcile: true}
	a := start(t, cfg)
	e.insertOneTx(100)
	e.waitAllJobs(30 * time.Second)
	a.Stop()
	e.waitSlotInactive("kw_lost")

	// Signups while down, then enough WAL that the server gives up on the
	// slot at the next checkpoint.
	e.insertSeparateTx(100)
	e.exec(`CREATE TABLE public.filler (b text)`)
	for range 4 {
		e.exec(`INSERT INTO public.filler SELECT repeat('x', 1000) FROM generate_series(1, 2000)`)
		e.exec(`SELECT pg_switch_wal()`)
	}
	e.exec(`CHECKPOINT`)
	waitFor(t, 10*time.Second, "the slot to be invalidated", func() bool {
		return e.count(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'kw_lost' AND wal_status = 'lost'`) == 1
	})

	b := start(t, cfg)
	if st := b.Status(); st.SlotsCreated != 1 || st.Reconciles != 1 {
		t.Fatalf("status: %d slots created, %d reconciles; want 1 and 1", st.SlotsCreated, st.Reconciles)
	}
	e.insertSeparateTx(100)
	e.waitAllJobs(30 * time.Second)
	e.assertExactlyOnce()
	if n := e.count(`SELECT count(*) FROM public.test_jobs WHERE source = 'reconcile'`); n != 90 {
		t.Fatalf("the reconcile enqueued %d users, want 90", n)
	}
	if n := e.count(`SELECT count(*) FROM public.test_reconciles WHERE reason LIKE '%invalidated%'`); n != 1 {
		t.Fatalf("%d reconciles name the invalidation, want 1", n)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "REPLICATION SLOT INVALIDATED") {
		t.Fatal("the invalidation was not logged loudly")
	}
}

func TestPreflightWALLevelNotLogical(t *testing.T) {
	t.Parallel()
	_, url := dedicatedServer(t, map[string]string{"wal_level": "replica"}, false)
	e := newEnv(t, url)
	l, _ := NewLogical(e.config("kw_wal"))
	err := l.Start(context.Background())
	var pf *PreflightError
	if !errors.Is(err, ErrWALLevel) || !errors.As(err, &pf) {
		t.Fatalf("Start on wal_level=replica: %v, want ErrWALLevel", err)
	}
	if len(pf.Statements) != 1 || pf.Statements[0] != "ALTER SYSTEM SET wal_level = logical;" || !strings.Contains(err.Error(), "listen mode") {
		t.Fatalf("the error does not give the fix: %v", err)
	}
}
