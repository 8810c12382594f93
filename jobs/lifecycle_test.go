package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/jobs"
	"github.com/keyworker/keyworker/keystore"
	"github.com/keyworker/keyworker/notify"
)

const pickupTemplate = "https://app.example.com/keys/{key_id}/pickup"

// manualKey makes a key for user as an operator would, and returns its id
// and plaintext.
func (f *fixture) manualKey(t *testing.T, user string) (string, string) {
	t.Helper()
	c, plaintext, err := f.store.CreateWithPlaintext(context.Background(), f.db, keystore.NewKey{UserID: user}, keystore.Audit{Actor: keystore.ActorOperator})
	if err != nil {
		t.Fatal(err)
	}
	return c.ID, plaintext
}

func (f *fixture) exec(t *testing.T, q string, args ...any) {
	t.Helper()
	if _, err := f.db.Exec(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// enqueueNotice calls EnqueueNoticeTx in a transaction of its own.
func (f *fixture) enqueueNotice(t *testing.T, typ string, ids ...string) {
	t.Helper()
	ctx := context.Background()
	if err := pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error { return f.client.EnqueueNoticeTx(ctx, tx, typ, ids...) }); err != nil {
		t.Fatal(err)
	}
}

// disableKey disables key now, as keystore does, and reports the disable
// through EnqueueNoticeOnceTx in the same transaction; it returns the
// notice's webhook-id and the disabled_at.
func (f *fixture) disableKey(t *testing.T, key string) (string, time.Time) {
	t.Helper()
	ctx := context.Background()
	var at time.Time
	err := pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `UPDATE keyworker.api_keys SET disabled_at = clock_timestamp() WHERE id = $1 RETURNING disabled_at`, key).Scan(&at); err != nil {
			return err
		}
		return f.client.EnqueueNoticeOnceTx(ctx, tx, notify.EventDisabled, key, at)
	})
	if err != nil {
		t.Fatal(err)
	}
	return notify.OccurrenceEventID(notify.EventDisabled, key, jobs.OccurrenceOf(at)), at
}

// hookPayload is the part of a webhook body the tests look at.
type hookPayload struct {
	Type      string         `json:"type"`
	Timestamp time.Time      `json:"timestamp"`
	Data      map[string]any `json:"data"`
}

// delivered returns the webhook-ids the receiver answered 2xx to, counted,
// and the payload of each.
type hookLog struct {
	mu       sync.Mutex
	ok       map[string]int
	payloads map[string]hookPayload
}

// failFirst is a receiver that answers 503 to the first request of every
// webhook-id and 204 to the others, and records what it accepted.
func failFirst(t *testing.T) (*hookServer, *hookLog) {
	t.Helper()
	log := &hookLog{ok: map[string]int{}, payloads: map[string]hookPayload{}}
	seen := map[string]bool{}
	hook := newHookServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("webhook-id")
		log.mu.Lock()
		defer log.mu.Unlock()
		if !seen[id] {
			seen[id] = true
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		log.ok[id]++
	})
	return hook, log
}

func (h *hookServer) payloads(t *testing.T) map[string]hookPayload {
	t.Helper()
	reqs, bad := h.snapshot()
	if len(bad) > 0 {
		t.Fatalf("bad signatures: %v", bad)
	}
	out := map[string]hookPayload{}
	for _, r := range reqs {
		var p hookPayload
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
		out[r.id] = p
	}
	return out
}

func (l *hookLog) counts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.ok))
	for k, v := range l.ok {
		out[k] = v
	}
	return out
}

// subjects returns the emails' Message-ID local parts mapped to their
// subjects, failing on a Message-ID seen twice.
func subjects(t *testing.T, m *smtpServer) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, msg := range m.messages() {
		raw := string(msg.data)
		id := header(raw, "Message-ID")
		id = strings.TrimPrefix(strings.SplitN(id, "@", 2)[0], "<")
		if _, dup := out[id]; dup {
			t.Fatalf("two emails with Message-ID %s", id)
		}
		out[id] = header(raw, "Subject")
	}
	return out
}

