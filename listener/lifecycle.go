package listener

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
)

// lifecycle is the start/stop plumbing both sources share. A source's
// Start claims the start (begin), does its checks and network calls
// without holding the lock, and then either publishes the start (launch)
// or undoes it (abort); Stop may come at any point.
//
//   - A start succeeds at most once: Start while another is in progress,
//     after one succeeded, or after Stop is an error. A start that failed
//     may be tried again.
//   - Stop is idempotent and safe before Start. During a start in
//     progress it cancels the start's context and waits for the start to
//     unwind, which then returns an error; after a start it cancels the
//     background work and waits for it. Either way the pool is closed when
//     the source opened it, and the role is RoleStopped.
//   - The context given to Start ends the background work too (the pool
//     stays open until Stop).
//
// The lock is held only to change the state, never across a network
// call, so Stop does not wait behind a slow connection attempt.
type lifecycle struct {
	// what names the source in errors ("logical listener").
	what string
	st   *tracker

	mu    sync.Mutex
	state lifeState
	// ctx is the start's and then the background work's context; cancel
	// ends it.
	ctx    context.Context
	cancel context.CancelFunc
	// startDone is closed when the start in progress has ended (launched
	// or aborted).
	startDone chan struct{}
	wg        sync.WaitGroup
	pool      *pgxpool.Pool
	ownPool   bool
}

type lifeState int

const (
	stateIdle lifeState = iota
	stateStarting
	stateRunning
	stateStopped
)

// begin claims the start. The context it returns ends when ctx does or
// when Stop is called; the start's network calls and then the background
// work run under it.
func (lc *lifecycle) begin(ctx context.Context) (context.Context, error) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	switch lc.state {
	case stateStarting:
		return nil, fmt.Errorf("starting the %s: another Start is in progress", lc.what)
	case stateRunning, stateStopped:
		return nil, fmt.Errorf("starting the %s: it was already started or stopped", lc.what)
	}
	lc.state = stateStarting
	lc.ctx, lc.cancel = context.WithCancel(ctx)
	lc.startDone = make(chan struct{})
	return lc.ctx, nil
}

// openPool returns the pool the source uses: cfg.Pool, or one opened from
// cfg.ConnString that the lifecycle closes on a failed start and on Stop.
func (lc *lifecycle) openPool(ctx context.Context, cfg Config) (*pgxpool.Pool, error) {
	pool, own := cfg.Pool, false
	if pool == nil {
		var err error
		if pool, err = pgxpool.New(ctx, cfg.ConnString); err != nil {
			return nil, fmt.Errorf("opening a pool: %w", err)
		}
		own = true
	}
	lc.mu.Lock()
	lc.pool, lc.ownPool = pool, own
	lc.mu.Unlock()
	return pool, nil
}

// abort undoes a start that failed with err and returns err. The source
// may be started again, unless Stop was called meanwhile.
func (lc *lifecycle) abort(err error) error {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.cancel()
	lc.closePool()
	if lc.state == stateStarting {
		lc.state = stateIdle
	}
	close(lc.startDone)
	return err
}

// launch publishes a start that succeeded: work runs in a background
// goroutine until the start's context ends, and the role becomes
// RoleStopped when it returns. When Stop was called while the source was
// starting, launch undoes the start instead and returns an error wrapping
// context.Canceled.
func (lc *lifecycle) launch(work func(ctx context.Context)) error {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	defer close(lc.startDone)
	if lc.state != stateStarting {
		lc.cancel()
		lc.closePool()
		return fmt.Errorf("starting the %s: Stop was called while it was starting: %w", lc.what, context.Canceled)
	}
	lc.state = stateRunning
	ctx := lc.ctx
	lc.wg.Add(1)
	go func() {
		defer lc.wg.Done()
		defer lc.st.setRole(RoleStopped)
		work(ctx)
	}()
	return nil
}

// stop is Stop: see lifecycle.
func (lc *lifecycle) stop() {
	lc.mu.Lock()
	prev := lc.state
	if prev == stateStopped {
		lc.mu.Unlock()
		return
	}
	lc.state = stateStopped
	cancel, startDone := lc.cancel, lc.startDone
	lc.mu.Unlock()
	switch prev {
	case stateStarting:
		// The start unwinds on its canceled context; abort or launch
		// closes the pool.
		cancel()
		<-startDone
	case stateRunning:
		cancel()
		lc.wg.Wait()
		lc.mu.Lock()
		lc.closePool()
		lc.mu.Unlock()
	}
	lc.st.update(func(s *Status) { s.Role = RoleStopped })
}

// closePool closes the pool when the source opened it, once. The caller
// holds mu.
func (lc *lifecycle) closePool() {
	if lc.ownPool && lc.pool != nil {
		lc.pool.Close()
	}
	lc.pool, lc.ownPool = nil, false
}

// runSource is a source's Run: Start, then waiting for ctx to end, then
// Stop. It returns Start's error, or nil.
func runSource(ctx context.Context, s interface {
	Start(context.Context) error
	Stop()
}) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	s.Stop()
	return nil
}
