package listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// silentServer accepts TCP connections and never answers on them: a
// database that hangs during the startup handshake. It reports each
// accepted connection on the returned channel.
func silentServer(t *testing.T) (addr string, accepted <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{}, 16)
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), ch
}

// testSource is what Logical and Listen have in common.
type testSource interface {
	Start(context.Context) error
	Stop()
	Status() Status
}

// newTestSource makes the source mode names (ModeLogical or ModeListen).
func newTestSource(t *testing.T, mode string, cfg Config) testSource {
	t.Helper()
	var src testSource
	var err error
	if mode == ModeLogical {
		src, err = NewLogical(cfg)
	} else {
		src, err = NewListen(cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// within runs f and fails the test when it has not returned after d: a
// deadlock guard, with a bound far above what f needs.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %s (deadlock?)", what, d)
	}
}

// TestStatusAndStopDoNotWaitBehindASlowStart guards that Start holds no
// lock across its network calls: while Start waits on a server that
// accepted the connection and never answers, Status and Stop return at
// once, Stop cancels the start, Start returns an error, and the source
// cannot be started again.
func TestStatusAndStopDoNotWaitBehindASlowStart(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{ModeLogical, ModeListen} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			addr, accepted := silentServer(t)
			cfg := Config{
				ConnString: fmt.Sprintf("postgres://keyworker@%s/postgres?sslmode=disable", addr),
				Enqueuer:   testEnqueuer{},
			}
			src := newTestSource(t, mode, cfg)
			started := make(chan error, 1)
			go func() { started <- src.Start(context.Background()) }()
			const bound = 30 * time.Second
			select {
			case <-accepted:
			case err := <-started:
				t.Fatalf("Start returned %v before connecting", err)
			case <-time.After(bound):
				t.Fatalf("Start did not connect within %s", bound)
			}

			// Start is now blocked in the handshake.
			within(t, bound, "Status during Start", func() {
				if r := src.Status().Role; r != RoleIdle {
					t.Errorf("role during Start is %s, want %s", r, RoleIdle)
				}
			})
			within(t, bound, "a second Start during Start", func() {
				if err := src.Start(context.Background()); err == nil {
					t.Error("a second Start during Start succeeded")
				}
			})
			within(t, bound, "Stop during Start", src.Stop)
			select {
			case err := <-started:
				if err == nil {
					t.Fatal("Start succeeded although Stop was called while it was connecting")
				}
				if !errors.Is(err, context.Canceled) {
					t.Logf("Start returned (not context.Canceled): %v", err)
				}
			case <-time.After(bound):
				t.Fatalf("Start did not return within %s of Stop", bound)
			}
			within(t, bound, "a second Stop", src.Stop)
			if err := src.Start(context.Background()); err == nil {
				t.Fatal("Start after Stop succeeded")
			}
			if r := src.Status().Role; r != RoleStopped {
				t.Fatalf("role after Stop is %s, want %s", r, RoleStopped)
			}
		})
	}
}

// TestCanceledContextEndsTheSource guards that the context given to Start
// ends the background work (the role becomes stopped) and that Stop after
// it still returns.
func TestCanceledContextEndsTheSource(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, mode := range []string{ModeLogical, ModeListen} {
		t.Run(mode, func(t *testing.T) {
			cfg := e.config("kw_ctx_" + mode)
			src := newTestSource(t, mode, cfg)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := src.Start(ctx); err != nil {
				t.Fatalf("starting: %v", err)
			}
			if err := src.Start(ctx); err == nil {
				t.Fatal("a second Start succeeded")
			}
			cancel()
			waitFor(t, 30*time.Second, "the role to become stopped", func() bool { return src.Status().Role == RoleStopped })
			within(t, 30*time.Second, "Stop after the context ended", src.Stop)
			within(t, 30*time.Second, "a second Stop", src.Stop)
		})
	}
}
