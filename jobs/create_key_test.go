package jobs_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river/rivertype"

	"github.com/keyworker/keyworker/jobs"
	"github.com/keyworker/keyworker/keystore"
	"github.com/keyworker/keyworker/notify"
	"github.com/keyworker/keyworker/users"
)

// TestEachUserGetsOneKeyAndOneNotice is the main path: signups enqueued
// (with duplicates) become exactly one key and one signed webhook each.
func TestEachUserGetsOneKeyAndOneNotice(t *testing.T) {
	t.Parallel()
	hook := newHookServer(t, nil)
	f := setup(t, func(c *jobs.Config) {
		c.Senders = []notify.Sender{hook.sender(t, 5*time.Second)}
		c.KeyTTL = 24 * time.Hour
	})
	ctx := context.Background()
	const n = 20
	ids := f.newUsers(t, n)

	// Duplicates within a batch are dropped; a second batch of the same
	// users (a replay racing the stream) makes no second key or notice.
	if got := f.enqueueUsers(t, append(ids, ids[:5]...)...); got != n {
		t.Fatalf("EnqueueSignupsTx = %d new, want %d", got, n)
	}
	if got := f.enqueueUsers(t, ids...); got != n {
		t.Fatalf("second EnqueueSignupsTx = %d, want %d", got, n)
	}
	if got := count(t, f.db, `SELECT count(*) FROM keyworker.river_job WHERE kind = $1`, jobs.KindCreateKeys); got != 2 {
		t.Fatalf("%d create-keys jobs, want 2 (one per hand-off)", got)
	}
	f.start(t)
	f.waitEvents(t, "notified", n, 20*time.Second)
	f.waitIdle(t, 10*time.Second)
	if got := count(t, f.db, `SELECT count(*) FROM keyworker.key_events WHERE event = 'skipped' AND detail->>'reason' = 'key_exists'`); got != n {
		t.Fatalf("%d key_exists skips, want %d (the second batch's)", got, n)
	}

	if got := count(t, f.db, `SELECT count(*) FROM keyworker.api_keys WHERE source = 'signup'`); got != n {
		t.Fatalf("%d signup keys, want %d", got, n)
	}
	if got := count(t, f.db, `SELECT count(DISTINCT user_id) FROM keyworker.api_keys`); got != n {
		t.Fatalf("keys for %d users, want %d", got, n)
	}
	if got := count(t, f.db, `SELECT count(*) FROM keyworker.api_keys
		WHERE expires_at BETWEEN created_at + interval '23 hours 59 minutes' AND created_at + interval '24 hours 1 minute'`); got != n {
		t.Fatalf("%d keys expire after KeyTTL, want %d", got, n)
	}
	reqs, bad := hook.snapshot()
	if len(bad) > 0 {
		t.Fatalf("badly signed webhooks: %v", bad)
	}
	if len(reqs) != n {
		t.Fatalf("%d webhooks, want %d", len(reqs), n)
	}
	seen := map[string]bool{}
	for _, r := range reqs {
		var payload struct {
			Type string `json:"type"`
			Data struct {
				KeyID     string `json:"key_id"`
				UserID    string `json:"user_id"`
				Last4     string `json:"last4"`
				RevealURL string `json:"reveal_url"`
			} `json:"data"`
		}
		if err := json.Unmarshal(r.body, &payload); err != nil {
			t.Fatal(err)
		}
		if r.id != "notice_"+payload.Data.KeyID || seen[r.id] {
			t.Fatalf("webhook-id %q for key %s (duplicate: %v)", r.id, payload.Data.KeyID, seen[r.id])
		}
		seen[r.id] = true
		info, err := f.store.Get(ctx, f.db, payload.Data.KeyID)
		if err != nil || info.UserID != payload.Data.UserID || info.Last4 != payload.Data.Last4 || payload.Data.RevealURL != revealURL {
			t.Fatalf("webhook %s does not describe its key: %+v, %+v, %v", r.id, payload.Data, info, err)
		}
	}
	if got := count(t, f.db, `SELECT count(*) FROM keyworker.key_events WHERE event = 'notified' AND detail->>'sink' = 'webhook'`); got != n {
		t.Fatalf("%d notified events, want %d", got, n)
	}
	// Job args hold ids only.
	rows, err := f.db.Query(ctx, `SELECT args::text FROM keyworker.river_job WHERE kind IN ($1, $2)`, jobs.KindCreateKeys, jobs.KindDeliverNotices)
	if err != nil {
		t.Fatal(err)
	}
	args, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(args) != 3 {
		t.Fatalf("%d create-keys and notice jobs, want 3", len(args))
	}
	for _, a := range args {
		var m struct {
			UserIDs []string `json:"user_ids"`
			KeyIDs  []string `json:"key_ids"`
			Source  string   `json:"source"`
		}
		dec := json.NewDecoder(strings.NewReader(a))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&m); err != nil || len(m.UserIDs)+len(m.KeyIDs) != n || (m.Source != "" && m.Source != "signup") {
			t.Fatalf("job args %s hold more than ids (%v)", a, err)
		}
	}
}