func header(raw, name string) string {
	for _, line := range strings.Split(raw, "\r\n") {
		if v, ok := strings.CutPrefix(line, name+": "); ok {
			return v
		}
		if line == "" {
			break
		}
	}
	return ""
}

// TestEachNoticeTypeOncePerKeyAndSink: a signup key's created notice, and a
// rotation, a revocation, a disabling and an API-made key's creation
// reported through EnqueueNoticeTx (each twice, and once more in a
// transaction rolled back) reach a real webhook receiver, which fails each
// event's first try, and a real SMTP server exactly once each: the retry
// sends the webhook only, and the second report enqueues nothing. The
// created notice links the pick-up page, not the reveal endpoint; the
// manual key's created notice offers no pick-up. No key or secret reaches a
// table, a job, a notice or the logs.
func TestEachNoticeTypeOncePerKeyAndSink(t *testing.T) {
	t.Parallel()
	hook, hooks := failFirst(t)
	mail := newSMTPServer(t)
	f := setup(t, func(c *jobs.Config) {
		c.Senders = []notify.Sender{hook.sender(t, 5*time.Second), mail.sender(t)}
		c.PickupURL = pickupTemplate
	})
	ctx := context.Background()
	users := f.newUsers(t, 3)
	f.enqueueUsers(t, users...)
	f.start(t)
	f.waitEvents(t, "notified", 6, 20*time.Second) // 3 keys × 2 sinks

	signupKeys := map[string]string{} // user -> key id
	var needles []string
	for _, u := range users {
		r, err := f.store.Reveal(ctx, f.db, u, keystore.Audit{Actor: keystore.ActorUser})
		if err != nil {
			t.Fatal(err)
		}
		signupKeys[u] = r.KeyID
		needles = append(needles, r.Plaintext(), secretOf(t, r.Plaintext()))
	}
	rotated, revoked, disabled := signupKeys[users[0]], signupKeys[users[1]], signupKeys[users[2]]
	newKey, newPlain, err := f.store.Rotate(ctx, f.db, rotated, time.Hour, keystore.Audit{Actor: keystore.ActorUser})
	if err != nil {
		t.Fatal(err)
	}
	needles = append(needles, newPlain, secretOf(t, newPlain))
	if _, err := f.store.Revoke(ctx, f.db, revoked, f.store.Now(), keystore.Audit{Actor: keystore.ActorUser}); err != nil {
		t.Fatal(err)
	}
	disabledID, disabledAt := f.disableKey(t, disabled)

	reports := []struct{ typ, key string }{
		{notify.EventRotated, rotated}, {notify.EventRevoked, revoked}, {notify.EventDisabled, disabled}, {notify.EventCreated, newKey.ID},
	}
	report := func(tx pgx.Tx, typ, key string) error {
		if typ == notify.EventDisabled {
			return f.client.EnqueueNoticeOnceTx(ctx, tx, typ, key, disabledAt)
		}
		return f.client.EnqueueNoticeTx(ctx, tx, typ, key)
	}
	for _, r := range reports {
		err := pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error {
			if err := report(tx, r.typ, r.key); err != nil {
				return err
			}
			return fmt.Errorf("rolled back")
		})
		if err == nil || err.Error() != "rolled back" {
			t.Fatal(err)
		}
	}
	for range 2 {
		for _, r := range reports {
			if err := pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error { return report(tx, r.typ, r.key) }); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The disable was reported once more, by disableKey.
	f.waitEvents(t, "notified", 6+2*len(reports), 30*time.Second)
	f.waitIdle(t, 10*time.Second)

	wantIDs := map[string]string{}
	for _, id := range signupKeys {
		wantIDs["notice_"+id] = notify.EventCreated
	}
	for _, r := range reports {
		wantIDs[notify.EventID(r.typ, r.key)] = r.typ
	}
	delete(wantIDs, notify.EventID(notify.EventDisabled, disabled))
	wantIDs[disabledID] = notify.EventDisabled
	counts := hooks.counts()
	payloads := hook.payloads(t)
	if len(counts) != len(wantIDs) {
		t.Errorf("webhook accepted %v, want each of %v once", counts, wantIDs)
	}
	for id, typ := range wantIDs {
		if counts[id] != 1 {
			t.Errorf("webhook accepted %s %d times, want once", id, counts[id])
		}
		if payloads[id].Type != typ {
			t.Errorf("webhook %s has type %q, want %q", id, payloads[id].Type, typ)
		}
	}
	subj := subjects(t, mail)
	if len(subj) != len(wantIDs) {
		t.Errorf("emails %v, want one for each of %v", subj, wantIDs)
	}
	for id, typ := range wantIDs {
		if subj[id] != notify.Subject(typ) {
			t.Errorf("email %s has subject %q, want %q", id, subj[id], notify.Subject(typ))
		}
	}
	// Events: each delivery once per (key, type, sink), typed.
	if n := count(t, f.db, `SELECT count(*) FROM (SELECT key_id, detail->>'type', detail->>'sink' FROM keyworker.key_events
		WHERE event = 'notified' GROUP BY 1, 2, 3 HAVING count(*) > 1) d`); n != 0 {
		t.Fatalf("%d (key, type, sink) delivered twice", n)
	}
	if n := count(t, f.db, `SELECT count(*) FROM keyworker.key_events WHERE event = 'notified' AND detail->>'type' IS NULL`); n != 0 {
		t.Fatalf("%d notified events without a type", n)
	}

	// What each notice says.
	p := payloads[notify.EventID(notify.EventRotated, rotated)]
	if p.Data["rotated_to"] != newKey.ID || p.Data["revoked_at"] == nil {
		t.Errorf("rotated payload %v, want rotated_to %s and revoked_at", p.Data, newKey.ID)
	}
	if p := payloads[disabledID]; p.Data["disabled_at"] == nil {
		t.Errorf("disabled payload %v lacks disabled_at", p.Data)
	}
	signup := payloads["notice_"+disabled]
	if signup.Data["pickup_url"] != "https://app.example.com/keys/"+disabled+"/pickup" || signup.Data["reveal_url"] != revealURL {
		t.Errorf("created payload %v, want the pick-up page and the reveal endpoint", signup.Data)
	}
	if p := payloads["notice_"+newKey.ID]; p.Data["reveal_url"] != nil || p.Data["pickup_url"] != nil {
		t.Errorf("the manual key's created payload %v offers a pick-up", p.Data)
	}
	for _, m := range mail.messages() {
		text := decodedMail(t, m.data)
		if strings.Contains(text, revealURL) {
			t.Errorf("an email links the POST-only reveal endpoint:\n%s", text)
		}
		id := strings.TrimPrefix(strings.SplitN(header(string(m.data), "Message-ID"), "@", 2)[0], "<notice_")
		if header(string(m.data), "Subject") == notify.EmailSubject && id != newKey.ID {
			if !strings.Contains(text, "https://app.example.com/keys/"+id+"/pickup") {
				t.Errorf("the created email of %s lacks its pick-up page:\n%s", id, text)
			}
		}
	}

	// No secret anywhere: tables (River's args, outputs and errors too),
	// logs, notices.
	hits, err := testenv.ScanForSecrets(ctx, f.db, needles)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) > 0 {
		t.Fatalf("a key or secret is stored in %v", hits)
	}
	reqs, _ := hook.snapshot()
	var received strings.Builder
	for _, r := range reqs {
		received.Write(r.body)
	}
	for _, m := range mail.messages() {
		received.Write(m.data)
		received.WriteString(decodedMail(t, m.data))
	}
	logs := f.logs.String()
	for i, s := range needles {
		if strings.Contains(received.String(), s) || strings.Contains(logs, s) {
			t.Errorf("needle %d is in a notice or the logs", i)
		}
	}
}

