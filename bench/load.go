package bench

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// signupSQL is one signup as Supabase Auth writes it: the columns its
// sign-up sets, with the id made by the client (auth.users.id has no
// default; the auth server sets it). The password hash is a fixed bcrypt
// string: hashing happens in the auth server, not in the database. Supabase
// Auth also writes auth.identities and an audit row in the same
// transaction; those tables are not modelled, so this transaction is
// lighter than a real sign-up and whatever runs inside it (the trigger)
// weighs more in proportion.
const signupSQL = `INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password,
	confirmation_token, recovery_token, email_change_token_new, email_change,
	confirmation_sent_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at,
	is_sso_user, is_anonymous)
VALUES ('00000000-0000-0000-0000-000000000000', $1, 'authenticated', 'authenticated', $2,
	'$2a$10$PznXR5VSgzjnAp7T/X7PCu6vtlgzdFt1zIr41IqP0CmVHQtShiXxS',
	'', '', '', '', now(),
	'{"provider": "email", "providers": ["email"]}', '{}', now(), now(), false, false)`

// backlogSQL inserts n signups shaped like signupSQL's, each in its own
// transaction (a procedure-level COMMIT per row), for the catch-up test.
const backlogSQL = `DO $$
BEGIN
	FOR i IN 1..%d LOOP
		INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password,
			confirmation_token, recovery_token, email_change_token_new, email_change,
			confirmation_sent_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at,
			is_sso_user, is_anonymous)
		VALUES ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', 'authenticated',
			'backlog-' || md5(random()::text) || '@example.com',
			'$2a$10$PznXR5VSgzjnAp7T/X7PCu6vtlgzdFt1zIr41IqP0CmVHQtShiXxS',
			'', '', '', '', now(),
			'{"provider": "email", "providers": ["email"]}', '{}', now(), now(), false, false);
		COMMIT;
	END LOOP;
END
$$`

// phaseSpec is one load phase: Rate signups/s in total (0: as fast as the
// clients go) for Warmup, not counted, then Measure, counted.
type phaseSpec struct {
	name    string
	rate    int
	warmup  time.Duration
	measure time.Duration
}

// loadResult is what the clients saw in one phase.
type loadResult struct {
	start, measureFrom, end time.Time
	// ids of the signups committed inside the measured window, and their
	// latency from sending the INSERT to its COMMIT returning.
	ids  []string
	lats []time.Duration
	// committed counts every signup, warm-up and tail included.
	committed int
	errors    int
	firstErr  string
}

func (r loadResult) tps() float64 {
	w := r.end.Sub(r.measureFrom).Seconds()
	if w <= 0 {
		return 0
	}
	return float64(len(r.ids)) / w
}

// clients is a set of connections, one per simulated auth server worker.
type clients struct {
	conns []*pgx.Conn
}

func openClients(ctx context.Context, url string, n int) (*clients, error) {
	c := &clients{}
	for range n {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			c.close()
			return nil, fmt.Errorf("opening load connections: %w", err)
		}
		c.conns = append(c.conns, conn)
	}
	return c, nil
}

func (c *clients) close() {
	for _, conn := range c.conns {
		_ = conn.Close(context.Background())
	}
	c.conns = nil
}

// run signs users up per spec. With a rate, a dispatcher hands out one
// token per signup on an exact schedule (start + i/rate, catching up if it
// falls behind) and the clients take them; without one, every client loops.
// Only signups whose COMMIT returns inside the measured window count.
func (c *clients) run(ctx context.Context, spec phaseSpec) (loadResult, error) {
	res := loadResult{start: time.Now()}
	res.measureFrom = res.start.Add(spec.warmup)
	res.end = res.measureFrom.Add(spec.measure)

	var tokens chan struct{}
	if spec.rate > 0 {
		tokens = make(chan struct{}, len(c.conns))
		go func() {
			defer close(tokens)
			interval := float64(time.Second) / float64(spec.rate)
			timer := time.NewTimer(0)
			defer timer.Stop()
			for i := 0; ; i++ {
				next := res.start.Add(time.Duration(float64(i) * interval))
				if !next.Before(res.end) {
					return
				}
				if d := time.Until(next); d > 0 {
					timer.Reset(d)
					select {
					case <-timer.C:
					case <-ctx.Done():
						return
					}
				}
				select {
				case tokens <- struct{}{}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}

	type clientResult struct {
		ids       []string
		lats      []time.Duration
		committed int
		errors    int
		firstErr  string
	}
	results := make([]clientResult, len(c.conns))
	var wg sync.WaitGroup
	for i, conn := range c.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			consecutive := 0
			for {
				if tokens != nil {
					if _, ok := <-tokens; !ok {
						return
					}
				}
				now := time.Now()
				if !now.Before(res.end) || ctx.Err() != nil {
					if tokens != nil {
						continue // drain the last tokens without using them
					}
					return
				}
				id := newUUID()
				t0 := time.Now()
				_, err := conn.Exec(ctx, signupSQL, id, "user-"+id[:13]+"@example.com")
				t1 := time.Now()
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					r.errors++
					r.firstErr = cmp.Or(r.firstErr, err.Error())
					if consecutive++; consecutive >= 100 || conn.IsClosed() {
						return
					}
					continue
				}
				consecutive = 0
				r.committed++
				if !t1.Before(res.measureFrom) && t1.Before(res.end) {
					r.ids = append(r.ids, id)
					r.lats = append(r.lats, t1.Sub(t0))
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	for _, r := range results {
		res.ids = append(res.ids, r.ids...)
		res.lats = append(res.lats, r.lats...)
		res.committed += r.committed
		res.errors += r.errors
		res.firstErr = cmp.Or(res.firstErr, r.firstErr)
	}
	return res, nil
}

// newUUID returns a random (version 4) UUID, as the auth server makes them.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// Latency summarises a set of durations in milliseconds. Percentiles are
// nearest-rank: P99 is a value that was observed, with 99% of the
// observations at or below it.
type Latency struct {
	// N is how many observations there were.
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func summarize(ms []float64) Latency {
	if len(ms) == 0 {
		return Latency{}
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return round(s[max(i, 0)], 2)
	}
	return Latency{N: len(s), P50: rank(.50), P95: rank(.95), P99: rank(.99), Max: round(s[len(s)-1], 2)}
}

func durationsMS(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}

func round(v float64, places int) float64 {
	p := math.Pow(10, float64(places))
	return math.Round(v*p) / p
}