// TestNoticeJobsAreInsertedWithoutANotification guards the quiet insert of
// a batch's DeliverNotices job: River's insert notification would take
// PostgreSQL's notify lock at the batch's commit, in turn with the
// listener's hand-offs (and, in listen mode, every signup). The hand-offs
// still notify the keys queue, and the notices still go out, found by the
// notice queue's poll. Each batch waits for the previous one's notice, so
// a notifying insert would notify once per batch.
func TestNoticeJobsAreInsertedWithoutANotification(t *testing.T) {
	t.Parallel()
	hook := newHookServer(t, nil)
	f := setup(t, func(c *jobs.Config) { c.Senders = []notify.Sender{hook.sender(t, 5*time.Second)} })
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, f.db.Config().ConnConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `LISTEN "keyworker.river_insert"`); err != nil {
		t.Fatal(err)
	}
	f.start(t)
	const batches, n = 3, 4
	for i := range batches {
		f.enqueueUsers(t, f.newUsers(t, n)...)
		f.waitEvents(t, "notified", (i+1)*n, 20*time.Second)
	}
	f.waitJobs(t, jobs.KindDeliverNotices, rivertype.JobStateCompleted, batches, 10*time.Second)

	queues := map[string]int{}
	for {
		wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		nt, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			break // none left
		}
		var p struct {
			Queue string `json:"queue"`
		}
		if err := json.Unmarshal([]byte(nt.Payload), &p); err != nil {
			t.Fatalf("insert notification %q: %v", nt.Payload, err)
		}
		queues[p.Queue]++
	}
	if queues[jobs.QueueKeys] == 0 {
		t.Fatalf("no insert notification for %s (got %v): not listening where River notifies", jobs.QueueKeys, queues)
	}
	// The quiet inserter notifies once an hour: its first insert may.
	if queues[jobs.QueueNotices] > 1 {
		t.Fatalf("%d insert notifications for %s from %d notice jobs, want at most 1 (got %v)", queues[jobs.QueueNotices], jobs.QueueNotices, batches, queues)
	}
}