// TestEachDisableItsOwnNotice: a key disabled, enabled and disabled again
// gets two api_key.disabled notices, each once per sink (reported twice,
// its first webhook try failing), with its own webhook-id and Message-ID,
// each saying when that disable happened although the key is enabled when
// they go out. A disabled notice delivered before occurrences existed (an
// event without one) does not count for either.
func TestEachDisableItsOwnNotice(t *testing.T) {
	t.Parallel()
	hook, hooks := failFirst(t)
	mail := newSMTPServer(t)
	f := setup(t, func(c *jobs.Config) { c.Senders = []notify.Sender{hook.sender(t, 5*time.Second), mail.sender(t)} })
	ctx := context.Background()
	user := f.newUser(t, "")
	key, _ := f.manualKey(t, user)
	f.exec(t, `INSERT INTO keyworker.key_events (event, key_id, user_id, detail) VALUES ('notified', $1, $2, '{"sink": "webhook", "type": "api_key.disabled"}')`, key, user)

	first, firstAt := f.disableKey(t, key)
	if err := pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error {
		return f.client.EnqueueNoticeOnceTx(ctx, tx, notify.EventDisabled, key, firstAt)
	}); err != nil {
		t.Fatal(err)
	}
	f.exec(t, `UPDATE keyworker.api_keys SET disabled_at = NULL WHERE id = $1`, key)
	second, secondAt := f.disableKey(t, key)
	f.exec(t, `UPDATE keyworker.api_keys SET disabled_at = NULL WHERE id = $1`, key)
	if first == second || first != "disabled_"+key+"_"+strconv.FormatInt(firstAt.UnixMicro(), 10) {
		t.Fatalf("webhook-ids %s and %s, want disabled_%s_<unix microseconds> each", first, second, key)
	}
	if n := count(t, f.db, `SELECT count(*) FROM keyworker.key_notices WHERE key_id = $1 AND type = $2`, key, notify.EventDisabled); n != 2 {
		t.Fatalf("%d key_notices rows for the two disables, want 2", n)
	}

	f.start(t)
	f.waitEvents(t, "notified", 1+2*2, 30*time.Second)
	f.waitIdle(t, 10*time.Second)
	if got := hooks.counts(); len(got) != 2 || got[first] != 1 || got[second] != 1 {
		t.Fatalf("webhook accepted %v, want %s and %s once each", got, first, second)
	}
	payloads := hook.payloads(t)
	for id, at := range map[string]time.Time{first: firstAt, second: secondAt} {
		p := payloads[id]
		got, _ := p.Data["disabled_at"].(string)
		if when, err := time.Parse(time.RFC3339Nano, got); err != nil || !when.Equal(at) || !p.Timestamp.Equal(at) {
			t.Errorf("%s: disabled_at %q, timestamp %v; want that disable's time %v in both", id, got, p.Timestamp, at)
		}
	}
	subj := subjects(t, mail)
	if len(subj) != 2 || subj[first] != notify.Subject(notify.EventDisabled) || subj[second] != notify.Subject(notify.EventDisabled) {
		t.Fatalf("emails %v, want one for each of %s and %s", subj, first, second)
	}
	if n := count(t, f.db, `SELECT count(*) FROM (SELECT DISTINCT detail->>'occurrence', detail->>'sink' FROM keyworker.key_events
		WHERE event = 'notified' AND key_id = $1 AND detail ? 'occurrence') d`, key); n != 4 {
		t.Fatalf("%d (occurrence, sink) pairs among the notified events, want 4 (%v)", n, f.events(t, "key_id = $1", key))
	}
}

