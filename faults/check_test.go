package faults

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyworker/keyworker/accesstoken"
	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/jobs"
	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
	"github.com/keyworker/keyworker/pgtemp"
)

// eligibleWithoutKeySQL lists eligible users (not anonymous, not deleted)
// without a signup key.
const eligibleWithoutKeySQL = `
SELECT u.id::text FROM auth.users u
 WHERE NOT u.is_anonymous AND u.deleted_at IS NULL
   AND NOT EXISTS (SELECT 1 FROM keyworker.api_keys k WHERE k.user_id = u.id AND k.source = 'signup')
 ORDER BY u.created_at, u.id`

// signupKey is a row of api_keys.
type signupKey struct{ id, userID string }

// revealedKey is a key picked up by the test.
type revealedKey struct {
	keyID, userID, plaintext, secret string
	viaHTTP                          bool
}

// rig is one mode's world: a database, the worker, the receivers and the
// streamer. Only the test goroutine uses it.
type rig struct {
	t    *testing.T
	mode string
	plan plan
	rng  randSource

	url  string
	pool *pgxpool.Pool
	hook *hookReceiver
	mail *mailServer
	w    *worker
	sw   *streamer

	store     *keystore.Store
	jwtSecret []byte
	revealed  map[string]revealedKey // by key id
	secrets   map[string]string      // secret → key id, every key revealed so far
	scanned   int                    // revealed keys already given to ScanForSecrets

	counts  faultCounts
	phases  []phaseResult
	begun   time.Time
	lastRep streamReport
}

// randSource is the part of *rand.Rand the rig uses.
type randSource interface {
	IntN(n int) int
	Int64N(n int64) int64
	Perm(n int) []int
}

type faultCounts struct {
	kills, startupKills, pgFast, pgImmediate, walSenders, slotDrops, hookFaults, smtpFaults, checks int
	httpReveals, storeReveals, scannedNeedles                                                       int
}

type phaseResult struct {
	name                  string
	fault, intake, settle time.Duration
	check                 time.Duration
	// parts of check
	reveal, scanDB, scanAll time.Duration
	users, keys             int
}