// TestUsersWhoShouldNotHaveAKeyGetNone covers invariant 5 in one batch: a
// user deleted before the job runs, a soft-deleted and an anonymous user, an
// id that never existed, a user who has a key already and an id that is not
// a uuid (edited by hand in the dashboard) are recorded skips, and the
// eligible users of the same batch get their keys.
func TestUsersWhoShouldNotHaveAKeyGetNone(t *testing.T) {
	t.Parallel()
	hook := newHookServer(t, nil)
	f := setup(t, func(c *jobs.Config) { c.Senders = []notify.Sender{hook.sender(t, 5*time.Second)} })
	ctx := context.Background()
	gone := f.newUser(t, "")
	soft := f.newUser(t, "deleted")
	anon := f.newUser(t, "anonymous")
	never := userID(userSeq.Add(1))
	keyed := f.newUser(t, "")
	var had keystore.Created
	if err := pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error {
		var err error
		had, err = f.store.CreateTx(ctx, tx, keystore.NewKey{UserID: keyed}, keystore.Audit{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	fine := f.newUsers(t, 3)
	if got := f.enqueueUsers(t, append([]string{gone, soft, anon, never, keyed, "'; drop table x --"}, fine...)...); got != 9 {
		t.Fatalf("enqueued %d", got)
	}
	if _, err := f.db.Exec(ctx, `DELETE FROM auth.users WHERE id = $1`, gone); err != nil {
		t.Fatal(err)
	}
	f.start(t)
	f.waitJobs(t, jobs.KindCreateKeys, rivertype.JobStateCompleted, 1, 15*time.Second)
	f.waitIdle(t, 10*time.Second)

	if got := count(t, f.db, `SELECT count(*) FROM keyworker.api_keys WHERE user_id <> $1`, keyed); got != 3 {
		t.Fatalf("%d keys made, want 3 (the eligible users')", got)
	}
	for _, u := range fine {
		if got := f.events(t, "user_id = $1 AND event <> 'notified'", u); !slices.Equal(got, []string{"created"}) {
			t.Errorf("eligible user %s events %v, want created", u, got)
		}
	}
	for user, want := range map[string]string{gone: "user_missing", soft: "user_deleted", anon: "user_anonymous", never: "user_missing", keyed: "key_exists"} {
		if got := f.events(t, "user_id = $1 AND event = 'skipped'", user); !slices.Equal(got, []string{"skipped:" + want}) {
			t.Errorf("user %s events %v, want skipped:%s", user, got, want)
		}
	}
	var given string
	if err := f.db.QueryRow(ctx, `SELECT detail->>'user_id_given' FROM keyworker.key_events WHERE event = 'skipped' AND detail->>'reason' = 'malformed_user_id'`).Scan(&given); err != nil || given != "'; drop table x --" {
		t.Fatalf("malformed id skip: %q, %v", given, err)
	}
	var jobID, attempt int64
	if err := f.db.QueryRow(ctx, `SELECT job_id, attempt FROM keyworker.key_events WHERE user_id = $1`, soft).Scan(&jobID, &attempt); err != nil || jobID == 0 || attempt != 1 {
		t.Fatalf("skipped event job %d attempt %d: %v", jobID, attempt, err)
	}
	// The job's output says what became of each user.
	var out struct {
		Users        int               `json:"users"`
		Created      map[string]string `json:"created"`
		Skipped      map[string]string `json:"skipped"`
		NoticeJobIDs []int64           `json:"notice_job_ids"`
	}
	var raw []byte
	if err := f.db.QueryRow(ctx, `SELECT metadata->'output' FROM keyworker.river_job WHERE id = $1`, jobID).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &out); err != nil || out.Users != 9 || len(out.Created) != 3 || len(out.Skipped) != 6 ||
		out.Skipped[keyed] != "key_exists" || out.Skipped[gone] != "user_missing" || len(out.NoticeJobIDs) != 1 {
		t.Fatalf("job output %s (%v)", raw, err)
	}
	// Only the new keys get a notice; the existing key had its own.
	reqs, _ := hook.snapshot()
	if len(reqs) != 3 {
		t.Fatalf("%d webhooks, want 3", len(reqs))
	}
	for _, r := range reqs {
		if r.id == "notice_"+had.ID {
			t.Fatal("the key that existed got a notice from the batch")
		}
	}
}

// TestJobRerunAfterItsBatchCommitted is a crash between a batch's commit
// and its completion (River completes create-keys jobs after the commit, in
// batches): the job runs again, finds every key made, makes no second key
// and no second notice job, and records key_exists. Each user gets exactly
// one key and one notice. A later duplicate job (a replay) sends nothing
// more either.
func TestJobRerunAfterItsBatchCommitted(t *testing.T) {
	t.Parallel()
	hook := newHookServer(t, nil)
	f := setup(t, func(c *jobs.Config) { c.Senders = []notify.Sender{hook.sender(t, 5*time.Second)} })
	ctx := context.Background()
	ids := f.newUsers(t, 4)
	f.enqueueUsers(t, ids...)
	f.start(t)
	f.waitEvents(t, "notified", 4, 15*time.Second)
	f.waitIdle(t, 10*time.Second)

	// What River's rescuer does with the job of a process killed after its
	// commit: the job runs again.
	if _, err := f.db.Exec(ctx, `UPDATE keyworker.river_job SET state = 'available', finalized_at = NULL, scheduled_at = now()
		WHERE kind = $1`, jobs.KindCreateKeys); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() (bool, string) {
		return count(t, f.db, `SELECT count(*) FROM keyworker.key_events WHERE detail->>'reason' = 'key_exists'`) == 4, "the rerun to find the 4 keys"
	})
	if got := f.enqueueUsers(t, ids...); got != 4 {
		t.Fatalf("re-enqueue after completion = %d, want 4", got)
	}
	eventually(t, 15*time.Second, func() (bool, string) {
		return count(t, f.db, `SELECT count(*) FROM keyworker.key_events WHERE detail->>'reason' = 'key_exists'`) == 8, "the replay to find the 4 keys"
	})
	f.waitIdle(t, 10*time.Second)

	if got := count(t, f.db, `SELECT count(*) FROM keyworker.api_keys`); got != 4 {
		t.Fatalf("%d keys, want 4", got)
	}
	if got := count(t, f.db, `SELECT count(*) FROM keyworker.river_job WHERE kind = $1`, jobs.KindDeliverNotices); got != 1 {
		t.Fatalf("%d notice jobs, want 1", got)
	}
	reqs, _ := hook.snapshot()
	if len(reqs) != 4 {
		t.Fatalf("%d webhooks, want 4", len(reqs))
	}
	for _, u := range ids {
		want := []string{"created", "notified:webhook", "skipped:key_exists", "skipped:key_exists"}
		if got := f.events(t, "user_id = $1", u); !slices.Equal(got, want) {
			t.Fatalf("user %s events %v, want %v", u, got, want)
		}
	}
}

// TestNoticeRetriesUntilDelivered: the webhook answers 500, then 429 with
// Retry-After, then too slowly, then 200. The notice arrives with one
// webhook-id throughout, the email sink (which succeeded first time) is not
// sent again, and key_events tells the story.
func TestNoticeRetriesUntilDelivered(t *testing.T) {
	t.Parallel()
	hook := newHookServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		switch n {
		case 1:
			http.Error(w, "boom", http.StatusInternalServerError)
		case 2:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
		case 3:
			select { // longer than the sender's 300ms timeout
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
		default:
			w.WriteHeader(http.StatusOK)
		}
	})
	mail := newSMTPServer(t)
	var events eventRecorder
	f := setup(t, func(c *jobs.Config) {
		c.Senders = []notify.Sender{hook.sender(t, 300*time.Millisecond), mail.sender(t)}
		c.OnEvent = events.record
	})
	user := f.newUser(t, "")
	f.enqueueUsers(t, user)
	start := time.Now()
	f.start(t)
	f.waitJobs(t, jobs.KindDeliverNotices, rivertype.JobStateCompleted, 1, 20*time.Second)
	if time.Since(start) < time.Second {
		t.Fatal("delivered before the 1s Retry-After passed")
	}

	reqs, bad := hook.snapshot()
	if len(bad) > 0 || len(reqs) != 4 {
		t.Fatalf("%d webhook requests (bad signatures %v), want 4", len(reqs), bad)
	}
	for _, r := range reqs {
		if r.id != reqs[0].id || string(r.body) != string(reqs[0].body) {
			t.Fatalf("retries changed the webhook-id or payload: %q vs %q", r.id, reqs[0].id)
		}
	}
	if got := len(mail.messages()); got != 1 {
		t.Fatalf("%d emails, want 1 (a sink that succeeded must not be sent again)", got)
	}
	keyID := strings.TrimPrefix(reqs[0].id, "notice_")
	want := []string{"created", "notified:email", "notify_failed:webhook", "notify_failed:webhook", "notify_failed:webhook", "notified:webhook"}
	if got := f.events(t, "key_id = $1", keyID); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	ctx := context.Background()
	var retryIn, errText string
	if err := f.db.QueryRow(ctx, `SELECT detail->>'retry_in', detail->>'error' FROM keyworker.key_events
		WHERE key_id = $1 AND event = 'notify_failed' ORDER BY id OFFSET 1 LIMIT 1`, keyID).Scan(&retryIn, &errText); err != nil {
		t.Fatal(err)
	}
	if retryIn != "1s" || !strings.Contains(errText, "429") {
		t.Fatalf("the 429's event: retry_in %q, error %q", retryIn, errText)
	}
	var snoozes int
	if err := f.db.QueryRow(ctx, `SELECT coalesce((metadata->>'snoozes')::int, 0) FROM keyworker.river_job WHERE kind = $1`, jobs.KindDeliverNotices).Scan(&snoozes); err != nil || snoozes != 1 {
		t.Fatalf("snoozes = %d, %v; want 1", snoozes, err)
	}
	wantEvents := []string{"key_created", "notice_sent:email", "notice_failed:webhook", "notice_failed:webhook", "notice_failed:webhook", "notice_sent:webhook"}
	if got := events.list(); !slices.Equal(got, wantEvents) {
		t.Fatalf("OnEvent saw %v, want %v", got, wantEvents)
	}
}