// TestOldNoticeJobsAndEventsStillCount: a DeliverNotices job (as earlier
// versions inserted) sends a created notice, and a 'notified' event without
// a type counts as the created notice's: that sink is not sent the created
// notice again, but is sent the key's other notices.
func TestOldNoticeJobsAndEventsStillCount(t *testing.T) {
	t.Parallel()
	hook := newHookServer(t, nil)
	mail := newSMTPServer(t)
	f := setup(t, func(c *jobs.Config) { c.Senders = []notify.Sender{hook.sender(t, 5*time.Second), mail.sender(t)} })
	ctx := context.Background()
	user := f.newUser(t, "")
	key, _ := f.manualKey(t, user)
	f.exec(t, `INSERT INTO keyworker.key_events (event, key_id, user_id, detail) VALUES ('notified', $1, $2, '{"sink": "webhook"}')`, key, user)
	if _, err := f.client.River().Insert(ctx, jobs.DeliverNoticesArgs{KeyIDs: []string{key}}, nil); err != nil {
		t.Fatal(err)
	}
	f.enqueueNotice(t, notify.EventRevoked, key)
	f.start(t)
	f.waitJobs(t, jobs.KindDeliverNotices, rivertype.JobStateCompleted, 1, 20*time.Second)
	f.waitJobs(t, jobs.KindDeliverLifecycleNotices, rivertype.JobStateCompleted, 1, 20*time.Second)
	reqs, _ := hook.snapshot()
	if len(reqs) != 1 || reqs[0].id != "revoked_"+key {
		ids := []string{}
		for _, r := range reqs {
			ids = append(ids, r.id)
		}
		t.Fatalf("webhook got %v, want only revoked_%s", ids, key)
	}
	subj := subjects(t, mail)
	want := map[string]string{"notice_" + key: notify.EmailSubject, "revoked_" + key: notify.Subject(notify.EventRevoked)}
	if len(subj) != 2 || subj["notice_"+key] != want["notice_"+key] || subj["revoked_"+key] != want["revoked_"+key] {
		t.Fatalf("emails %v, want %v", subj, want)
	}
	var output string
	if err := f.db.QueryRow(ctx, `SELECT metadata->'output'->>'type' FROM keyworker.river_job
		WHERE kind = $1 AND NOT args ? 'type'`, jobs.KindDeliverNotices).Scan(&output); err != nil || output != notify.EventCreated {
		t.Fatalf("the untyped job's output type = %q, %v; want %s", output, err, notify.EventCreated)
	}
}

