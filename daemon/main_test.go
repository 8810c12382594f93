package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/keyworker/keyworker/accesstoken"
	"github.com/keyworker/keyworker/daemon"
	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/jobs"
	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/server"
)

// Every test database is a copy of a template that already has the Supabase
// shape and keyworker's migrations, so a daemon's own migration step is a
// no-op and each test pays only for CREATE DATABASE.
var harness = testenv.NewHarness(testenv.HarnessConfig{Prepare: testenv.Migrate})

func TestMain(m *testing.M) { os.Exit(harness.Run(m)) }

const schema = "keyworker"

// fixture is one test's database, secrets and log capture.
type fixture struct {
	t          *testing.T
	url        string
	db         *pgxpool.Pool // the test's own superuser connection
	slot       string
	jwtSecret  []byte
	sealingKey []byte
	logs       *testenv.LogBuffer
	logger     *slog.Logger
}

var slotSeq atomic.Int64

func setup(t *testing.T) *fixture {
	t.Helper()
	url := harness.Database(t)
	db, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	logs := &testenv.LogBuffer{}
	return &fixture{
		t:   t,
		url: url,
		db:  db,
		// Slot names are cluster-wide; the harness drops a database's
		// slots with it.
		slot:       fmt.Sprintf("kwtest_%d_%d", os.Getpid(), slotSeq.Add(1)),
		jwtSecret:  randomBytes(t, 48),
		sealingKey: randomBytes(t, keys.SealingKeySize),
		logs:       logs,
		logger:     slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// config is a daemon configuration for this fixture: HTTP on a free
// loopback port, a JWT secret, quick River polling and retries.
func (f *fixture) config(mode string) daemon.Config {
	return daemon.Config{
		DatabaseURL:       f.url,
		Mode:              mode,
		SlotName:          f.slot,
		SealingKey:        f.sealingKey,
		Tokens:            accesstoken.Config{JWTSecret: f.jwtSecret},
		HTTP:              server.Config{Addr: "127.0.0.1:0", RevealPerAddr: 1000, RevealPerUser: 100},
		PollInterval:      time.Second,
		RetryPolicy:       testenv.FastRetry{},
		FetchPollInterval: 50 * time.Millisecond,
		FetchCooldown:     10 * time.Millisecond,
		ShutdownTimeout:   5 * time.Second,
		MetricsCacheTTL:   50 * time.Millisecond,
		Logger:            f.logger,
	}
}

// start makes and starts a daemon; it is stopped when the test ends.
func (f *fixture) start(cfg daemon.Config) *daemon.Daemon {
	f.t.Helper()
	d, err := daemon.New(cfg)
	if err != nil {
		f.t.Fatalf("daemon.New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := d.Start(ctx); err != nil {
		f.t.Fatalf("daemon.Start: %v", err)
	}
	f.t.Cleanup(d.Stop)
	return d
}

var userSeq atomic.Int64

// signUp inserts a user the way Supabase Auth does and returns its id.
// Anonymous users have no email.
func (f *fixture) signUp(anonymous bool) string {
	f.t.Helper()
	var email *string
	if !anonymous {
		e := fmt.Sprintf("user%d@example.com", userSeq.Add(1))
		email = &e
	}
	var id string
	err := f.db.QueryRow(context.Background(), `INSERT INTO auth.users
		(id, aud, role, email, created_at, updated_at, is_anonymous, raw_app_meta_data, raw_user_meta_data)
		VALUES (gen_random_uuid(), 'authenticated', 'authenticated', $1, now(), now(), $2, '{"provider":"email"}', '{}')
		RETURNING id::text`, email, anonymous).Scan(&id)
	if err != nil {
		f.t.Fatalf("signing up: %v", err)
	}
	return id
}

func (f *fixture) signUpMany(n int, anonymous bool) []string {
	f.t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = f.signUp(anonymous)
	}
	return ids
}

func (f *fixture) emailOf(userID string) string {
	f.t.Helper()
	var email string
	if err := f.db.QueryRow(context.Background(), `SELECT email FROM auth.users WHERE id = $1`, userID).Scan(&email); err != nil {
		f.t.Fatal(err)
	}
	return email
}

// count runs a SELECT count(*) style query.
func (f *fixture) count(query string, args ...any) int {
	f.t.Helper()
	var n int
	if err := f.db.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		f.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// keyOf returns the user's signup key id, or "" when there is none.
func (f *fixture) keyOf(userID string) string {
	f.t.Helper()
	var id string
	err := f.db.QueryRow(context.Background(), `SELECT id FROM keyworker.api_keys WHERE user_id = $1 AND source = 'signup'`, userID).Scan(&id)
	if err == pgx.ErrNoRows {
		return ""
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

// waitFor polls cond every 50ms until it holds, failing the test after
// timeout with what and cond's last error.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ok, err := cond()
		if ok && err == nil {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, lastErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitCount waits until query's count equals want.
func (f *fixture) waitCount(timeout time.Duration, what string, want int, query string, args ...any) {
	f.t.Helper()
	var got int
	waitFor(f.t, timeout, fmt.Sprintf("%s (want %d)", what, want), func() (bool, error) {
		err := f.db.QueryRow(context.Background(), query, args...).Scan(&got)
		return got == want, err
	})
}

// waitQuiet waits until no River job is waiting, running or retrying.
func (f *fixture) waitQuiet(timeout time.Duration) {
	f.t.Helper()
	f.waitCount(timeout, "River to have no unfinished jobs", 0,
		`SELECT count(*) FROM keyworker.river_job WHERE state NOT IN ('completed', 'cancelled', 'discarded')`)
}

// waitSlotReleased waits until no connection holds the test's slot.
func (f *fixture) waitSlotReleased() {
	f.t.Helper()
	f.waitCount(10*time.Second, "the replication slot to be released", 0,
		`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active`, f.slot)
}

// pauseQueue pauses a River queue before any daemon starts: a producer
// that finds its queue paused at start fetches nothing until resumed.
func (f *fixture) pauseQueue(name string) {
	f.t.Helper()
	_, err := f.db.Exec(context.Background(), `INSERT INTO keyworker.river_queue (name, created_at, metadata, paused_at, updated_at)
		VALUES ($1, now(), '{}', now(), now()) ON CONFLICT (name) DO UPDATE SET paused_at = now()`, name)
	if err != nil {
		f.t.Fatal(err)
	}
}

// resumeQueue resumes a queue through River, which tells running producers.
func (f *fixture) resumeQueue(name string) {
	f.t.Helper()
	rc, err := river.NewClient(riverpgxv5.New(f.db), &river.Config{Schema: schema, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := rc.QueueResume(context.Background(), name, nil); err != nil {
		f.t.Fatalf("resuming queue %s: %v", name, err)
	}
}

// waitJobsFor waits until each user is in a create-keys job.
func (f *fixture) waitJobsFor(userIDs []string) {
	f.t.Helper()
	f.waitCount(20*time.Second, "a create-keys job for each user", len(userIDs),
		`SELECT count(DISTINCT u) FROM keyworker.river_job j, jsonb_array_elements_text(j.args->'user_ids') u
		  WHERE j.kind = $1 AND u = ANY($2)`,
		jobs.KindCreateKeys, userIDs)
}

// events returns the key's audit events, oldest first, as "event" or
// "event:sink".
func (f *fixture) events(keyID string) []string {
	f.t.Helper()
	rows, err := f.db.Query(context.Background(), `SELECT event || coalesce(':' || (detail->>'sink'), '') FROM keyworker.key_events WHERE key_id = $1 ORDER BY id`, keyID)
	if err != nil {
		f.t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// --- access tokens -----------------------------------------------------

// token signs a Supabase-shaped access token for userID with secret.
func token(t *testing.T, secret []byte, userID string, exp time.Time) string {
	t.Helper()
	tok, err := accesstoken.SignHS256(secret, map[string]any{
		"sub":  userID,
		"role": "authenticated",
		"aud":  "authenticated",
		"iat":  time.Now().Add(-time.Minute).Unix(),
		"exp":  exp.Unix(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *fixture) token(userID string) string {
	return token(f.t, f.jwtSecret, userID, time.Now().Add(time.Hour))
}

// revealAnswer is what POST /v1/keys/reveal answered.
type revealAnswer struct {
	status int
	header http.Header
	body   []byte
	// From a 200:
	Key       string `json:"key"`
	KeyID     string `json:"key_id"`
	Prefix    string `json:"prefix"`
	Last4     string `json:"last4"`
	CreatedAt string `json:"created_at"`
	// From an error:
	Code  string `json:"code"`
	Error string `json:"error"`
}

func reveal(t *testing.T, d *daemon.Daemon, bearer string) revealAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+d.Addr()+"/v1/keys/reveal", nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /v1/keys/reveal: %v", err)
	}
	defer resp.Body.Close()
	a := revealAnswer{status: resp.StatusCode, header: resp.Header}
	if a.body, err = io.ReadAll(resp.Body); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(a.body, &a); err != nil {
		t.Fatalf("reveal answered %d with a body that is not JSON: %q", a.status, a.body)
	}
	return a
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// --- metrics ----------------------------------------------------------------

// series is one scraped sample.
type series struct {
	name   string
	labels map[string]string
	value  float64
}

type scrape []series

func scrapeMetrics(t *testing.T, d *daemon.Daemon) scrape {
	t.Helper()
	addr := d.MetricsAddr()
	if addr == "" {
		addr = d.Addr()
	}
	status, body := get(t, "http://"+addr+"/metrics")
	if status != http.StatusOK {
		t.Fatalf("/metrics answered %d: %s", status, body)
	}
	var out scrape
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			t.Fatalf("bad metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			t.Fatalf("bad metrics value in %q: %v", line, err)
		}
		s := series{name: line[:sp], labels: map[string]string{}, value: v}
		if i := strings.IndexByte(s.name, '{'); i >= 0 {
			for _, kv := range strings.Split(strings.TrimSuffix(s.name[i+1:], "}"), ",") {
				k, val, _ := strings.Cut(kv, "=")
				s.labels[k] = strings.Trim(val, `"`)
			}
			s.name = s.name[:i]
		}
		out = append(out, s)
	}
	return out
}

// value returns the sample of name with exactly the given label pairs.
func (s scrape) value(name string, kv ...string) (float64, bool) {
	for _, x := range s {
		if x.name != name || len(x.labels) != len(kv)/2 {
			continue
		}
		match := true
		for i := 0; i+1 < len(kv); i += 2 {
			if x.labels[kv[i]] != kv[i+1] {
				match = false
			}
		}
		if match {
			return x.value, true
		}
	}
	return 0, false
}

// --- webhook receiver ------------------------------------------------------

// delivery is one webhook request as received.
type delivery struct {
	id     string
	body   []byte
	header http.Header
	status int // what the receiver answered; 0 when it hung up without one
	at     time.Time
	sigErr error
}

// webhookReceiver is an httptest server that checks every request's
// Standard Webhooks signature with the tests' own code (not notify's) and
// answers as respond says; the default answers 200.
type webhookReceiver struct {
	secret string
	srv    *httptest.Server
	// respond answers the n-th request (1-based) for a webhook-id. It
	// returns the status and extra headers, or hang to hold the request
	// until the sender gives up.
	respond atomic.Pointer[func(n int) (status int, header http.Header, hang bool)]
	release chan struct{}

	mu         sync.Mutex
	deliveries []delivery
	hanging    int
}

func newWebhookReceiver(t *testing.T) *webhookReceiver {
	t.Helper()
	key := randomBytes(t, 32)
	w := &webhookReceiver{
		secret:  "whsec_" + base64.StdEncoding.EncodeToString(key),
		release: make(chan struct{}),
	}
	w.srv = httptest.NewServer(http.HandlerFunc(w.serve))
	t.Cleanup(w.srv.Close)
	t.Cleanup(func() { close(w.release) }) // runs first: frees hung handlers
	return w
}

func (w *webhookReceiver) setRespond(f func(n int) (int, http.Header, bool)) { w.respond.Store(&f) }

func (w *webhookReceiver) serve(rw http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	d := delivery{id: r.Header.Get("webhook-id"), body: body, header: r.Header.Clone(), at: time.Now()}
	if err != nil {
		d.sigErr = err
	} else {
		d.sigErr = testenv.CheckWebhookSignature(w.secret, r.Header, body, 5*time.Minute)
	}
	w.mu.Lock()
	n := 1
	for _, x := range w.deliveries {
		if x.id == d.id {
			n++
		}
	}
	idx := len(w.deliveries)
	w.deliveries = append(w.deliveries, d)
	w.mu.Unlock()

	status, header, hang := http.StatusOK, http.Header(nil), false
	if f := w.respond.Load(); f != nil {
		status, header, hang = (*f)(n)
	}
	if hang {
		w.mu.Lock()
		w.hanging++
		w.mu.Unlock()
		select {
		case <-r.Context().Done():
		case <-w.release:
		}
		w.mu.Lock()
		w.hanging--
		w.mu.Unlock()
		return
	}
	for k, v := range header {
		rw.Header()[k] = v
	}
	w.mu.Lock()
	w.deliveries[idx].status = status
	w.mu.Unlock()
	rw.WriteHeader(status)
}

func (w *webhookReceiver) received() []delivery {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.deliveries)
}

func (w *webhookReceiver) hangingNow() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hanging
}

// webhookPayload is the part of a notice body the tests read.
type webhookPayload struct {
	Type string `json:"type"`
	Data struct {
		KeyID     string `json:"key_id"`
		UserID    string `json:"user_id"`
		Prefix    string `json:"prefix"`
		Last4     string `json:"last4"`
		RevealURL string `json:"reveal_url"`
	} `json:"data"`
}

// --- SMTP server --------------------------------------------------------------

// email is one message the SMTP server accepted.
type email struct {
	to   []string
	raw  []byte
	text string // headers and every MIME part, transfer-decoded
}

// smtpServer is a real SMTP server (emersion/go-smtp) on a loopback port
// that records what it accepts.
type smtpServer struct {
	addr string
	srv  *smtp.Server

	mu     sync.Mutex
	emails []email
}

func startSMTP(t *testing.T) *smtpServer {
	t.Helper()
	s := &smtpServer{}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &smtpSession{server: s}, nil
	}))
	s.srv.Domain = "localhost"
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.ReadTimeout = 10 * time.Second
	s.srv.WriteTimeout = 10 * time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = s.srv.Close()
		<-done
	})
	// Serve registers the listener only once it runs: wait for a greeting
	// so that Close is sure to stop it.
	c, err := net.DialTimeout("tcp", s.addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	greeting := make([]byte, 3)
	if _, err := io.ReadFull(c, greeting); err != nil || string(greeting) != "220" {
		t.Fatalf("test SMTP server greeting: %q, %v", greeting, err)
	}
	_ = c.Close()
	return s
}

// url is the daemon's SMTP setting for this server.
func (s *smtpServer) url() string { return "smtp://" + s.addr + "?starttls=off" }

func (s *smtpServer) received() []email {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.emails)
}

type smtpSession struct {
	server *smtpServer
	to     []string
}

func (s *smtpSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	e := email{to: slices.Clone(s.to), raw: raw, text: decodeEmail(raw)}
	s.server.mu.Lock()
	s.server.emails = append(s.server.emails, e)
	s.server.mu.Unlock()
	return nil
}

func (s *smtpSession) Reset()        { s.to = nil }
func (s *smtpSession) Logout() error { return nil }

// decodeEmail returns a message's headers and the transfer-decoded text of
// its parts, so that a secret split by quoted-printable soft line breaks is
// still found. A message it cannot parse is returned raw.
func decodeEmail(raw []byte) string {
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return string(raw)
	}
	var out strings.Builder
	for k, v := range msg.Header {
		fmt.Fprintf(&out, "%s: %s\n", k, strings.Join(v, ", "))
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || params["boundary"] == "" {
		b, _ := io.ReadAll(msg.Body)
		out.Write(b)
		return out.String()
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err != nil {
			break
		}
		var body io.Reader = p
		if strings.EqualFold(p.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			body = quotedprintable.NewReader(p)
		}
		b, _ := io.ReadAll(body)
		out.Write(b)
		out.WriteByte('\n')
	}
	return out.String()
}

// byRecipient counts emails per recipient.
func byRecipient(emails []email) map[string]int {
	n := map[string]int{}
	for _, e := range emails {
		for _, to := range e.to {
			n[to]++
		}
	}
	return n
}

// sortedKeys is for stable failure messages.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// strings returns the first column of query's rows.
func (f *fixture) strings(query string, args ...any) []string {
	f.t.Helper()
	rows, err := f.db.Query(context.Background(), query, args...)
	if err != nil {
		return []string{err.Error()}
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return []string{err.Error()}
	}
	return out
}