// eventRecorder collects OnEvent calls of keys and notices as "kind:sink".
type eventRecorder struct {
	mu     sync.Mutex
	events []string
}

func (r *eventRecorder) record(e jobs.Event) {
	if e.Kind == jobs.EventReconcileFound { // the leader's, whenever it runs
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := string(e.Kind)
	if e.Sink != "" {
		s += ":" + e.Sink
	}
	r.events = append(r.events, s)
}

func (r *eventRecorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// TestNoticeGoneIsCancelled: a webhook answering 410 Gone is not retried; the
// job is cancelled and the reason recorded.
func TestNoticeGoneIsCancelled(t *testing.T) {
	t.Parallel()
	hook := newHookServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "endpoint removed", http.StatusGone)
	})
	f := setup(t, func(c *jobs.Config) { c.Senders = []notify.Sender{hook.sender(t, 5*time.Second)} })
	user := f.newUser(t, "")
	f.enqueueUsers(t, user)
	f.start(t)
	f.waitJobs(t, jobs.KindDeliverNotices, rivertype.JobStateCancelled, 1, 15*time.Second)
	if reqs, _ := hook.snapshot(); len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	var reason string
	if err := f.db.QueryRow(context.Background(), `SELECT detail->>'reason' FROM keyworker.key_events
		WHERE user_id = $1 AND event = 'notify_discarded' AND detail->>'sink' = 'webhook'`, user).Scan(&reason); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(reason, "410") {
		t.Fatalf("discard reason %q does not name the 410", reason)
	}
}