// TestNoticeSkipRulesPerType: created and expiring notices need the key
// valid (expiring also enabled), expired needs it expired and not revoked;
// revoked and disabled notices go out whatever the key's state.
func TestNoticeSkipRulesPerType(t *testing.T) {
	t.Parallel()
	hook := newHookServer(t, nil)
	f := setup(t, func(c *jobs.Config) { c.Senders = []notify.Sender{hook.sender(t, 5*time.Second)} })
	user := f.newUser(t, "")
	revokedKey, _ := f.manualKey(t, user)
	disabledKey, _ := f.manualKey(t, user)
	validKey, _ := f.manualKey(t, user)
	f.exec(t, `UPDATE keyworker.api_keys SET revoked_at = now() - interval '1 minute' WHERE id = $1`, revokedKey)
	f.exec(t, `UPDATE keyworker.api_keys SET disabled_at = now(), expires_at = now() + interval '1 hour' WHERE id = $1`, disabledKey)
	cases := []struct {
		typ, key, want string // want: the skip reason, or "" for sent
	}{
		{notify.EventCreated, revokedKey, "key_revoked"},
		{notify.EventExpiring, disabledKey, "key_disabled"},
		{notify.EventExpiring, revokedKey, "key_revoked"},
		{notify.EventExpired, validKey, "key_not_expired"},
		{notify.EventExpired, revokedKey, "key_revoked"},
		{notify.EventRevoked, revokedKey, ""},
		{notify.EventDisabled, disabledKey, ""},
		{notify.EventCreated, disabledKey, ""},
	}
	disabledID, _ := f.disableKey(t, disabledKey)
	for _, c := range cases {
		if c.typ != notify.EventDisabled {
			f.enqueueNotice(t, c.typ, c.key)
		}
	}
	f.start(t)
	f.waitIdle(t, 20*time.Second)
	sent := map[string]bool{}
	reqs, _ := hook.snapshot()
	for _, r := range reqs {
		sent[r.id] = true
	}
	for _, c := range cases {
		id := notify.EventID(c.typ, c.key)
		if c.typ == notify.EventDisabled {
			id = disabledID
		}
		if got := sent[id]; got != (c.want == "") {
			t.Errorf("%s sent = %v, want %v", id, got, c.want == "")
		}
		if c.want == "" {
			continue
		}
		if n := count(t, f.db, `SELECT count(*) FROM keyworker.key_events WHERE event = 'skipped' AND key_id = $1
			AND detail->>'type' = $2 AND detail->>'reason' = $3`, c.key, c.typ, c.want); n != 1 {
			t.Errorf("%s: %d skipped events with reason %s, want 1 (%v)", id, n, c.want, f.events(t, "key_id = $1", c.key))
		}
	}
}

