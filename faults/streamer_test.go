package faults

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// What the streamer knows of a user it tried to sign up.
const (
	userCommitted       = iota + 1 // the COMMIT returned
	userUncertain                  // the connection died around COMMIT: look it up
	userDeleted                    // committed, then deleted by the streamer
	userDeleteUncertain            // committed; the connection died around its DELETE
)

// streamer signs users up into auth.users from a few goroutines, each with
// its own connection, at a steady rate, until stopped. It rides out a
// database that goes away (reconnecting every 100ms). pause waits for every
// statement in flight to finish and holds new ones back until resume.
type streamer struct {
	url     string
	perSec  int
	workers int
	seed    uint64

	gate   sync.RWMutex // read-held by each operation; pause takes it
	paused bool

	mu      sync.Mutex
	users   map[string]int // id → userCommitted, userUncertain or userDeleted
	recent  []string       // recently committed eligible users, for deletes
	counts  streamCounts
	errs    int
	lastErr string

	cancel context.CancelFunc
	done   chan struct{}
	total  atomic.Int64 // users attempted
}

type streamCounts struct {
	committed, uncertain, failed int
	anonymous, softDeleted       int
	deleted                      int
	single, multiRow, multiStmt  int
}

func newStreamer(url string, perSec, workers int, seed uint64) *streamer {
	return &streamer{url: url, perSec: perSec, workers: workers, seed: seed, users: map[string]int{}}
}

func (s *streamer) start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.done = make(chan struct{})
	var wg sync.WaitGroup
	for i := range s.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(ctx, rand.New(rand.NewPCG(s.seed, uint64(i)+1)))
		}()
	}
	go func() {
		wg.Wait()
		close(s.done)
	}()
}

// stop ends the streamer for good.
func (s *streamer) stop() {
	if s.cancel == nil {
		return
	}
	if s.paused {
		s.resume()
	}
	s.cancel()
	<-s.done
	s.cancel = nil
}

func (s *streamer) pause() {
	s.gate.Lock()
	s.paused = true
}

func (s *streamer) resume() {
	s.paused = false
	s.gate.Unlock()
}

// newUser is one row for auth.users.
type newUser struct {
	id                    string
	anonymous, softDelete bool
}

func randomUUID(rng *rand.Rand) string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (s *streamer) run(ctx context.Context, rng *rand.Rand) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	per := time.Second * time.Duration(s.workers) / time.Duration(max(s.perSec, 1))
	next := time.Now()
	for ctx.Err() == nil {
		s.gate.RLock()
		if conn == nil || conn.IsClosed() {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			c, err := pgx.Connect(cctx, s.url)
			cancel()
			if err != nil {
				s.gate.RUnlock()
				s.noteErr(err)
				sleepCtx(ctx, 100*time.Millisecond)
				continue
			}
			conn = c
		}
		n, err := s.op(ctx, conn, rng)
		s.gate.RUnlock()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.noteErr(err)
			_ = conn.Close(context.Background())
			conn = nil
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		next = next.Add(time.Duration(n) * per)
		if d := time.Until(next); d > 0 {
			sleepCtx(ctx, d)
		} else if d < -time.Second {
			next = time.Now() // fell behind (an outage, a pause): do not burst
		}
	}
}

func (s *streamer) noteErr(err error) {
	s.mu.Lock()
	s.errs++
	s.lastErr = err.Error()
	s.mu.Unlock()
}

// op runs one signup operation and returns how many users it tried.
func (s *streamer) op(ctx context.Context, conn *pgx.Conn, rng *rand.Rand) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	r := rng.IntN(100)
	if r < 3 {
		return 0, s.deleteOne(ctx, conn, rng)
	}
	var users []newUser
	shape := "single"
	switch {
	case r < 55:
		users = s.makeUsers(rng, 1)
	case r < 80:
		shape = "multi-row"
		users = s.makeUsers(rng, 2+rng.IntN(7))
	default:
		shape = "multi-statement"
		users = s.makeUsers(rng, 2+rng.IntN(3))
	}
	var err error
	if shape == "multi-statement" {
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			for _, u := range users {
				if err := insertUsers(ctx, tx, []newUser{u}); err != nil {
					return err
				}
			}
			return nil
		})
	} else {
		err = insertUsers(ctx, conn, users)
	}
	s.record(users, shape, err)
	return len(users), err
}

func (s *streamer) makeUsers(rng *rand.Rand, n int) []newUser {
	out := make([]newUser, n)
	for i := range out {
		r := rng.IntN(100)
		out[i] = newUser{id: randomUUID(rng), anonymous: r < 10, softDelete: r >= 10 && r < 13}
	}
	return out
}

const insertUsersSQL = `
INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, raw_app_meta_data, raw_user_meta_data,
                        created_at, updated_at, is_anonymous, deleted_at)
SELECT '00000000-0000-0000-0000-000000000000', u.id, 'authenticated', 'authenticated',
       CASE WHEN u.anon THEN NULL ELSE u.id::text || '@example.test' END,
       CASE WHEN u.anon THEN NULL ELSE '$2a$10$abcdefghijklmnopqrstuuJ2x1lA8yWl3bJ0c0jWvH5l8m2k3pQ5e' END,
       '{"provider": "email"}', '{}', now(), now(), u.anon, CASE WHEN u.gone THEN now() END
  FROM unnest($1::uuid[], $2::bool[], $3::bool[]) AS u(id, anon, gone)`