func newRig(t *testing.T, mode string, p plan, rng randSource, seed uint64) *rig {
	t.Helper()
	ctx, cancel := ctxT()
	defer cancel()
	db := "faults_" + mode
	admin, err := pgx.Connect(ctx, server.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.Exec(ctx, "CREATE DATABASE "+db)
	_ = admin.Close(ctx)
	if err != nil {
		t.Fatalf("creating database %s: %v", db, err)
	}
	url := server.URL(db)
	if err := pgtemp.SetupSupabase(ctx, url); err != nil {
		t.Fatal(err)
	}
	// The worker's connection: the superuser's, or (mode "hosted") a role
	// shaped like hosted Supabase's postgres role, in KEYWORKER_MODE=auto.
	workerURL, workerMode := url, mode
	if mode == "hosted" {
		if workerURL, err = testenv.SetupHostedRole(ctx, url, "kw_hosted_postgres"); err != nil {
			t.Fatal(err)
		}
		workerMode = "auto"
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	sealingB64, err := keys.GenerateSealingKey()
	if err != nil {
		t.Fatal(err)
	}
	sealingKey, err := keys.ParseSealingKey(sealingB64)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := keys.NewSealer(sealingKey)
	if err != nil {
		t.Fatal(err)
	}
	store, err := keystore.New(keystore.Config{Sealer: sealer})
	if err != nil {
		t.Fatal(err)
	}
	jwt := make([]byte, 48)
	if _, err := rand.Read(jwt); err != nil {
		t.Fatal(err)
	}
	jwtSecret := []byte(base64.RawURLEncoding.EncodeToString(jwt))

	r := &rig{
		t: t, mode: mode, plan: p, rng: rng, url: url, pool: pool,
		store: store, jwtSecret: jwtSecret,
		revealed: map[string]revealedKey{}, secrets: map[string]string{},
		begun: time.Now(),
	}
	r.hook = newHookReceiver(t)
	r.mail = newMailServer(t)
	env := map[string]string{
		"DATABASE_URL":                 workerURL,
		"KEYWORKER_MODE":               workerMode,
		"KEYWORKER_SEALING_KEY":        sealingB64,
		"KEYWORKER_JWT_SECRET":         string(jwtSecret),
		"KEYWORKER_WEBHOOK_URL":        r.hook.url(),
		"KEYWORKER_WEBHOOK_SECRET":     r.hook.secret,
		"KEYWORKER_SMTP_URL":           r.mail.url(),
		"KEYWORKER_MAIL_FROM":          "Keys <keys@example.test>",
		"KEYWORKER_LOG_FORMAT":         "json",
		"KEYWORKER_LOG_LEVEL":          "debug",
		"KEYWORKER_RECONCILE_INTERVAL": "5s",
		"KEYWORKER_SHUTDOWN_TIMEOUT":   "10s",
	}
	if p.jobTimeout != "" {
		env["KEYWORKER_JOB_TIMEOUT"] = p.jobTimeout
	}
	r.w = newWorker(fmt.Sprintf("%s/%s-worker.log", artifacts, mode), freeAddr(t), env)
	t.Cleanup(r.w.shutdown)
	r.sw = newStreamer(url, p.rate, 2, seed)
	t.Cleanup(r.sw.stop)
	t.Cleanup(func() {
		if mode != "logical" {
			return
		}
		// The slot would pin WAL for the rest of the run.
		ctx, cancel := ctxT()
		defer cancel()
		_, _ = pool.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database() AND NOT active`)
	})
	return r
}

// count runs a query returning one integer.
func (r *rig) count(q string, args ...any) int {
	r.t.Helper()
	ctx, cancel := ctxT()
	defer cancel()
	var n int
	if err := r.pool.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		r.t.Fatalf("%s: %v", strings.TrimSpace(q), err)
	}
	return n
}

func (r *rig) strings(q string, args ...any) []string {
	r.t.Helper()
	ctx, cancel := ctxT()
	defer cancel()
	rows, err := r.pool.Query(ctx, q, args...)
	if err != nil {
		r.t.Fatalf("%s: %v", strings.TrimSpace(q), err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		r.t.Fatalf("%s: %v", strings.TrimSpace(q), err)
	}
	return out
}

func (r *rig) signupKeys() []signupKey {
	r.t.Helper()
	ctx, cancel := ctxT()
	defer cancel()
	rows, err := r.pool.Query(ctx, `SELECT id, user_id::text FROM keyworker.api_keys WHERE source = 'signup' ORDER BY id`)
	if err != nil {
		r.t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (signupKey, error) {
		var k signupKey
		err := row.Scan(&k.id, &k.userID)
		return k, err
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

// outstanding is what the pipeline still owes: users without keys, keys
// without a delivered webhook or email.
type outstanding struct {
	users, unhooked, unmailed []string
}

func (o outstanding) none() bool {
	return len(o.users) == 0 && len(o.unhooked) == 0 && len(o.unmailed) == 0
}

func (o outstanding) String() string {
	return fmt.Sprintf("%d eligible users without a key, %d keys without a delivered webhook, %d keys without an email",
		len(o.users), len(o.unhooked), len(o.unmailed))
}

func (r *rig) outstanding() outstanding {
	var o outstanding
	o.users = r.strings(eligibleWithoutKeySQL)
	hooks, mails := r.hook.snapshot(), r.mail.snapshot()
	for _, k := range r.signupKeys() {
		if hooks.byKey[k.id].delivered == 0 {
			o.unhooked = append(o.unhooked, k.id)
		}
		if mails.byKey[k.id].received == 0 {
			o.unmailed = append(o.unmailed, k.id)
		}
	}
	return o
}

// settleStall is how long the outstanding work may fail to shrink before
// settle gives up. It must exceed the longest legitimate pause: after a
// kill -9, jobs the dead process left running wait for River's rescuer
// (the job timeout, up to 1m, + 15s grace + up to its 30s interval); after a notice
// failure, a retry may wait River's 16s backoff plus its 5s scheduler.
const settleStall = 150 * time.Second

// settle waits until nothing is outstanding. It fails, with examples and
// what River and the audit trail say about them, when the outstanding work
// has not shrunk for settleStall or the whole wait passes
// plan.settleTimeout; a busy machine slows the pipeline down without
// failing the suite.
func (r *rig) settle(name string) time.Duration {
	r.t.Helper()
	start, lastNote, lastProgress := time.Now(), time.Now(), time.Now()
	best := -1
	for {
		o := r.outstanding()
		if o.none() {
			return time.Since(start)
		}
		if n := len(o.users) + len(o.unhooked) + len(o.unmailed); best < 0 || n < best {
			best, lastProgress = n, time.Now()
		}
		stalled := time.Since(lastProgress) > settleStall
		if stalled || time.Since(start) > r.plan.settleTimeout {
			why := fmt.Sprintf("no progress for %s", settleStall)
			if !stalled {
				why = fmt.Sprintf("still progressing after %s", r.plan.settleTimeout)
			}
			r.t.Fatalf("%s: not settled (%s): %s\n%s\njobs: %s", name, why, o, r.explain(o), r.jobStates())
		}
		if time.Since(lastNote) > 30*time.Second {
			lastNote = time.Now()
			r.t.Logf("%s: settling for %s: %s; unfinished jobs: %s", name, time.Since(start).Round(time.Second), o,
				strings.Join(r.strings(`SELECT kind || '/' || state::text || '=' || count(*) FROM keyworker.river_job WHERE state <> 'completed' GROUP BY kind, state ORDER BY kind, state`), " "))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// explain describes up to five examples of each kind of outstanding work.
func (r *rig) explain(o outstanding) string {
	var b strings.Builder
	for _, id := range o.users[:min(5, len(o.users))] {
		fmt.Fprintf(&b, "  user %s without a key: create-keys jobs %v; events %v\n", id,
			r.strings(`SELECT id || ' ' || state::text || ' attempt ' || attempt || coalesce(' at ' || attempted_at::text, '') || coalesce(' last error: ' || (errors[array_length(errors, 1)]->>'error'), '')
				FROM keyworker.river_job WHERE kind = $1 AND args @> jsonb_build_object('user_ids', jsonb_build_array($2::text)) ORDER BY id`, jobs.KindCreateKeys, id),
			r.strings(`SELECT event || ' ' || detail::text FROM keyworker.key_events WHERE user_id = $1::uuid ORDER BY id`, id))
	}
	for _, list := range []struct {
		what string
		ids  []string
	}{{"without a delivered webhook", o.unhooked}, {"without an email", o.unmailed}} {
		for _, id := range list.ids[:min(5, len(list.ids))] {
			fmt.Fprintf(&b, "  key %s %s: deliver-notices jobs %v; events %v\n", id, list.what,
				r.strings(`SELECT state::text || ' attempt ' || attempt || coalesce(' at ' || attempted_at::text, '') || coalesce(' scheduled ' || scheduled_at::text, '') || coalesce(' last error: ' || (errors[array_length(errors, 1)]->>'error'), '')
					FROM keyworker.river_job WHERE kind = $1 AND args @> jsonb_build_object('key_ids', jsonb_build_array($2::text)) ORDER BY id`, jobs.KindDeliverNotices, id),
				r.strings(`SELECT event || ' ' || detail::text FROM keyworker.key_events WHERE key_id = $1 ORDER BY id`, id))
		}
	}
	return b.String()
}

func (r *rig) jobStates() string {
	return strings.Join(r.strings(`SELECT kind || '/' || state::text || '=' || count(*) FROM keyworker.river_job GROUP BY kind, state ORDER BY kind, state`), " ")
}

// quickCheck asserts what holds at every moment, settled or not: nobody
// has two signup keys, no ineligible user has one, no key was announced
// under two ids or mailed under two Message-IDs, no signature was bad.
func (r *rig) quickCheck(name string) {
	r.t.Helper()
	var errs []string
	if n := r.count(`SELECT count(*) FROM (SELECT user_id FROM keyworker.api_keys WHERE source = 'signup' GROUP BY user_id HAVING count(*) > 1) d`); n != 0 {
		errs = append(errs, fmt.Sprintf("%d users have more than one signup key", n))
	}
	if n := r.count(`SELECT count(*) FROM keyworker.api_keys k JOIN auth.users u ON u.id = k.user_id
		WHERE k.source = 'signup' AND (u.is_anonymous OR u.deleted_at IS NOT NULL)`); n != 0 {
		errs = append(errs, fmt.Sprintf("%d anonymous or soft-deleted users have a signup key", n))
	}
	hooks, mails := r.hook.snapshot(), r.mail.snapshot()
	idOwner := map[string]string{}
	for keyID, k := range hooks.byKey {
		if len(k.ids) != 1 {
			errs = append(errs, fmt.Sprintf("key %s was announced under %d webhook ids %v", keyID, len(k.ids), sortedKeys(k.ids)))
		}
		for id := range k.ids {
			if other, ok := idOwner[id]; ok {
				errs = append(errs, fmt.Sprintf("webhook id %s was used for keys %s and %s", id, other, keyID))
			}
			idOwner[id] = keyID
		}
	}
	for keyID, k := range mails.byKey {
		if len(k.messageIDs) != 1 {
			errs = append(errs, fmt.Sprintf("key %s was mailed under %d Message-IDs %v", keyID, len(k.messageIDs), sortedKeys(k.messageIDs)))
		}
	}
	for _, p := range hooks.problems[:min(5, len(hooks.problems))] {
		errs = append(errs, "webhook receiver: "+p)
	}
	for _, p := range mails.problems[:min(5, len(mails.problems))] {
		errs = append(errs, "SMTP server: "+p)
	}
	if bad := logProblems(r.w.log()); bad != "" {
		errs = append(errs, bad)
	}
	if len(errs) > 0 {
		r.t.Fatalf("%s: %s", name, strings.Join(errs, "\n  "))
	}
}

// logProblems reports a data race report, a panic or a fatal runtime error
// in a worker log.
func logProblems(log []byte) string {
	for _, marker := range []string{"WARNING: DATA RACE", "\npanic: ", "\nfatal error: "} {
		if i := bytes.Index(log, []byte(marker)); i >= 0 {
			end := min(len(log), i+3000)
			return fmt.Sprintf("the worker's log has %q:\n%s", strings.TrimSpace(marker), log[i:end])
		}
	}
	return ""
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// check is the full invariant check after a fault: the streamer must be
// paused. It settles first, then asserts invariants 1 to 5 (see doc.go).
func (r *rig) check(name string, res *phaseResult, final bool) {
	r.t.Helper()
	r.counts.checks++
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := r.sw.settleUncertain(ctx, r.pool)
	if err != nil {
		r.t.Fatalf("%s: %v", name, err)
	}
	r.lastRep = rep
	res.settle = r.settle(name)
	start := time.Now()

	// 1 (and the parts of 2 that hold at every moment).
	r.quickCheck(name)
	keysNow := r.signupKeys()
	res.keys = len(keysNow)
	res.users = r.count(`SELECT count(*) FROM auth.users WHERE NOT is_anonymous AND deleted_at IS NULL`)
	if res.users != len(keysNow) {
		r.t.Fatalf("%s: %d eligible users but %d signup keys", name, res.users, len(keysNow))
	}
	if n := r.count(`SELECT count(*) FROM keyworker.api_keys k WHERE NOT EXISTS (SELECT 1 FROM auth.users u WHERE u.id = k.user_id)`); n != 0 {
		r.t.Fatalf("%s: %d keys of users that do not exist", name, n)
	}

	// 2: every key announced once (one id, delivered, right user) and
	// mailed to its user; nothing given up.
	hooks, mails := r.hook.snapshot(), r.mail.snapshot()
	var errs []string
	for _, k := range keysNow {
		h := hooks.byKey[k.id]
		if h.delivered == 0 || len(h.ids) != 1 || h.userID != k.userID {
			errs = append(errs, fmt.Sprintf("key %s of user %s: webhook delivered %d times under ids %v for user %q", k.id, k.userID, h.delivered, sortedKeys(h.ids), h.userID))
		}
		m := mails.byKey[k.id]
		want := k.userID + "@example.test"
		if m.received == 0 || len(m.messageIDs) != 1 || len(m.to) != 1 || !m.to[want] {
			errs = append(errs, fmt.Sprintf("key %s of user %s: %d emails under Message-IDs %v to %v, want to %s", k.id, k.userID, m.received, sortedKeys(m.messageIDs), sortedKeys(m.to), want))
		}
	}
	if len(errs) > 0 {
		r.t.Fatalf("%s: %d notice problems, e.g.:\n  %s", name, len(errs), strings.Join(errs[:min(10, len(errs))], "\n  "))
	}
	if n := r.count(`SELECT count(*) FROM keyworker.key_events WHERE event = 'notify_discarded'`); n != 0 {
		r.t.Fatalf("%s: %d notices discarded: %v", name, n, r.strings(`SELECT key_id || ' ' || detail::text FROM keyworker.key_events WHERE event = 'notify_discarded' LIMIT 5`))
	}
	if gaveUp := r.strings(`SELECT kind || ' ' || state::text || ' ' || coalesce(errors[array_length(errors, 1)]->>'error', '')
		FROM keyworker.river_job WHERE state IN ('discarded', 'cancelled') LIMIT 5`); len(gaveUp) > 0 {
		r.t.Fatalf("%s: jobs gave up: %v", name, gaveUp)
	}

	// 3: the reconciler finds nothing to do.
	replay, err := jobs.Reconcile(ctx, r.pool, jobs.ReconcileOptions{DryRun: true})
	if err != nil {
		r.t.Fatalf("%s: replay (dry run): %v", name, err)
	}
	if replay.Found != 0 {
		r.t.Fatalf("%s: a dry-run replay since %s finds %d eligible users without a key", name, replay.Since, replay.Found)
	}

	// 4: no plaintext anywhere.
	r.revealAndScan(ctx, name, final, res)

	// 5: the worker is healthy.
	r.assertHealthy(name)
	res.check = time.Since(start)
}

// assertHealthy: the process runs and /readyz answers 200.
func (r *rig) assertHealthy(name string) {
	r.t.Helper()
	if !r.w.running() {
		r.t.Fatalf("%s: the worker is not running (%v); its log ends:\n%s", name, r.w.err, r.w.logTail(4000))
	}
	code, body, err := r.w.get("/readyz")
	if err != nil || code != http.StatusOK {
		r.t.Fatalf("%s: /readyz answered %d %q (%v)", name, code, body, err)
	}
	if bad := logProblems(r.w.log()); bad != "" {
		r.t.Fatalf("%s: %s", name, bad)
	}
}

// revealAndScan picks up keys (a couple through the HTTP endpoint with
// user tokens, more through the key store, all of them in the final
// check) and then looks for every key picked up so far, and its secret,
// in the database, the logs, the webhook bodies and the emails.
func (r *rig) revealAndScan(ctx context.Context, name string, final bool, res *phaseResult) {
	r.t.Helper()
	start := time.Now()
	var pending []signupKey
	for _, k := range r.signupKeys() {
		if _, ok := r.revealed[k.id]; !ok {
			pending = append(pending, k)
		}
	}
	order := r.rng.Perm(len(pending))
	viaHTTP := min(r.plan.httpRevealsPerCheck, len(pending))
	for _, i := range order[:viaHTTP] {
		r.revealHTTP(name, pending[i])
	}
	n := len(pending)
	if !final {
		n = min(n, viaHTTP+r.plan.storeRevealsPerCheck)
	}
	r.revealStore(ctx, name, pending, order[viaHTTP:n])

	// ScanForSecrets compares every needle with every value, so each key
	// goes through it once, in the check that revealed it (in the final
	// check, which reveals every key left, a sample of plan.finalScanKeys
	// and the ones revealed through HTTP); the streaming scan below looks
	// for every key revealed so far.
	var fresh []string
	for _, i := range order[:n] {
		fresh = append(fresh, pending[i].id)
	}
	sample := fresh
	if final && len(fresh) > r.plan.finalScanKeys {
		sample = append([]string(nil), fresh[:viaHTTP]...)
		for _, i := range r.rng.Perm(len(fresh) - viaHTTP)[:r.plan.finalScanKeys] {
			sample = append(sample, fresh[viaHTTP+i])
		}
	}
	// A full key contains its secret, so the secret alone finds both (in
	// text and in bytea alike) at half the cost.
	var needles []string
	for _, id := range sample {
		needles = append(needles, r.revealed[id].secret)
	}
	res.reveal = time.Since(start)
	start = time.Now()
	hits, err := testenv.ScanForSecrets(ctx, r.pool, needles)
	if err != nil {
		r.t.Fatalf("%s: scanning the database: %v", name, err)
	}
	if len(hits) > 0 {
		r.t.Fatalf("%s: plaintext keys stored in %v", name, hits)
	}
	r.counts.scannedNeedles += len(needles)
	res.scanDB = time.Since(start)
	start = time.Now()

	idx := newSecretIndex(r.secrets)
	var leaks []string
	note := func(where string, keyIDs []string) {
		if len(keyIDs) > 0 {
			leaks = append(leaks, fmt.Sprintf("%s holds the secret of keys %v", where, keyIDs[:min(5, len(keyIDs))]))
		}
	}
	for _, l := range []struct {
		what string
		text []byte
	}{{"the worker's log", r.w.log()}, {"PostgreSQL's log", []byte(server.Log(1 << 30))}} {
		if hits := idx.hits(l.text); len(hits) > 0 {
			leaks = append(leaks, fmt.Sprintf("%s holds the secret of %d keys:\n    %s", l.what, len(hits), idx.where(l.text, hits)))
		}
	}
	var inHooks, inMails []string
	r.hook.eachBody(func(b []byte) { inHooks = append(inHooks, idx.find(b)...) })
	r.mail.eachText(func(b []byte) { inMails = append(inMails, idx.find(b)...) })
	note("a webhook body", inHooks)
	note("an email", inMails)
	dumped, found, err := r.dumpScan(ctx, idx)
	if err != nil {
		r.t.Fatalf("%s: dumping tables: %v", name, err)
	}
	leaks = append(leaks, found...)
	res.scanAll = time.Since(start)
	if len(leaks) > 0 {
		r.t.Fatalf("%s: plaintext keys leaked:\n  %s", name, strings.Join(leaks, "\n  "))
	}
	r.t.Logf("%s: %d keys revealed so far (%d through HTTP); %d in ScanForSecrets, all in the logs, notices and a %d-byte dump of every table: no plaintext",
		name, len(r.revealed), r.counts.httpReveals, len(sample), dumped)
}

// revealHTTP picks up the key of k's user through POST /v1/keys/reveal
// with an access token signed as Supabase Auth signs it, checks the
// answer, and checks that a second pick-up finds nothing.
func (r *rig) revealHTTP(name string, k signupKey) {
	r.t.Helper()
	token, err := accesstoken.SignHS256(r.jwtSecret, map[string]any{
		"sub": k.userID, "aud": "authenticated", "role": "authenticated",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	})
	if err != nil {
		r.t.Fatal(err)
	}
	post := func() (int, []byte) {
		for attempt := 0; ; attempt++ {
			req, _ := http.NewRequest(http.MethodPost, "http://"+r.w.addr+"/v1/keys/reveal", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := r.w.client.Do(req)
			if err != nil {
				r.t.Fatalf("%s: POST /v1/keys/reveal: %v", name, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusTooManyRequests && attempt < 3 {
				// Per-address limit: wait the minute out.
				time.Sleep(20 * time.Second)
				continue
			}
			return resp.StatusCode, body
		}
	}
	code, body := post()
	if code != http.StatusOK {
		r.t.Fatalf("%s: revealing the key of user %s: %d %s", name, k.userID, code, body)
	}
	var got struct {
		Key   string `json:"key"`
		KeyID string `json:"key_id"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		r.t.Fatalf("%s: reveal answered %d bytes that are not JSON: %v", name, len(body), err)
	}
	r.addRevealed(name, k, got.KeyID, got.Key, true)
	if code, body := post(); code != http.StatusNotFound {
		r.t.Fatalf("%s: a second pick-up of user %s's key answered %d %s, want 404", name, k.userID, code, body)
	}
	r.counts.httpReveals++
}

// revealStore picks up keys through the key store, as the endpoint does,
// from a few goroutines.
func (r *rig) revealStore(ctx context.Context, name string, pending []signupKey, which []int) {
	r.t.Helper()
	type result struct {
		k   signupKey
		rev *keystore.Revealed
		err error
	}
	work := make(chan signupKey)
	results := make(chan result)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				rev, err := r.store.Reveal(ctx, r.pool, k.userID, keystore.Audit{Actor: keystore.ActorUser, Detail: map[string]any{"via": "fault suite"}})
				results <- result{k, rev, err}
			}
		}()
	}
	go func() {
		for _, i := range which {
			work <- pending[i]
		}
		close(work)
		wg.Wait()
		close(results)
	}()
	var failed []string
	for res := range results {
		if res.err != nil {
			failed = append(failed, fmt.Sprintf("user %s: %v", res.k.userID, res.err))
			continue
		}
		r.addRevealed(name, res.k, res.rev.KeyID, res.rev.Plaintext(), false)
		r.counts.storeReveals++
	}
	if len(failed) > 0 {
		r.t.Fatalf("%s: %d keys could not be revealed, e.g. %v", name, len(failed), failed[:min(3, len(failed))])
	}
}