// TestEnqueueNoticeTxRefusesBadInput: an unknown type or a malformed id is
// an error naming it, as is a disable reported without its time or a
// once-per-key event reported with one; a key that does not exist is left
// out.
func TestEnqueueNoticeTxRefusesBadInput(t *testing.T) {
	t.Parallel()
	f := setup(t, func(c *jobs.Config) { c.Senders = []notify.Sender{notify.NewLog(c.Logger)} })
	ctx := context.Background()
	user := f.newUser(t, "")
	key, _ := f.manualKey(t, user)
	for _, c := range []struct{ typ, id, want string }{
		{"api_key.deleted", key, `event type "api_key.deleted" is unknown`},
		{"", key, `event type "" is unknown`},
		{notify.EventDisabled, key, "call EnqueueNoticeOnceTx with the key's disabled_at"},
		{notify.EventRevoked, "nope", `key id "nope" is malformed`},
	} {
		err := pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error { return f.client.EnqueueNoticeTx(ctx, tx, c.typ, c.id) })
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("EnqueueNoticeTx(%q, %q) = %v, want %q", c.typ, c.id, err, c.want)
		}
	}
	now := time.Now()
	for _, c := range []struct {
		typ, id string
		at      time.Time
		want    string
	}{
		{notify.EventRevoked, key, now, "it happens once per key: call EnqueueNoticeTx"},
		{"api_key.deleted", key, now, `event type "api_key.deleted" is unknown`},
		{notify.EventDisabled, key, time.Time{}, "its time is zero"},
		{notify.EventDisabled, "nope", now, `key id "nope" is malformed`},
	} {
		err := pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error { return f.client.EnqueueNoticeOnceTx(ctx, tx, c.typ, c.id, c.at) })
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("EnqueueNoticeOnceTx(%q, %q, %v) = %v, want %q", c.typ, c.id, c.at, err, c.want)
		}
	}
	f.enqueueNotice(t, notify.EventRevoked, "00000000000000000000000000a", key, key)
	if n := count(t, f.db, `SELECT count(*) FROM keyworker.key_notices`); n != 1 {
		t.Fatalf("%d key_notices rows, want 1 (the existing key, once)", n)
	}
	var args string
	if err := f.db.QueryRow(ctx, `SELECT args::text FROM keyworker.river_job WHERE kind = $1`, jobs.KindDeliverLifecycleNotices).Scan(&args); err != nil {
		t.Fatal(err)
	}
	var got jobs.DeliverLifecycleNoticesArgs
	if err := json.Unmarshal([]byte(args), &got); err != nil || !slices.Equal(got.KeyIDs, []string{key}) || got.Type != notify.EventRevoked || got.Occurrence != "" {
		t.Fatalf("job args %s, want the existing key's revoked notice", args)
	}
}