// TestSnoozesAreCapped: a sink that always answers 429 with Retry-After would
// be snoozed forever (snoozes do not use up River attempts); the worker gives
// up after NoticeMaxAttempts tries.
func TestSnoozesAreCapped(t *testing.T) {
	t.Parallel()
	hook := newHookServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "later", http.StatusTooManyRequests)
	})
	f := setup(t, func(c *jobs.Config) {
		c.Senders = []notify.Sender{hook.sender(t, 5*time.Second)}
		c.NoticeMaxAttempts = 3
	})
	user := f.newUser(t, "")
	f.enqueueUsers(t, user)
	f.start(t)
	f.waitJobs(t, jobs.KindDeliverNotices, rivertype.JobStateCancelled, 1, 20*time.Second)
	if reqs, _ := hook.snapshot(); len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	got := f.events(t, "user_id = $1 AND event LIKE 'notify%'", user)
	want := []string{"notify_failed:webhook", "notify_failed:webhook", "notify_discarded:webhook"}
	if !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	var reason string
	if err := f.db.QueryRow(context.Background(), `SELECT detail->>'reason' FROM keyworker.key_events WHERE user_id = $1 AND event = 'notify_discarded'`, user).Scan(&reason); err != nil || reason != "gave up after 3 tries" {
		t.Fatalf("discard reason %q, %v", reason, err)
	}
}

// TestEmailNoticeCarriesTheKeyButNotTheSecret: the email goes to the address
// the users table holds when the notice is sent, and names the key id and
// last 4, never the key; without a pick-up page it says how to pick the key
// up and does not link the POST-only reveal endpoint.
func TestEmailNoticeCarriesTheKeyButNotTheSecret(t *testing.T) {
	t.Parallel()
	mail := newSMTPServer(t)
	f := setup(t, func(c *jobs.Config) { c.Senders = []notify.Sender{mail.sender(t)} })
	ctx := context.Background()
	user := f.newUser(t, "")
	f.enqueueUsers(t, user)
	if _, err := f.db.Exec(ctx, `UPDATE auth.users SET email = 'changed@example.com' WHERE id = $1`, user); err != nil {
		t.Fatal(err)
	}
	f.start(t)
	f.waitJobs(t, jobs.KindDeliverNotices, rivertype.JobStateCompleted, 1, 15*time.Second)
	msgs := mail.messages()
	if len(msgs) != 1 || !slices.Equal(msgs[0].to, []string{"changed@example.com"}) {
		t.Fatalf("emails %+v, want one to changed@example.com", msgs)
	}
	r, err := f.store.Reveal(ctx, f.db, user, keystore.Audit{Actor: keystore.ActorUser})
	if err != nil {
		t.Fatal(err)
	}
	text := decodedMail(t, msgs[0].data)
	for _, want := range []string{r.KeyID, r.Last4, "To pick it up, sign in to the"} {
		if !strings.Contains(text, want) {
			t.Errorf("email lacks %q", want)
		}
	}
	if strings.Contains(text, revealURL) {
		t.Error("the email links the POST-only reveal endpoint")
	}
	secret := secretOf(t, r.Plaintext())
	for _, s := range []string{r.Plaintext(), secret, secret[:20], secret[20:]} {
		if strings.Contains(text, s) || strings.Contains(string(msgs[0].data), s) {
			t.Fatal("the email contains the key or its secret")
		}
	}
}

