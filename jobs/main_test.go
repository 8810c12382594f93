package jobs_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/rivertype"

	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/jobs"
	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
	"github.com/keyworker/keyworker/notify"
	"github.com/keyworker/keyworker/users"
)

var harness = testenv.NewHarness(testenv.HarnessConfig{Prepare: testenv.Migrate})

func TestMain(m *testing.M) { os.Exit(harness.Run(m)) }

const revealURL = "https://app.example.com/v1/keys/reveal"

type fixture struct {
	db     *pgxpool.Pool
	store  *keystore.Store
	client *jobs.Client
	logs   *testenv.LogBuffer
	logger *slog.Logger
}

// setup returns a fresh database, a Store, and a jobs Client (not started)
// with fast polling and retries; edit tweaks the Config first.
func setup(t *testing.T, edit func(*jobs.Config)) *fixture {
	t.Helper()
	db, err := pgxpool.New(context.Background(), harness.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	key := make([]byte, keys.SealingKeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	sealer, err := keys.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	store, err := keystore.New(keystore.Config{Sealer: sealer})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testenv.LogBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := jobs.Config{
		Store:             store,
		RevealURL:         revealURL,
		RetryPolicy:       testenv.FastRetry{},
		FetchPollInterval: 50 * time.Millisecond,
		FetchCooldown:     10 * time.Millisecond,
		JobTimeout:        10 * time.Second,
		Logger:            logger,
	}
	if edit != nil {
		edit(&cfg)
	}
	client, err := jobs.NewClient(db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := client.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return &fixture{db: db, store: store, client: client, logs: logs, logger: logger}
}

func (f *fixture) start(t *testing.T) {
	t.Helper()
	if err := f.client.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
}

var userSeq atomic.Int64

func userID(n int64) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }

// newUsers inserts n ordinary users (with emails) and returns their ids.
func (f *fixture) newUsers(t *testing.T, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = f.newUser(t, "")
	}
	return ids
}

// newUser inserts a user; extra is "anonymous", "deleted" or "".
func (f *fixture) newUser(t *testing.T, extra string) string {
	t.Helper()
	id := userID(userSeq.Add(1))
	_, err := f.db.Exec(context.Background(), `INSERT INTO auth.users (id, email, created_at, is_anonymous, deleted_at)
		VALUES ($1, $2, now(), $3, CASE WHEN $4 THEN now() END)`,
		id, emailOf(id), extra == "anonymous", extra == "deleted")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func emailOf(userID string) string { return "user-" + userID[len(userID)-6:] + "@example.com" }

func signups(ids ...string) []users.Signup {
	out := make([]users.Signup, len(ids))
	for i, id := range ids {
		out[i] = users.Signup{UserID: id, CreatedAt: time.Now()}
	}
	return out
}

// enqueueUsers enqueues CreateKey jobs for ids through the client's
// listener.Enqueuer side, committed, and returns how many were new.
func (f *fixture) enqueueUsers(t *testing.T, ids ...string) int {
	t.Helper()
	ctx := context.Background()
	var n int
	err := pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error {
		var err error
		n, err = f.client.EnqueueSignupsTx(ctx, tx, signups(ids...))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// eventually waits up to timeout for cond, which says what it is waiting
// for when it returns false.
func eventually(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, what := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// count is testenv.Count: a SELECT count(*) style query's result.
var count = testenv.Count

// waitJobs waits until n jobs of kind are in state.
func (f *fixture) waitJobs(t *testing.T, kind string, state rivertype.JobState, n int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() (bool, string) {
		got := count(t, f.db, `SELECT count(*) FROM keyworker.river_job WHERE kind = $1 AND state = $2`, kind, string(state))
		return got == n, fmt.Sprintf("%d %s jobs %s (have %d; %s)", n, kind, state, got, f.jobStates(t))
	})
}

// waitEvents waits until n key_events rows are event.
func (f *fixture) waitEvents(t *testing.T, event string, n int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() (bool, string) {
		got := count(t, f.db, `SELECT count(*) FROM keyworker.key_events WHERE event = $1`, event)
		return got == n, fmt.Sprintf("%d %s events (have %d; %s)", n, event, got, f.jobStates(t))
	})
}

// waitIdle waits until no job is waiting, running or retrying.
func (f *fixture) waitIdle(t *testing.T, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() (bool, string) {
		n := count(t, f.db, `SELECT count(*) FROM keyworker.river_job WHERE state IN ('available', 'running', 'retryable', 'scheduled', 'pending')`)
		return n == 0, "all jobs to finish (" + f.jobStates(t) + ")"
	})
}

func (f *fixture) jobStates(t *testing.T) string {
	rows, err := f.db.Query(context.Background(), `SELECT kind, state::text, count(*) FROM keyworker.river_job GROUP BY 1, 2 ORDER BY 1, 2`)
	if err != nil {
		return err.Error()
	}
	var parts []string
	for rows.Next() {
		var kind, state string
		var n int
		_ = rows.Scan(&kind, &state, &n)
		parts = append(parts, fmt.Sprintf("%s/%s=%d", kind, state, n))
	}
	return strings.Join(parts, " ")
}

// events returns "event:sink" (or "event:reason") of key's events in order.
func (f *fixture) events(t *testing.T, where string, arg any) []string {
	t.Helper()
	rows, err := f.db.Query(context.Background(), `SELECT event, coalesce(detail->>'sink', detail->>'reason', '')
		FROM keyworker.key_events WHERE `+where+` ORDER BY id`, arg)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var e, d string
		err := r.Scan(&e, &d)
		if d != "" {
			e += ":" + d
		}
		return e, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// --- webhook receiver -------------------------------------------------

// hookRequest is one request the receiver accepted as correctly signed.
type hookRequest struct {
	id   string
	body []byte
}

// hookServer receives notices. answer decides the response to the n-th
// request (from 1); nil answers 204. It checks every request's Standard
// Webhooks signature with its own code, not notify's.
type hookServer struct {
	*httptest.Server
	secret string
	answer func(n int, w http.ResponseWriter, r *http.Request)

	mu       sync.Mutex
	requests []hookRequest
	badSigs  []string
	n        int
}

func newHookServer(t *testing.T, answer func(n int, w http.ResponseWriter, r *http.Request)) *hookServer {
	t.Helper()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	h := &hookServer{secret: "whsec_" + base64.StdEncoding.EncodeToString(raw), answer: answer}
	h.Server = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.n++
	n := h.n
	if err := testenv.CheckWebhookSignature(h.secret, r.Header, body, 5*time.Minute); err != nil {
		h.badSigs = append(h.badSigs, err.Error())
	}
	h.requests = append(h.requests, hookRequest{id: r.Header.Get("webhook-id"), body: body})
	h.mu.Unlock()
	if h.answer == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	h.answer(n, w, r)
}

func (h *hookServer) snapshot() ([]hookRequest, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookRequest(nil), h.requests...), append([]string(nil), h.badSigs...)
}

func (h *hookServer) sender(t *testing.T, timeout time.Duration) notify.Sender {
	t.Helper()
	s, err := notify.NewWebhook(notify.WebhookConfig{URL: h.URL + "/hooks/keys", Secret: h.secret, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// --- SMTP server --------------------------------------------------------

type mail struct {
	from string
	to   []string
	data []byte
}

// smtpServer is an in-process SMTP server on loopback, without TLS.
type smtpServer struct {
	addr string
	mu   sync.Mutex
	msgs []mail
}

func newSMTPServer(t *testing.T) *smtpServer {
	t.Helper()
	s := &smtpServer{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &smtpSession{srv: s}, nil }))
	srv.Domain = "localhost"
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

func (s *smtpServer) sender(t *testing.T) notify.Sender {
	t.Helper()
	e, err := notify.NewEmail(notify.SMTPConfig{URL: "smtp://" + s.addr, From: "Keys <keys@example.com>", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (s *smtpServer) messages() []mail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]mail(nil), s.msgs...)
}

type smtpSession struct {
	srv  *smtpServer
	cur  mail
	seen bool
}

func (s *smtpSession) Reset()        { s.cur = mail{} }
func (s *smtpSession) Logout() error { return nil }
func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	s.cur.from = from
	return nil
}
func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.cur.to = append(s.cur.to, to)
	return nil
}
func (s *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.data = b
	s.srv.mu.Lock()
	s.srv.msgs = append(s.srv.msgs, s.cur)
	s.srv.mu.Unlock()
	return nil
}