// TestLifecycleScanSendsExpiringAndExpiredOnce: the periodic scan, run
// many times, enqueues each due notice once: expiring for a key that
// expires within ExpiringNoticeBefore, and expired for a key that expired
// after key_notices existed and within ExpiredNoticeWindow; none for a key
// disabled, revoked or to be revoked first, made with a lifetime shorter
// than the window, expired before the migration or too long ago.
func TestLifecycleScanSendsExpiringAndExpiredOnce(t *testing.T) {
	t.Parallel()
	hook := newHookServer(t, nil)
	f := setup(t, func(c *jobs.Config) {
		c.Senders = []notify.Sender{hook.sender(t, 5*time.Second)}
		c.LifecycleInterval = time.Second
		c.ExpiringNoticeBefore = time.Hour
	})
	user := f.newUser(t, "")
	keys := map[string]string{}
	for _, name := range []string{"expiring", "expiring_disabled", "expiring_revoked_first", "expiring_short_lived",
		"expired", "expired_revoked", "expired_before_since", "expired_long_ago", "no_expiry"} {
		keys[name], _ = f.manualKey(t, user)
	}
	set := func(name, assignments string) {
		f.exec(t, `UPDATE keyworker.api_keys SET `+assignments+` WHERE id = $1`, keys[name])
	}
	set("expiring", `created_at = now() - interval '10 days', expires_at = now() + interval '30 minutes'`)
	set("expiring_disabled", `created_at = now() - interval '10 days', expires_at = now() + interval '30 minutes', disabled_at = now()`)
	set("expiring_revoked_first", `created_at = now() - interval '10 days', expires_at = now() + interval '30 minutes', revoked_at = now() + interval '10 minutes'`)
	set("expiring_short_lived", `expires_at = now() + interval '30 minutes'`)
	set("expired", `created_at = now() - interval '10 days', expires_at = now() - interval '1 minute'`)
	set("expired_revoked", `created_at = now() - interval '10 days', expires_at = now() - interval '2 minutes', revoked_at = now() - interval '1 minute'`)
	set("expired_before_since", `created_at = now() - interval '10 days', expires_at = now() - interval '2 days'`)
	set("expired_long_ago", `created_at = now() - interval '20 days', expires_at = now() - interval '8 days'`)
	f.exec(t, `UPDATE keyworker.installation SET lifecycle_notices_since = now() - interval '1 day'`)

	f.start(t)
	waitScans := func(n int) {
		t.Helper()
		eventually(t, 30*time.Second, func() (bool, string) {
			got := count(t, f.db, `SELECT count(*) FROM keyworker.river_job WHERE kind = $1 AND state = 'completed'`, jobs.KindLifecycleNotices)
			return got >= n, fmt.Sprintf("%d lifecycle scans (have %d; %s)", n, got, f.jobStates(t))
		})
		f.waitIdle(t, 10*time.Second)
	}
	sent := func() []string {
		reqs, _ := hook.snapshot()
		var ids []string
		for _, r := range reqs {
			ids = append(ids, r.id)
		}
		sort.Strings(ids)
		return ids
	}
	waitScans(3)
	want := []string{"expired_" + keys["expired"], "expiring_" + keys["expiring"]}
	sort.Strings(want)
	if got := sent(); !slices.Equal(got, want) {
		t.Fatalf("after 3 scans the webhook got %v, want %v", got, want)
	}
	p := hook.payloads(t)["expired_"+keys["expired"]]
	var expiresAt time.Time
	if err := f.db.QueryRow(context.Background(), `SELECT expires_at FROM keyworker.api_keys WHERE id = $1`, keys["expired"]).Scan(&expiresAt); err != nil {
		t.Fatal(err)
	}
	if p.Type != notify.EventExpired || !p.Timestamp.Equal(expiresAt.Truncate(time.Second)) && !p.Timestamp.Equal(expiresAt) {
		t.Errorf("expired payload type %q timestamp %v, want %s at the expiry %v", p.Type, p.Timestamp, notify.EventExpired, expiresAt)
	}

	// Moving the start of lifecycle notices back lets the key that expired
	// 2 days ago in; the one that expired 8 days ago stays out (the window),
	// and nothing is sent twice.
	f.exec(t, `UPDATE keyworker.installation SET lifecycle_notices_since = now() - interval '30 days'`)
	before := count(t, f.db, `SELECT count(*) FROM keyworker.river_job WHERE kind = $1 AND state = 'completed'`, jobs.KindLifecycleNotices)
	waitScans(before + 2)
	want = append(want, "expired_"+keys["expired_before_since"])
	sort.Strings(want)
	if got := sent(); !slices.Equal(got, want) {
		t.Fatalf("after moving lifecycle_notices_since the webhook got %v, want %v", got, want)
	}
}