// TestConfigErrorsNameTheField checks NewClient's validation.
func TestConfigErrorsNameTheField(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	hook := newHookServer(t, nil)
	for _, c := range []struct {
		edit func(*jobs.Config)
		want string
	}{
		{func(c *jobs.Config) { c.Store = nil }, "Store is required"},
		{func(c *jobs.Config) { c.Schema = "other" }, "Store works in schema"},
		{func(c *jobs.Config) { c.Senders = []notify.Sender{hook.sender(t, time.Second)}; c.RevealURL = "" }, "RevealURL"},
		{func(c *jobs.Config) {
			c.Senders = []notify.Sender{hook.sender(t, time.Second), hook.sender(t, time.Second)}
		}, `two senders named "webhook"`},
		{func(c *jobs.Config) { c.KeyWorkers = -1 }, "KeyWorkers must be between 1 and 1000, got -1"},
		{func(c *jobs.Config) { c.NoticeMaxAttempts = 500 }, "NoticeMaxAttempts must be between 1 and 100, got 500"},
		{func(c *jobs.Config) { c.JobTimeout = time.Millisecond }, "JobTimeout must be between 1s and 1h0m0s, got 1ms"},
		{func(c *jobs.Config) { c.ReconcileInterval = 48 * time.Hour }, "ReconcileInterval"},
		{func(c *jobs.Config) { c.CompletedJobRetention = time.Second }, "CompletedJobRetention"},
		{func(c *jobs.Config) { c.EmailColumn = "E-mail" }, "EmailColumn"},
		{func(c *jobs.Config) { c.Table.Name = "Users" }, "Table"},
		{func(c *jobs.Config) { c.KeyTTL = time.Second }, "KeyTTL must be 0 (keys do not expire) or at least 1m, got 1s"},
		{func(c *jobs.Config) { c.PickupURL = "https://app.example.com/pickup" }, "PickupURL must contain {key_id}"},
		{func(c *jobs.Config) { c.PickupURL = "ftp://app.example.com/{key_id}" }, "PickupURL must be an absolute http or https URL"},
		{func(c *jobs.Config) { c.PickupURL = "/keys/{key_id}" }, "PickupURL must be an absolute http or https URL"},
		{func(c *jobs.Config) { c.LifecycleInterval = time.Millisecond }, "LifecycleInterval must be between 1s and 24h0m0s, got 1ms"},
		{func(c *jobs.Config) { c.ExpiringNoticeBefore = time.Second }, "ExpiringNoticeBefore must be negative (no expiring notices) or between 1m and 8760h0m0s, got 1s"},
	} {
		cfg := jobs.Config{Store: f.store, RevealURL: revealURL}
		c.edit(&cfg)
		if _, err := jobs.NewClient(f.db, cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewClient: %v, want an error containing %q", err, c.want)
		}
	}
}

// TestStartChecksAndStopIsIdempotent: Stop before Start and twice is fine;
// Start refuses a users table without the email column.
func TestStartChecksAndStopIsIdempotent(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	ctx := context.Background()
	if err := f.client.Stop(ctx); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	bad, err := jobs.NewClient(f.db, jobs.Config{Store: f.store, EmailColumn: "mail"})
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Start(ctx); err == nil || !strings.Contains(err.Error(), `no column "mail"`) {
		t.Fatalf("Start with a missing email column: %v", err)
	}
	f.start(t)
	for range 2 {
		if err := f.client.Stop(ctx); err != nil {
			t.Fatalf("Stop: %v", err)
		}
	}
}

