package listener

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/users"
)

// queue carries complete replication transactions from the receiving
// goroutine to the hand-off goroutine. push never blocks.
type queue struct {
	mu    sync.Mutex
	items []*txn
	n     int           // signups queued
	added chan struct{} // a transaction was pushed
	freed chan struct{} // transactions were taken
}

func newQueue() *queue {
	return &queue{added: make(chan struct{}, 1), freed: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (q *queue) push(t *txn) {
	q.mu.Lock()
	q.items = append(q.items, t)
	q.n += len(t.signups)
	q.mu.Unlock()
	signal(q.added)
}

func (q *queue) rows() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// take returns the next batch: whole transactions, in order, once they
// hold maxRows signups or the oldest has waited maxWait. It returns false
// when ctx ends first.
func (q *queue) take(ctx context.Context, maxRows int, maxWait time.Duration) ([]*txn, bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if ctx.Err() != nil {
			return nil, false
		}
		q.mu.Lock()
		var wait time.Duration
		if len(q.items) > 0 {
			wait = time.Until(q.items[0].receivedAt.Add(maxWait))
			if q.n >= maxRows || wait <= 0 {
				i, rows := 0, 0
				for i < len(q.items) && (i == 0 || rows+len(q.items[i].signups) <= maxRows) {
					rows += len(q.items[i].signups)
					i++
				}
				batch := q.items[:i:i]
				q.items = q.items[i:]
				q.n -= rows
				q.mu.Unlock()
				signal(q.freed)
				return batch, true
			}
		}
		q.mu.Unlock()
		var timeout <-chan time.Time
		if wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			timeout = timer.C
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-q.added:
		case <-timeout:
		}
	}
}

// write hands batches off until ctx ends or a hand-off fails. A failure
// ends the session (through writerErr): the batch and everything queued
// behind it are dropped, and the next session receives them again from
// the checkpoint. Ending the session, rather than retrying on it, matters
// when the database shuts down: the server waits for its WAL senders'
// clients to confirm everything before it stops, and a client that keeps
// answering with an old position would hold the shutdown up forever.
func (s *stream) write(ctx context.Context) {
	l := s.l
	for {
		batch, ok := s.q.take(ctx, l.cfg.BatchMaxRows, l.cfg.BatchMaxWait)
		if !ok {
			return
		}
		// The hand-off in flight is not cut short by Stop: it commits or
		// rolls back within HandOffTimeout.
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.HandOffTimeout)
		err := l.handOff(hctx, batch)
		cancel()
		end := batch[len(batch)-1].end
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("handing off timed out after %s: %w", l.cfg.HandOffTimeout, err)
			}
			s.writerErr <- fmt.Errorf("handing off signups up to %s: %w", end, err)
			return
		}
		if l.afterCommit != nil && l.afterCommit(end) {
			s.crashed.Store(true)
			return
		}
		s.committed.Store(uint64(end))
		s.progressed.Store(true)
	}
}

// handOff commits one batch: in one database transaction it locks the
// checkpoint row, drops transactions the checkpoint already covers (a
// replay, or another replica's work), enqueues the signups and moves the
// checkpoint to the batch's last commit end LSN.
func (l *Logical) handOff(ctx context.Context, batch []*txn) error {
	started := time.Now()
	end := batch[len(batch)-1].end
	total := 0
	for _, t := range batch {
		total += len(t.signups)
	}
	if total == 0 {
		// Only filtered signups: nothing to commit. The position may still
		// be confirmed, like idle WAL: nothing in it concerns us.
		return nil
	}
	var (
		enqueued, handed, replays int
		lastSignupAt              *time.Time
		commits                   []time.Time
	)
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		enqueued, handed, replays, lastSignupAt, commits = 0, 0, 0, nil, commits[:0]
		var ckText string
		err := tx.QueryRow(ctx, l.ckSQL.lock, l.cfg.SlotName).Scan(&ckText)
		var ck pglogrepl.LSN
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("locking the checkpoint: %w", err)
		default:
			if ck, err = pglogrepl.ParseLSN(ckText); err != nil {
				return fmt.Errorf("parsing the checkpoint %q: %w", ckText, err)
			}
		}
		if ck >= end {
			replays = len(batch)
			return nil
		}
		var signups []users.Signup
		for _, t := range batch {
			if t.end <= ck {
				replays++
				continue
			}
			if len(t.signups) > 0 {
				at := t.commitAt
				lastSignupAt = &at
				commits = append(commits, t.commitAt)
			}
			signups = append(signups, t.signups...)
		}
		// In user id order across all chunks, as every enqueue inserts: a
		// hand-off of several chunks and a concurrent replay or reconcile
		// page over the same users then wait for each other rather than
		// deadlock (40P01), which a 200,000-user transaction replayed at once
		// did when each chunk was sorted only within itself.
		slices.SortFunc(signups, func(a, b users.Signup) int {
			return strings.Compare(strings.ToLower(a.UserID), strings.ToLower(b.UserID))
		})
		for len(signups) > 0 {
			chunk := signups[:min(len(signups), l.cfg.BatchMaxRows)]
			signups = signups[len(chunk):]
			n, err := l.cfg.Enqueuer.EnqueueSignupsTx(ctx, tx, chunk)
			if err != nil {
				return fmt.Errorf("enqueuing %d signups: %w", len(chunk), err)
			}
			enqueued += n
			handed += len(chunk)
		}
		_, err = tx.Exec(ctx, l.ckSQL.advance, l.cfg.SlotName, end.String(), lastSignupAt, handed)
		if err != nil {
			return fmt.Errorf("moving the checkpoint to %s: %w", end, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	now := time.Now()
	b := Batch{Transactions: len(batch) - replays, Signups: handed, Enqueued: enqueued, LSN: end,
		Duration: now.Sub(started), CommittedAt: now, SourceCommits: commits}
	l.st.update(func(s *Status) {
		s.Replays += uint64(replays)
		if handed == 0 {
			return
		}
		s.Checkpoint = max(s.Checkpoint, end)
		s.Signups += uint64(handed)
		s.Enqueued += uint64(enqueued)
		s.Batches++
		s.LastBatch = b
		if lastSignupAt != nil {
			s.LastSignupAt = *lastSignupAt
		}
	})
	if handed > 0 && l.cfg.OnBatch != nil {
		l.cfg.OnBatch(b)
	}
	return nil
}