func insertUsers(ctx context.Context, db interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, users []newUser) error {
	ids := make([]string, len(users))
	anon := make([]bool, len(users))
	gone := make([]bool, len(users))
	for i, u := range users {
		ids[i], anon[i], gone[i] = u.id, u.anonymous, u.softDelete
	}
	_, err := db.Exec(ctx, insertUsersSQL, ids, anon, gone)
	return err
}

// record files the outcome of an insert. An error the server reported
// (a *pgconn.PgError) means the transaction did not commit; any other
// error may have come after the server committed.
func (s *streamer) record(users []newUser, shape string, err error) {
	state := userCommitted
	if err != nil {
		state = userUncertain
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			state = 0
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total.Add(int64(len(users)))
	switch shape {
	case "single":
		s.counts.single++
	case "multi-row":
		s.counts.multiRow++
	default:
		s.counts.multiStmt++
	}
	for _, u := range users {
		switch state {
		case 0:
			s.counts.failed++
			continue
		case userUncertain:
			s.counts.uncertain++
		default:
			s.counts.committed++
			if u.anonymous {
				s.counts.anonymous++
			} else if u.softDelete {
				s.counts.softDeleted++
			} else {
				s.recent = append(s.recent, u.id)
				if len(s.recent) > 200 {
					s.recent = s.recent[len(s.recent)-200:]
				}
			}
		}
		s.users[u.id] = state
	}
}

// deleteOne deletes a recently signed-up eligible user, sometimes before
// the worker made its key, sometimes after (the key goes with it).
func (s *streamer) deleteOne(ctx context.Context, conn *pgx.Conn, rng *rand.Rand) error {
	s.mu.Lock()
	if len(s.recent) == 0 {
		s.mu.Unlock()
		return nil
	}
	i := rng.IntN(len(s.recent))
	id := s.recent[i]
	s.recent = append(s.recent[:i], s.recent[i+1:]...)
	s.users[id] = userDeleteUncertain
	s.mu.Unlock()
	_, err := conn.Exec(ctx, `DELETE FROM auth.users WHERE id = $1`, id)
	s.mu.Lock()
	defer s.mu.Unlock()
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		s.users[id] = userDeleted
		s.counts.deleted++
	case errors.As(err, &pgErr):
		s.users[id] = userCommitted // the server refused it: nothing happened
	}
	return err
}

// streamReport is what a check learns of the streamer.
type streamReport struct {
	streamCounts
	uncertainExisting int
	errs              int
	lastErr           string
}

// settleUncertain looks up every user whose commit was uncertain and
// files it as committed or not, and checks that every user the streamer
// saw committed (and did not delete) exists: a committed signup the
// database lost would make every later count meaningless. Call it paused.
func (s *streamer) settleUncertain(ctx context.Context, pool *pgxpool.Pool) (streamReport, error) {
	s.mu.Lock()
	var uncertain, committed []string
	for id, st := range s.users {
		switch st {
		case userUncertain, userDeleteUncertain:
			uncertain = append(uncertain, id)
		case userCommitted:
			committed = append(committed, id)
		}
	}
	s.mu.Unlock()

	var rep streamReport
	if len(uncertain) > 0 {
		rows, err := pool.Query(ctx, `SELECT id::text FROM auth.users WHERE id = ANY($1::uuid[])`, uncertain)
		if err != nil {
			return rep, fmt.Errorf("looking up uncertain signups: %w", err)
		}
		exist, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return rep, fmt.Errorf("looking up uncertain signups: %w", err)
		}
		found := map[string]bool{}
		for _, id := range exist {
			found[id] = true
		}
		s.mu.Lock()
		for _, id := range uncertain {
			switch {
			case s.users[id] == userDeleteUncertain && found[id]:
				s.users[id] = userCommitted
			case s.users[id] == userDeleteUncertain:
				s.users[id] = userDeleted
				s.counts.deleted++
			case found[id]:
				s.users[id] = userCommitted
				s.counts.committed++
				s.counts.uncertain--
				rep.uncertainExisting++
			default:
				s.users[id] = 0
				s.counts.failed++
				s.counts.uncertain--
			}
		}
		s.mu.Unlock()
	}
	rows, err := pool.Query(ctx, `SELECT c.id FROM unnest($1::text[]) c(id)
		WHERE NOT EXISTS (SELECT 1 FROM auth.users u WHERE u.id = c.id::uuid) ORDER BY 1`, committed)
	if err != nil {
		return rep, fmt.Errorf("looking up committed signups: %w", err)
	}
	lost, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return rep, fmt.Errorf("looking up committed signups: %w", err)
	}
	if len(lost) > 0 {
		return rep, fmt.Errorf("%d of %d signups whose COMMIT succeeded (and were not deleted) are not in auth.users, e.g. %v: the database lost commits",
			len(lost), len(committed), lost[:min(3, len(lost))])
	}
	s.mu.Lock()
	rep.streamCounts = s.counts
	rep.errs, rep.lastErr = s.errs, s.lastErr
	s.mu.Unlock()
	return rep, nil
}

func (r streamReport) String() string {
	parts := []string{
		fmt.Sprintf("%d committed (%d anonymous, %d soft-deleted, %d deleted later)", r.committed, r.anonymous, r.softDeleted, r.deleted),
		fmt.Sprintf("%d of uncertain commit found committed", r.uncertainExisting),
		fmt.Sprintf("%d not committed", r.failed),
		fmt.Sprintf("%d single, %d multi-row, %d multi-statement inserts", r.single, r.multiRow, r.multiStmt),
		fmt.Sprintf("%d errors ridden out", r.errs),
	}
	return strings.Join(parts, "; ")
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