// TestStopCancelsJobsStillRunningAtTheDeadline: Stop waits for running jobs
// until its context ends, then cancels them; the cancelled job goes back to
// the queue to run again, without using up an attempt.
func TestStopCancelsJobsStillRunningAtTheDeadline(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{}, 1)
	hook := newHookServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	f := setup(t, func(c *jobs.Config) { c.Senders = []notify.Sender{hook.sender(t, 10*time.Second)} })
	user := f.newUser(t, "")
	f.enqueueUsers(t, user)
	f.start(t)
	select {
	case <-entered:
	case <-time.After(15 * time.Second):
		t.Fatal("the notice was never sent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := f.client.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Stop took %s", d)
	}
	var state string
	var attempt int
	if err := f.db.QueryRow(context.Background(), `SELECT state::text, attempt FROM keyworker.river_job WHERE kind = $1`, jobs.KindDeliverNotices).Scan(&state, &attempt); err != nil {
		t.Fatal(err)
	}
	if state != string(rivertype.JobStateAvailable) || attempt != 0 {
		t.Fatalf("the interrupted notice job is %s at attempt %d, want available at 0", state, attempt)
	}
}

// TestBatchLooksAgainForUsersItCannotSeeYet: logical decoding streams a
// signup's commit a moment before other transactions can see the row, so a
// batch may run before its user is visible. Staged here by enqueueing a user
// that is inserted only after the batch first looked: the batch looks again
// and makes the key, instead of recording user_missing for a user who exists.
func TestBatchLooksAgainForUsersItCannotSeeYet(t *testing.T) {
	t.Parallel()
	f := setup(t, nil)
	ctx := context.Background()
	seen := f.newUser(t, "")
	late := userID(userSeq.Add(1))
	f.enqueueUsers(t, seen, late)
	f.start(t)
	// The first look makes the visible user's key; then the late user
	// commits.
	eventually(t, 15*time.Second, func() (bool, string) {
		return count(t, f.db, `SELECT count(*) FROM keyworker.api_keys WHERE user_id = $1`, seen) == 1, "the visible user's key"
	})
	if _, err := f.db.Exec(ctx, `INSERT INTO auth.users (id, email, created_at) VALUES ($1, $2, now())`, late, emailOf(late)); err != nil {
		t.Fatal(err)
	}
	f.waitJobs(t, jobs.KindCreateKeys, rivertype.JobStateCompleted, 1, 15*time.Second)
	if got := f.events(t, "user_id = $1", late); !slices.Equal(got, []string{"created"}) {
		t.Fatalf("late user's events %v, want created (and no user_missing)", got)
	}
	// A user who never appears is recorded missing after the last look.
	never := userID(userSeq.Add(1))
	f.enqueueUsers(t, never)
	f.waitJobs(t, jobs.KindCreateKeys, rivertype.JobStateCompleted, 2, 20*time.Second)
	if got := f.events(t, "user_id = $1", never); !slices.Equal(got, []string{"skipped:user_missing"}) {
		t.Fatalf("missing user's events %v, want one user_missing", got)
	}
}