func (r *rig) addRevealed(name string, k signupKey, keyID, plaintext string, viaHTTP bool) {
	r.t.Helper()
	p, err := keys.Parse(plaintext)
	if err != nil || keyID != k.id || p.ID() != k.id || p.Prefix() != "sk" {
		r.t.Fatalf("%s: user %s's key %s came back as key %s, parse error %v", name, k.userID, k.id, keyID, err)
	}
	r.revealed[k.id] = revealedKey{keyID: k.id, userID: k.userID, plaintext: plaintext, secret: p.Secret(), viaHTTP: viaHTTP}
	r.secrets[p.Secret()] = k.id
}

// secretIndex finds known secrets in text: every run of 43 or more base62
// characters is looked up window by window, and every long run of hex
// digits is decoded and searched too (bytea's text form). A full key
// contains its secret, so this finds full keys as well.
type secretIndex struct{ bySecret map[string]string }

func newSecretIndex(secrets map[string]string) secretIndex { return secretIndex{bySecret: secrets} }

const secretLen = 43

func isBase62(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// find returns the ids of the keys whose secret occurs in b.
func (x secretIndex) find(b []byte) []string {
	var out []string
	for _, h := range x.hits(b) {
		out = append(out, h.keyID)
	}
	return out
}

// secretHit is a secret found at offset at (of the run it was found in,
// for hex-encoded ones).
type secretHit struct {
	keyID string
	at    int
}

func (x secretIndex) hits(b []byte) []secretHit {
	if len(x.bySecret) == 0 {
		return nil
	}
	var out []secretHit
	x.scan(b, 0, &out, true)
	return out
}

// where describes hits in a log: the line, with the secret masked.
func (x secretIndex) where(b []byte, hits []secretHit) string {
	var lines []string
	for _, h := range hits[:min(3, len(hits))] {
		start := bytes.LastIndexByte(b[:h.at], '\n') + 1
		end := bytes.IndexByte(b[h.at:], '\n')
		if end < 0 {
			end = len(b)
		} else {
			end += h.at
		}
		line := string(b[start:end])
		for secret, id := range x.bySecret {
			if id == h.keyID {
				line = strings.ReplaceAll(line, secret, "<secret of key "+id+">")
			}
		}
		lines = append(lines, fmt.Sprintf("line %d: %.600s", bytes.Count(b[:start], []byte{'\n'})+1, line))
	}
	return strings.Join(lines, "\n    ")
}

func (x secretIndex) scan(b []byte, base int, out *[]secretHit, decodeHex bool) {
	for i := 0; i < len(b); {
		if !isBase62(b[i]) {
			i++
			continue
		}
		j := i
		for j < len(b) && isBase62(b[j]) {
			j++
		}
		run := b[i:j]
		if len(run) >= secretLen {
			for k := 0; k+secretLen <= len(run); k++ {
				if id, ok := x.bySecret[string(run[k:k+secretLen])]; ok {
					*out = append(*out, secretHit{keyID: id, at: base + i + k})
				}
			}
		}
		if decodeHex && len(run) >= 2*secretLen {
			for h := 0; h < len(run); {
				if !isHex(run[h]) {
					h++
					continue
				}
				e := h
				for e < len(run) && isHex(run[e]) {
					e++
				}
				for off := 0; off < 2 && e-h-off >= 2*secretLen; off++ {
					seg := run[h+off : e]
					seg = seg[:len(seg)/2*2]
					if dec, err := hex.DecodeString(string(seg)); err == nil {
						x.scan(dec, base+i+h, out, false)
					}
				}
				h = e
			}
		}
		i = j
	}
}

// dumpScan copies every table outside the system schemas in text form
// (COPY ... TO STDOUT) and searches it for every revealed secret. It
// returns the bytes read and one line per table holding a secret.
func (r *rig) dumpScan(ctx context.Context, idx secretIndex) (int, []string, error) {
	tables := r.strings(`SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
		ORDER BY 1`)
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return 0, nil, err
	}
	defer conn.Release()
	total := 0
	var found []string
	var buf bytes.Buffer
	for _, tbl := range tables {
		buf.Reset()
		if _, err := conn.Conn().PgConn().CopyTo(ctx, &buf, "COPY (SELECT * FROM "+tbl+") TO STDOUT"); err != nil {
			return total, nil, fmt.Errorf("copying %s: %w", tbl, err)
		}
		total += buf.Len()
		if ids := idx.find(buf.Bytes()); len(ids) > 0 {
			found = append(found, fmt.Sprintf("table %s holds the secret of keys %v", tbl, ids[:min(5, len(ids))]))
		}
	}
	return total, found, nil
}