// oldNoticeArgs is DeliverNoticesArgs as keyworker wrote it before
// lifecycle notices: key ids only, every notice a created one.
type oldNoticeArgs struct {
	KeyIDs []string `json:"key_ids"`
}

func (oldNoticeArgs) Kind() string { return jobs.KindDeliverNotices }

// oldNoticeWorker stands for the notice worker of a replica not yet
// upgraded: it records the keys it was given (as created notices).
type oldNoticeWorker struct {
	river.WorkerDefaults[oldNoticeArgs]
	got chan []string
}

func (w *oldNoticeWorker) Work(_ context.Context, job *river.Job[oldNoticeArgs]) error {
	w.got <- job.Args.KeyIDs
	return nil
}

// TestOlderReplicaNeverTakesLifecycleNotices: during a rolling upgrade, a
// replica of the version before lifecycle notices shares the notice queue.
// A revoked notice enqueued by EnqueueNoticeTx must not reach its notice
// worker (which would take it for a created notice and skip or mislabel
// it): the older replica fails it as an unknown kind, and River retries it
// until an upgraded replica sends it, as a revoked notice, once.
func TestOlderReplicaNeverTakesLifecycleNotices(t *testing.T) {
	t.Parallel()
	hook := newHookServer(t, nil)
	f := setup(t, func(c *jobs.Config) { c.Senders = []notify.Sender{hook.sender(t, 5*time.Second)} })
	ctx := context.Background()
	user := f.newUser(t, "")
	key, _ := f.manualKey(t, user)
	f.enqueueNotice(t, notify.EventRevoked, key)

	old := &oldNoticeWorker{got: make(chan []string, 10)}
	workers := river.NewWorkers()
	river.AddWorker(workers, old)
	oldClient, err := river.NewClient(riverpgxv5.New(f.db), &river.Config{
		Schema:            "keyworker",
		Queues:            map[string]river.QueueConfig{jobs.QueueNotices: {MaxWorkers: 1}},
		Workers:           workers,
		RetryPolicy:       testenv.FastRetry{},
		FetchPollInterval: 50 * time.Millisecond,
		FetchCooldown:     10 * time.Millisecond,
		Logger:            f.logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := oldClient.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stopOld := func() {
		if stopped {
			return
		}
		stopped = true
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := oldClient.Stop(sctx); err != nil {
			t.Errorf("stopping the older replica: %v", err)
		}
	}
	defer stopOld()
	// The older replica fetches the job: it either works it (the defect) or
	// fails it for an unknown kind.
	eventually(t, 20*time.Second, func() (bool, string) {
		if len(old.got) > 0 {
			return true, ""
		}
		n := count(t, f.db, `SELECT count(*) FROM keyworker.river_job WHERE attempt >= 1 AND cardinality(errors) >= 1`)
		return n >= 1, "the older replica to fetch the notice job (" + f.jobStates(t) + ")"
	})
	stopOld()
	if len(old.got) > 0 {
		t.Fatalf("the older replica's notice worker took the revoked notice of %v as a created one", <-old.got)
	}
	var errText string
	if err := f.db.QueryRow(ctx, `SELECT errors[1]->>'error' FROM keyworker.river_job WHERE cardinality(errors) >= 1`).Scan(&errText); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errText, "not registered") && !strings.Contains(errText, "unknown") {
		t.Errorf("the older replica failed the job with %q, want an unknown kind", errText)
	}

	f.start(t)
	f.waitIdle(t, 20*time.Second)
	reqs, _ := hook.snapshot()
	if len(reqs) != 1 || reqs[0].id != "revoked_"+key {
		var ids []string
		for _, r := range reqs {
			ids = append(ids, r.id)
		}
		t.Fatalf("after the upgrade the webhook got %v, want revoked_%s once", ids, key)
	}
	if p := hook.payloads(t)["revoked_"+key]; p.Type != notify.EventRevoked {
		t.Fatalf("the notice has type %q, want %s", p.Type, notify.EventRevoked)
	}
}