// TestBatchNoticeRetrySendsOnlyWhatFailed: a batch of keys whose webhook
// fails for some of them on the first attempt is retried, and the retry
// calls the webhook only for the keys that were not delivered, each with the
// same webhook-id; every key ends with exactly one 'notified' event.
func TestBatchNoticeRetrySendsOnlyWhatFailed(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	failed := map[string]bool{} // webhook-ids refused once
	hook := newHookServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("webhook-id")
		mu.Lock()
		defer mu.Unlock()
		// Refuse every other key, once.
		if id[len(id)-1]%2 == 0 && !failed[id] {
			failed[id] = true
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	f := setup(t, func(c *jobs.Config) { c.Senders = []notify.Sender{hook.sender(t, 5*time.Second)} })
	const n = 30
	ids := f.newUsers(t, n)
	f.enqueueUsers(t, ids...)
	f.start(t)
	f.waitEvents(t, "notified", n, 20*time.Second)
	f.waitIdle(t, 10*time.Second)

	mu.Lock()
	refused := len(failed)
	mu.Unlock()
	if refused == 0 || refused == n {
		t.Fatalf("%d of %d keys refused on the first attempt; the test needs some of each", refused, n)
	}
	reqs, bad := hook.snapshot()
	if len(bad) > 0 {
		t.Fatalf("badly signed webhooks: %v", bad)
	}
	if len(reqs) != n+refused {
		t.Fatalf("%d webhook calls, want %d: one per key and one more per refused key", len(reqs), n+refused)
	}
	calls := map[string]int{}
	for _, r := range reqs {
		calls[r.id]++
	}
	for id, c := range calls {
		if want := map[bool]int{true: 2, false: 1}[failed[id]]; c != want {
			t.Fatalf("%s called %d times, want %d", id, c, want)
		}
	}
	if got := count(t, f.db, `SELECT count(*) FROM keyworker.river_job WHERE kind = $1 AND attempt = 2 AND state = 'completed'`, jobs.KindDeliverNotices); got != 1 {
		t.Fatalf("%d notice jobs completed on their second attempt, want 1 (one job for the batch)", got)
	}
	if got := count(t, f.db, `SELECT count(*) FROM keyworker.key_events WHERE event = 'notify_failed'`); got != refused {
		t.Fatalf("%d notify_failed events, want %d", got, refused)
	}
}

// TestTraceTellsAUsersStory: TraceUser finds the batch job that made the
// user's key (with its outcome for this user), the notice job, the key and
// every event, and refuses what is not a user id.
func TestTraceTellsAUsersStory(t *testing.T) {
	t.Parallel()
	hook := newHookServer(t, nil)
	f := setup(t, func(c *jobs.Config) { c.Senders = []notify.Sender{hook.sender(t, 5*time.Second)} })
	ctx := context.Background()
	ids := f.newUsers(t, 3)
	f.enqueueUsers(t, ids...)
	f.start(t)
	f.waitEvents(t, "notified", 3, 20*time.Second)
	f.waitIdle(t, 10*time.Second)

	tr, err := jobs.TraceUser(ctx, f.db, "keyworker", users.Table{}, ids[1])
	if err != nil {
		t.Fatal(err)
	}
	if !tr.UserExists || tr.SeenAt == nil || len(tr.Keys) != 1 || tr.Keys[0].Source != "signup" || !tr.Keys[0].PickupWaiting {
		t.Fatalf("trace %+v", tr)
	}
	var kinds []string
	for _, j := range tr.Jobs {
		kinds = append(kinds, j.Kind)
		if j.Kind == jobs.KindCreateKeys && (j.Outcome != "created "+tr.Keys[0].ID || j.BatchSize != 3 || j.Source != "signup") {
			t.Fatalf("create-keys job in the trace: %+v", j)
		}
	}
	if !slices.Equal(kinds, []string{jobs.KindCreateKeys, jobs.KindDeliverNotices}) {
		t.Fatalf("jobs %v", kinds)
	}
	var evs []string
	for _, e := range tr.Events {
		evs = append(evs, e.Event)
	}
	if !slices.Equal(evs, []string{"created", "notified"}) || tr.Events[0].JobID == nil || *tr.Events[0].JobID != tr.Jobs[0].ID {
		t.Fatalf("events %v (job of the first: %v)", evs, tr.Events[0].JobID)
	}
	if _, err := jobs.TraceUser(ctx, f.db, "keyworker", users.Table{}, "x'; --"); err == nil {
		t.Fatal("a non-uuid was traced")
	}
}

// TestDeliveriesAreRecordedAsTheyHappen: while one notice of a batch hangs,
// the deliveries of the others are already recorded, so a crash then would
// not send them again.
func TestDeliveriesAreRecordedAsTheyHappen(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var once sync.Once
	var hanging atomic.Bool
	hung := make(chan string, 1)
	hook := newHookServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		first := false
		once.Do(func() { first = true })
		if first {
			hanging.Store(true)
			hung <- r.Header.Get("webhook-id")
			select {
			case <-release:
			case <-r.Context().Done():
			}
			hanging.Store(false)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	f := setup(t, func(c *jobs.Config) { c.Senders = []notify.Sender{hook.sender(t, 20*time.Second)} })
	ids := f.newUsers(t, 5)
	f.enqueueUsers(t, ids...)
	f.start(t)
	var hangingID string
	select {
	case hangingID = <-hung:
	case <-time.After(15 * time.Second):
		t.Fatal("no notice was sent")
	}
	f.waitEvents(t, "notified", 4, 3*time.Second)
	if !hanging.Load() {
		t.Fatalf("the notice %s stopped hanging before the others were recorded", hangingID)
	}
	close(release)
	f.waitEvents(t, "notified", 5, 10*time.Second)
}