// The suite is only as good as its leak detector: it must find a secret on
// its own, inside a full key, in JSON, and hex-encoded as bytea's text
// form shows it, and nothing else.
func TestSecretIndexFindsSecretsAnywhere(t *testing.T) {
	k, err := keys.Generate("sk")
	if err != nil {
		t.Fatal(err)
	}
	p, err := keys.Parse(k.Plaintext())
	if err != nil {
		t.Fatal(err)
	}
	secret := p.Secret()
	idx := newSecretIndex(map[string]string{secret: p.ID()})
	for _, tc := range []struct {
		name, text string
		found      bool
	}{
		{"the secret alone", secret, true},
		{"the full key in a JSON log line", `{"level":"DEBUG","msg":"x","k":"` + k.Plaintext() + `"}`, true},
		{"bytea text form", `\x` + hex.EncodeToString([]byte("key="+k.Plaintext())), true},
		{"hex at an odd offset", `\x0` + hex.EncodeToString([]byte(secret)), true},
		{"the redacted form", k.String(), false},
		{"all but the last character", secret[:len(secret)-1], false},
		{"another key", "sk_" + p.ID() + "_" + strings.Repeat("A", 49), false},
	} {
		if got := len(idx.find([]byte(tc.text))) > 0; got != tc.found {
			t.Errorf("%s: found %v, want %v", tc.name, got, tc.found)
		}
	}
}
