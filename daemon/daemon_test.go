package daemon_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/accesstoken"
	"github.com/keyworker/keyworker/daemon"
	"github.com/keyworker/keyworker/jobs"
	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/listener"
	"github.com/keyworker/keyworker/notify"
	"github.com/keyworker/keyworker/pgtemp"
	"github.com/keyworker/keyworker/server"
)

// TestFullFlow runs the daemon end to end in both modes against a real
// webhook receiver and a real SMTP server: every eligible signup gets
// exactly one key, one signed webhook and one email; anonymous users and
// users deleted before their job runs get nothing; each key is picked up
// once by its owner only and verifies in SQL; and no plaintext key or secret
// is left in any column of the database, in the logs, or in a notice.
func TestFullFlow(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{daemon.ModeLogical, daemon.ModeListen} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			testFullFlow(t, mode)
		})
	}
}

func testFullFlow(t *testing.T, mode string) {
	ctx := context.Background()
	f := setup(t)
	hook := newWebhookReceiver(t)
	smtpSrv := startSMTP(t)
	cfg := f.config(mode)
	cfg.Webhook = notify.WebhookConfig{URL: hook.srv.URL + "/hooks/keys", Secret: hook.secret}
	cfg.SMTP = notify.SMTPConfig{URL: smtpSrv.url(), From: "Keys <keys@example.com>"}
	cfg.PickupURL = "https://app.example.com/keys/{key_id}/pickup"
	// Key jobs wait in a paused queue until two users are deleted, so that
	// "deleted before the job runs" is not a race.
	f.pauseQueue(jobs.QueueKeys)
	d := f.start(cfg)
	revealURL := "http://" + d.Addr() + "/v1/keys/reveal"

	regular := f.signUpMany(5, false)
	anonymous := f.signUpMany(2, true)
	softDeleted := f.signUp(false)
	hardDeleted := f.signUp(false)
	leaver := f.signUp(false) // gets a key, then deletes the account
	f.waitJobsFor(append(slices.Clone(regular), softDeleted, hardDeleted, leaver))
	if _, err := f.db.Exec(ctx, `UPDATE auth.users SET deleted_at = now() WHERE id = $1`, softDeleted); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Exec(ctx, `DELETE FROM auth.users WHERE id = $1`, hardDeleted); err != nil {
		t.Fatal(err)
	}
	f.resumeQueue(jobs.QueueKeys)

	eligible := append(slices.Clone(regular), leaver)
	f.waitCount(45*time.Second, "a webhook and an email notice per eligible user", 2*len(eligible),
		`SELECT count(*) FROM keyworker.key_events WHERE event = 'notified'`)
	f.waitQuiet(30 * time.Second)

	// Exactly one signup key per eligible user, none for anyone else.
	keyIDs := map[string]string{} // user id -> key id
	for _, u := range eligible {
		if n := f.count(`SELECT count(*) FROM keyworker.api_keys WHERE user_id = $1`, u); n != 1 {
			t.Fatalf("user %s has %d keys, want 1", u, n)
		}
		keyIDs[u] = f.keyOf(u)
	}
	if n := f.count(`SELECT count(*) FROM keyworker.api_keys`); n != len(eligible) {
		t.Fatalf("%d keys in api_keys, want %d", n, len(eligible))
	}
	for _, u := range append(slices.Clone(anonymous), softDeleted, hardDeleted) {
		if k := f.keyOf(u); k != "" {
			t.Errorf("user %s (anonymous or deleted) has key %s", u, k)
		}
	}
	for u, reason := range map[string]string{softDeleted: jobs.ReasonUserDeleted, hardDeleted: jobs.ReasonUserMissing} {
		if n := f.count(`SELECT count(*) FROM keyworker.key_events WHERE event = 'skipped' AND user_id = $1 AND detail->>'reason' = $2`, u, reason); n == 0 {
			t.Errorf("no 'skipped' event with reason %s for user %s", reason, u)
		}
	}

	// Exactly one webhook per eligible user, signed, with the key's public
	// facts and a working pick-up link.
	deliveries := hook.received()
	if len(deliveries) != len(eligible) {
		t.Errorf("webhook received %d requests, want %d", len(deliveries), len(eligible))
	}
	perUser := map[string]int{}
	for _, dl := range deliveries {
		if dl.sigErr != nil {
			t.Errorf("webhook %s: signature check failed: %v", dl.id, dl.sigErr)
		}
		var p webhookPayload
		if err := json.Unmarshal(dl.body, &p); err != nil {
			t.Fatalf("webhook body %q: %v", dl.body, err)
		}
		perUser[p.Data.UserID]++
		keyID := keyIDs[p.Data.UserID]
		if keyID == "" {
			t.Errorf("webhook for user %s, who should have no key", p.Data.UserID)
			continue
		}
		if dl.id != "notice_"+keyID || p.Data.KeyID != keyID {
			t.Errorf("webhook-id %q, key_id %q; want notice_%s and %s", dl.id, p.Data.KeyID, keyID, keyID)
		}
		if p.Type != notify.WebhookEventType || p.Data.Prefix != keys.DefaultPrefix || p.Data.RevealURL != revealURL {
			t.Errorf("webhook payload type %q, prefix %q, reveal_url %q; want %q, %q, %q",
				p.Type, p.Data.Prefix, p.Data.RevealURL, notify.WebhookEventType, keys.DefaultPrefix, revealURL)
		}
		var last4 string
		if err := f.db.QueryRow(ctx, `SELECT last4 FROM keyworker.api_keys WHERE id = $1`, keyID).Scan(&last4); err != nil || last4 != p.Data.Last4 {
			t.Errorf("webhook last4 %q, database %q (%v)", p.Data.Last4, last4, err)
		}
	}
	for _, u := range eligible {
		if perUser[u] != 1 {
			t.Errorf("user %s: %d webhooks, want 1", u, perUser[u])
		}
	}

	// Exactly one email per eligible user, none to anyone else.
	emails := smtpSrv.received()
	counts := byRecipient(emails)
	for _, u := range eligible {
		addr := f.emailOf(u)
		if counts[addr] != 1 {
			t.Errorf("%s got %d emails, want 1", addr, counts[addr])
		}
		delete(counts, addr)
	}
	if len(counts) > 0 {
		t.Errorf("emails to unexpected recipients: %v", sortedKeys(counts))
	}
	// Emails link the app's pick-up page, never the POST-only endpoint.
	for _, e := range emails {
		if !strings.Contains(e.text, "https://app.example.com/keys/") || strings.Contains(e.text, revealURL) {
			t.Errorf("email to %v does not carry the pick-up page, or links %s:\n%s", e.to, revealURL, e.text)
		}
	}

	// A user who deletes their account takes the key and its waiting secret
	// along (ON DELETE CASCADE).
	if _, err := f.db.Exec(ctx, `DELETE FROM auth.users WHERE id = $1`, leaver); err != nil {
		t.Fatal(err)
	}
	if n := f.count(`SELECT count(*) FROM keyworker.api_keys WHERE user_id = $1`, leaver) +
		f.count(`SELECT count(*) FROM keyworker.key_reveals WHERE user_id = $1`, leaver); n != 0 {
		t.Errorf("a deleted user's key or sealed secret is still there (%d rows)", n)
	}

	// Tokens that must not pick anything up.
	victim := regular[0]
	expired := token(t, f.jwtSecret, victim, time.Now().Add(-10*time.Minute))
	forged := token(t, randomBytes(t, 48), victim, time.Now().Add(time.Hour))
	// A valid token of another user with its subject swapped for the
	// victim's, the signature left alone.
	parts := strings.Split(f.token(regular[1]), ".")
	payload, _ := json.Marshal(map[string]any{"sub": victim, "role": "authenticated", "aud": "authenticated", "exp": time.Now().Add(time.Hour).Unix()})
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]
	anonRole, err := accesstoken.SignHS256(f.jwtSecret, map[string]any{"sub": victim, "role": "anon", "aud": "authenticated", "exp": time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, token, code string
	}{
		{"expired", expired, "token_expired"},
		{"forged", forged, "invalid_token"},
		{"tampered", tampered, "invalid_token"},
		{"anon role", anonRole, "invalid_token"},
		{"no token", "", "missing_token"},
	} {
		a := reveal(t, d, c.token)
		if a.status != http.StatusUnauthorized || a.Code != c.code || a.Key != "" {
			t.Errorf("%s token: %d %q (key %t), want 401 %q and no key", c.name, a.status, a.Code, a.Key != "", c.code)
		}
	}
	// Users without a waiting key get nothing, in particular nobody else's.
	for _, u := range append(slices.Clone(anonymous), softDeleted, leaver) {
		a := reveal(t, d, f.token(u))
		if a.status != http.StatusNotFound || a.Key != "" {
			t.Errorf("user %s without a key: reveal answered %d (key %t), want 404", u, a.status, a.Key != "")
		}
	}

	// Each owner picks their key up once.
	var plaintexts []string
	for _, u := range regular {
		a := reveal(t, d, f.token(u))
		if a.status != http.StatusOK {
			t.Fatalf("reveal for %s: %d %s", u, a.status, a.body)
		}
		if cc := a.header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("reveal Cache-Control %q, want no-store", cc)
		}
		if a.KeyID != keyIDs[u] {
			t.Fatalf("user %s got key %s, theirs is %s", u, a.KeyID, keyIDs[u])
		}
		p, err := keys.Parse(a.Key)
		if err != nil {
			t.Fatalf("revealed key does not parse: %v", err)
		}
		if p.ID() != a.KeyID || p.Last4() != a.Last4 || p.Prefix() != a.Prefix {
			t.Errorf("revealed key %v does not match its metadata %s/%s/%s", p, a.Prefix, a.KeyID, a.Last4)
		}
		var owner, status, keyID string
		if err := f.db.QueryRow(ctx, `SELECT user_id::text, status, key_id FROM keyworker.verify_api_key($1)`, a.Key).Scan(&owner, &status, &keyID); err != nil {
			t.Fatal(err)
		}
		if status != "valid" || owner != u || keyID != a.KeyID {
			t.Errorf("verify_api_key: %s for user %s key %s; want valid for %s key %s", status, owner, keyID, u, a.KeyID)
		}
		if again := reveal(t, d, f.token(u)); again.status != http.StatusNotFound || again.Code != "nothing_to_reveal" || again.Key != "" {
			t.Errorf("second reveal for %s: %d %q, want 404 nothing_to_reveal", u, again.status, again.Code)
		}
		plaintexts = append(plaintexts, a.Key)
	}
	if n := f.count(`SELECT count(*) FROM keyworker.key_reveals`); n != 0 {
		t.Errorf("%d sealed secrets still wait after every key was picked up", n)
	}
	if n := f.count(`SELECT count(*) FROM keyworker.key_events WHERE event = 'revealed'`); n != len(regular) {
		t.Errorf("%d 'revealed' events, want %d", n, len(regular))
	}
	// A tampered key does not verify.
	wrong := plaintexts[0][:len(plaintexts[0])-10] + strings.Repeat("A", 10)
	var status string
	if err := f.db.QueryRow(ctx, `SELECT status FROM keyworker.verify_api_key($1)`, wrong).Scan(&status); err != nil || status != "not_found" {
		t.Errorf("verify_api_key of a altered key: %q, %v; want not_found", status, err)
	}

	// The secret scan: no plaintext key and no secret part anywhere.
	var needles []string
	for _, k := range plaintexts {
		p, _ := keys.Parse(k)
		needles = append(needles, k, p.Secret())
		if len(p.Secret()) != 43 {
			t.Fatalf("secret part is %d characters, want 43", len(p.Secret()))
		}
	}
	scanCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hits, err := pgtemp.ScanForSecrets(scanCtx, f.db, needles)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) > 0 {
		t.Errorf("plaintext keys or secrets stored in %v", hits)
	}
	// The scan does reach keyworker's tables: key ids are stored.
	var ids []string
	for _, u := range regular {
		ids = append(ids, keyIDs[u])
	}
	if hits, err := pgtemp.ScanForSecrets(scanCtx, f.db, ids); err != nil || !slices.Contains(hits, "keyworker.api_keys.id") {
		t.Errorf("scanning for key ids found %v (%v); the scan is blind", hits, err)
	}

	logs := f.logs.String()
	if !strings.Contains(logs, ids[0]) || !strings.Contains(logs, `"msg":"key revealed"`) {
		t.Errorf("the logs do not mention key %s being revealed; is the log captured?", ids[0])
	}
	var sent strings.Builder
	for _, dl := range hook.received() {
		fmt.Fprintf(&sent, "%v %s\n", dl.header, dl.body)
	}
	for _, e := range smtpSrv.received() {
		sent.Write(e.raw)
		sent.WriteString(e.text)
	}
	for i, n := range needles {
		what := "key"
		if i%2 == 1 {
			what = "secret"
		}
		if strings.Contains(logs, n) {
			t.Errorf("a %s appears in the daemon's logs", what)
		}
		if strings.Contains(sent.String(), n) {
			t.Errorf("a %s appears in a webhook or an email", what)
		}
	}
}

// TestWebhookRetries: a receiver that answers 500, then 429 with
// Retry-After: 1, then hangs past the sender's timeout, then 200 gets the
// notice once in the end, always under the same webhook-id and with a valid
// signature; Retry-After is honoured; key_events records the three failures
// and then the delivery.
func TestWebhookRetries(t *testing.T) {
	t.Parallel()
	f := setup(t)
	hook := newWebhookReceiver(t)
	hook.setRespond(func(n int) (int, http.Header, bool) {
		switch n {
		case 1:
			return http.StatusInternalServerError, nil, false
		case 2:
			return http.StatusTooManyRequests, http.Header{"Retry-After": {"1"}}, false
		case 3:
			return 0, nil, true
		}
		return http.StatusOK, nil, false
	})
	const timeout = 300 * time.Millisecond
	cfg := f.config(daemon.ModeLogical)
	cfg.Webhook = notify.WebhookConfig{URL: hook.srv.URL, Secret: hook.secret, Timeout: timeout}
	f.start(cfg)

	u := f.signUp(false)
	f.waitCount(30*time.Second, "the notice to be delivered", 1, `SELECT count(*) FROM keyworker.key_events WHERE event = 'notified'`)
	f.waitQuiet(30 * time.Second)
	keyID := f.keyOf(u)

	got := hook.received()
	if len(got) != 4 {
		t.Fatalf("webhook received %d requests, want 4", len(got))
	}
	wantStatus := []int{500, 429, 0, 200}
	for i, dl := range got {
		if dl.id != "notice_"+keyID {
			t.Errorf("request %d: webhook-id %q, want notice_%s", i+1, dl.id, keyID)
		}
		if dl.sigErr != nil {
			t.Errorf("request %d: %v", i+1, dl.sigErr)
		}
		if dl.status != wantStatus[i] {
			t.Errorf("request %d answered %d, want %d", i+1, dl.status, wantStatus[i])
		}
		if i > 0 && string(dl.body) != string(got[0].body) {
			t.Errorf("request %d has another body than the first", i+1)
		}
	}
	if gap := got[2].at.Sub(got[1].at); gap < 900*time.Millisecond {
		t.Errorf("the retry after a 429 with Retry-After: 1 came %s later, want at least 1s", gap)
	}
	if gap := got[3].at.Sub(got[2].at); gap < timeout {
		t.Errorf("the retry after a hung request came %s later, before the %s timeout", gap, timeout)
	}

	rows, err := f.db.Query(context.Background(), `SELECT event, coalesce(detail->>'error', '') FROM keyworker.key_events
		WHERE key_id = $1 AND event LIKE 'notif%' ORDER BY id`, keyID)
	if err != nil {
		t.Fatal(err)
	}
	type ev struct{ event, err string }
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ev, error) {
		var e ev
		return e, r.Scan(&e.event, &e.err)
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []ev{
		{"notify_failed", "500 Internal Server Error"},
		{"notify_failed", "429 Too Many Requests"},
		{"notify_failed", "timed out after 300ms"},
		{"notified", ""},
	}
	if len(evs) != len(want) {
		t.Fatalf("key_events: %v, want %v", evs, want)
	}
	for i := range want {
		if evs[i].event != want[i].event || !strings.Contains(evs[i].err, want[i].err) {
			t.Errorf("key_events[%d] = %s %q, want %s containing %q", i, evs[i].event, evs[i].err, want[i].event, want[i].err)
		}
	}
	var state string
	var snoozes int
	if err := f.db.QueryRow(context.Background(), `SELECT state::text, coalesce((metadata->>'snoozes')::int, 0) FROM keyworker.river_job WHERE kind = $1`,
		jobs.KindDeliverNotices).Scan(&state, &snoozes); err != nil {
		t.Fatal(err)
	}
	if state != "completed" || snoozes != 1 {
		t.Errorf("notice job %s with %d snoozes, want completed with 1 (the 429)", state, snoozes)
	}
}

// TestMetricsMatchDatabase: after a run, every number /metrics reports
// agrees with what the database says happened.
func TestMetricsMatchDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t)
	hook := newWebhookReceiver(t)
	cfg := f.config(daemon.ModeLogical)
	cfg.Webhook = notify.WebhookConfig{URL: hook.srv.URL, Secret: hook.secret}
	cfg.HTTP.DashboardUser, cfg.HTTP.DashboardPassword = "admin", "correct horse"
	cfg.HTTP.MetricsAddr = "127.0.0.1:0"
	d := f.start(cfg)

	// The dashboard wants its credentials; metrics on their own address
	// and health do not, and the main address does not serve metrics.
	if status, body := get(t, "http://"+d.Addr()+"/metrics"); status != http.StatusNotFound {
		t.Errorf("/metrics on the main address: %d %.200s", status, body)
	}
	for _, c := range []struct {
		user, pass string
		want       int
	}{{"", "", http.StatusUnauthorized}, {"admin", "wrong", http.StatusUnauthorized}, {"admin", "correct horse", http.StatusOK}} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+d.Addr()+"/riverui/", nil)
		if c.user != "" {
			req.SetBasicAuth(c.user, c.pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("/riverui/ as %q/%q: %d, want %d", c.user, c.pass, resp.StatusCode, c.want)
		}
	}

	regular := f.signUpMany(6, false)
	f.signUpMany(3, true)
	f.waitCount(30*time.Second, "a notice per eligible user", len(regular), `SELECT count(*) FROM keyworker.key_events WHERE event = 'notified'`)
	f.waitQuiet(30 * time.Second)
	// Reveal one key, ask twice, and try a bad token.
	if a := reveal(t, d, f.token(regular[0])); a.status != http.StatusOK {
		t.Fatalf("reveal: %d %s", a.status, a.body)
	}
	reveal(t, d, f.token(regular[0]))
	reveal(t, d, "not.a.token")

	m := scrapeMetrics(t, d)
	check := func(what string, got float64, ok bool, want int) {
		t.Helper()
		if !ok {
			t.Errorf("%s: not in /metrics", what)
		} else if got != float64(want) {
			t.Errorf("%s = %v in /metrics, %d in the database", what, got, want)
		}
	}
	v, ok := m.value("keyworker_keys_created_total")
	check("keyworker_keys_created_total", v, ok, f.count(`SELECT count(*) FROM keyworker.api_keys WHERE source = 'signup'`))
	if v != float64(len(regular)) {
		t.Errorf("keyworker_keys_created_total = %v, want %d", v, len(regular))
	}
	v, ok = m.value("keyworker_signups_captured_total")
	check("keyworker_signups_captured_total", v, ok, len(regular))
	// Every create-key job came from the listener or from a reconcile.
	listenerEnqueued, ok1 := m.value("keyworker_signups_enqueued_total")
	reconcileEnqueued := f.count(`SELECT coalesce(sum((metadata->'output'->>'enqueued')::int), 0) FROM keyworker.river_job WHERE kind = $1`, jobs.KindReconcile)
	check("keyworker_signups_enqueued_total + reconcile output", listenerEnqueued+float64(reconcileEnqueued), ok1,
		f.count(`SELECT coalesce(sum(jsonb_array_length(args->'user_ids')), 0) FROM keyworker.river_job WHERE kind = $1`, jobs.KindCreateKeys))
	v, ok = m.value("keyworker_reconcile_found_total")
	check("keyworker_reconcile_found_total", v, ok,
		f.count(`SELECT coalesce(sum((metadata->'output'->>'found')::int), 0) FROM keyworker.river_job WHERE kind = $1 AND state = 'completed'`, jobs.KindReconcile))
	// The queue moves on its own (the leader's periodic reconcile and
	// purge), so a scrape and a count can straddle a job's start. Compare
	// until one scrape agrees with the counts taken right after it.
	states := []string{"available", "scheduled", "running", "retryable", "completed", "cancelled", "discarded", "pending"}
	var mismatch []string
	for attempt := 0; attempt < 20; attempt++ {
		mismatch = mismatch[:0]
		qm := scrapeMetrics(t, d)
		for _, state := range states {
			v, ok := qm.value("keyworker_queue_jobs", "state", state)
			if n := f.count(`SELECT count(*) FROM keyworker.river_job WHERE state::text = $1`, state); !ok || v != float64(n) {
				mismatch = append(mismatch, fmt.Sprintf("%s: %v in /metrics, %d in the database", state, v, n))
			}
		}
		if len(mismatch) == 0 {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	for _, m := range mismatch {
		t.Errorf("keyworker_queue_jobs never matched the database: %s", m)
	}
	if v, _ := m.value("keyworker_queue_jobs", "state", "completed"); v < 2 {
		t.Errorf("keyworker_queue_jobs{state=\"completed\"} = %v, want at least 2 (a create-keys and a notice job)", v)
	}
	v, ok = m.value("keyworker_notices_total", "sink", "webhook", "outcome", "sent")
	check(`keyworker_notices_total{sink="webhook",outcome="sent"}`, v, ok,
		f.count(`SELECT count(*) FROM keyworker.key_events WHERE event = 'notified' AND detail->>'sink' = 'webhook'`))
	v, ok = m.value("keyworker_reveals_total", "outcome", "revealed")
	check(`keyworker_reveals_total{outcome="revealed"}`, v, ok, f.count(`SELECT count(*) FROM keyworker.key_events WHERE event = 'revealed'`))
	v, ok = m.value("keyworker_reveals_total", "outcome", "nothing")
	check(`keyworker_reveals_total{outcome="nothing"}`, v, ok, 1)
	v, ok = m.value("keyworker_reveals_total", "outcome", "unauthorized")
	check(`keyworker_reveals_total{outcome="unauthorized"}`, v, ok, 1)
	v, ok = m.value("keyworker_enqueue_batch_size_sum")
	check("keyworker_enqueue_batch_size_sum", v, ok, len(regular))
	v, ok = m.value("keyworker_source_streaming")
	check("keyworker_source_streaming", v, ok, 1)
	v, ok = m.value("keyworker_source_standby")
	check("keyworker_source_standby", v, ok, 0)
	if _, ok := m.value("keyworker_slot_lag_bytes"); !ok {
		t.Error("keyworker_slot_lag_bytes is missing")
	}
	lag, _ := m.value("keyworker_slot_lag_bytes")
	if v, ok := m.value("keyworker_slot_wal_retained_bytes"); !ok || v < lag {
		t.Errorf("keyworker_slot_wal_retained_bytes = %v (present %t), want at least the lag %v (restart_lsn is at or before confirmed_flush_lsn)", v, ok, lag)
	}
	var ckAge float64
	if err := f.db.QueryRow(ctx, `SELECT extract(epoch FROM now() - updated_at)::float8 FROM keyworker.replication_checkpoints WHERE slot_name = $1`, f.slot).Scan(&ckAge); err != nil {
		t.Fatal(err)
	}
	if v, ok := m.value("keyworker_checkpoint_age_seconds"); !ok || v < 0 || v > ckAge+1 {
		t.Errorf("keyworker_checkpoint_age_seconds = %v (present %t), the checkpoint is %.1fs old", v, ok, ckAge)
	}
	// Each webhook delivery was timed; each completed batch job's size
	// counted (River reports completions a moment after they commit).
	v, ok = m.value("keyworker_notice_send_seconds_count", "sink", "webhook", "outcome", "sent")
	check(`keyworker_notice_send_seconds_count{sink="webhook",outcome="sent"}`, v, ok,
		f.count(`SELECT count(*) FROM keyworker.key_events WHERE event = 'notified' AND detail->>'sink' = 'webhook'`))
	for _, k := range []struct{ kind, items string }{{jobs.KindCreateKeys, "user_ids"}, {jobs.KindDeliverNotices, "key_ids"}} {
		want := f.count(`SELECT coalesce(sum(jsonb_array_length(args->'`+k.items+`')), 0) FROM keyworker.river_job WHERE kind = $1 AND state = 'completed'`, k.kind)
		waitFor(t, 10*time.Second, "keyworker_job_batch_size_sum of "+k.kind+" to match its completed jobs", func() (bool, error) {
			v, _ := scrapeMetrics(t, d).value("keyworker_job_batch_size_sum", "kind", k.kind)
			return v == float64(want) && want > 0, nil
		})
		if v, ok := m.value("keyworker_job_run_seconds_count", "kind", k.kind, "outcome", "completed"); !ok || v < 1 {
			t.Errorf("keyworker_job_run_seconds_count{kind=%q,outcome=completed} = %v (present %t)", k.kind, v, ok)
		}
	}
	if v, ok := m.value("keyworker_queue_oldest_available_seconds"); !ok || v < 0 {
		t.Errorf("keyworker_queue_oldest_available_seconds = %v (present %t)", v, ok)
	}
	// The source agrees with the counters.
	st := d.SourceStatus()
	if st.Signups != uint64(len(regular)) || st.Filtered != 3 {
		t.Errorf("source status: %d signups, %d filtered; want %d and 3", st.Signups, st.Filtered, len(regular))
	}
}

// TestStandbyTakesOver: /readyz is 200 for the replica that streams and for
// a second one on the same slot that waits as a standby; when the first
// stops, the standby takes the slot over and keeps making keys.
func TestStandbyTakesOver(t *testing.T) {
	t.Parallel()
	f := setup(t)
	cfg := f.config(daemon.ModeLogical)
	d1 := f.start(cfg)
	waitRole(t, d1, listener.RoleStreaming)
	if status, body := get(t, "http://"+d1.Addr()+"/readyz"); status != http.StatusOK {
		t.Fatalf("/readyz of the streaming replica: %d %s", status, body)
	}
	if status, _ := get(t, "http://"+d1.Addr()+"/healthz"); status != http.StatusOK {
		t.Fatalf("/healthz: %d", status)
	}

	// The dashboard is served without credentials on loopback.
	if status, body := get(t, "http://"+d1.Addr()+"/riverui/"); status != http.StatusOK {
		t.Errorf("/riverui/: %d %.200s", status, body)
	}

	d2 := f.start(cfg)
	waitRole(t, d2, listener.RoleStandby)
	if status, body := get(t, "http://"+d2.Addr()+"/readyz"); status != http.StatusOK {
		t.Fatalf("/readyz of the standby: %d %s", status, body)
	}
	m := scrapeMetrics(t, d2)
	if v, _ := m.value("keyworker_source_standby"); v != 1 {
		t.Errorf("standby: keyworker_source_standby = %v, want 1", v)
	}
	if v, _ := m.value("keyworker_source_streaming"); v != 0 {
		t.Errorf("standby: keyworker_source_streaming = %v, want 0", v)
	}

	before := f.signUpMany(3, false)
	f.waitCount(30*time.Second, "keys for the signups before the take-over", len(before),
		`SELECT count(*) FROM keyworker.api_keys WHERE user_id::text = ANY($1)`, before)
	if st := d1.SourceStatus(); st.Signups != uint64(len(before)) {
		t.Errorf("the streaming replica captured %d signups, want %d", st.Signups, len(before))
	}

	d1.Stop()
	waitRole(t, d2, listener.RoleStreaming)
	if status, body := get(t, "http://"+d2.Addr()+"/readyz"); status != http.StatusOK {
		t.Fatalf("/readyz after the take-over: %d %s", status, body)
	}
	after := f.signUpMany(3, false)
	all := append(slices.Clone(before), after...)
	f.waitCount(30*time.Second, "keys for the signups after the take-over", len(after),
		`SELECT count(*) FROM keyworker.api_keys WHERE user_id::text = ANY($1)`, after)
	f.waitQuiet(30 * time.Second)
	if n := f.count(`SELECT count(*) FROM keyworker.api_keys`); n != len(all) {
		t.Errorf("%d keys for %d users", n, len(all))
	}
	if st := d2.SourceStatus(); st.Signups < uint64(len(after)) {
		t.Errorf("the new streaming replica captured %d signups, want at least %d", st.Signups, len(after))
	}
}

func waitRole(t *testing.T, d *daemon.Daemon, role listener.Role) {
	t.Helper()
	// Creating a slot waits for every transaction running in the cluster
	// to end, and tests in parallel hold some open for a while on purpose
	// (TestGracefulShutdown's row lock).
	waitFor(t, 60*time.Second, "the signup source to be "+string(role), func() (bool, error) {
		st := d.SourceStatus()
		if st.Role != role && st.LastError != "" {
			return false, fmt.Errorf("role %s, last error %s", st.Role, st.LastError)
		}
		return st.Role == role, nil
	})
}

// TestGracefulShutdown: Stop while key jobs are blocked and notices hang
// returns within ShutdownTimeout and a margin, after waiting for them;
// nothing half-done is left behind, and a new daemon finishes all of it,
// plus a signup made while none ran, each exactly once.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t)
	hook := newWebhookReceiver(t)
	hook.setRespond(func(int) (int, http.Header, bool) { return 0, nil, true })
	const shutdownTimeout = time.Second
	cfg := f.config(daemon.ModeLogical)
	cfg.Webhook = notify.WebhookConfig{URL: hook.srv.URL, Secret: hook.secret, Timeout: time.Minute}
	cfg.ShutdownTimeout = shutdownTimeout
	f.pauseQueue(jobs.QueueKeys)
	d1 := f.start(cfg)
	// The new slot's reconcile first: run after the signups, it would put
	// them all in one more batch, and the blocked users' locks would hold
	// the others' keys too.
	waitRole(t, d1, listener.RoleStreaming)
	waitFor(t, 30*time.Second, "the new slot's reconcile", func() (bool, error) {
		return f.count(`SELECT count(*) FROM keyworker.river_job WHERE kind = $1 AND state = 'completed'`, jobs.KindReconcile) > 0, nil
	})

	// Separate hand-offs, so separate create-keys jobs: the first users'
	// make their keys (their notices hang), the others' wait on a row lock.
	notified := f.signUpMany(3, false)
	f.waitJobsFor(notified)
	blocked := f.signUpMany(3, false)
	f.waitJobsFor(append(slices.Clone(notified), blocked...))
	tx, err := f.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	// FOR UPDATE conflicts with the FOR KEY SHARE lock that inserting a
	// key's row (its foreign key to the user) takes.
	if _, err := tx.Exec(ctx, `SELECT 1 FROM auth.users WHERE id::text = ANY($1) FOR UPDATE`, blocked); err != nil {
		t.Fatal(err)
	}
	f.resumeQueue(jobs.QueueKeys)
	jobStates := func() string {
		return strings.Join(f.strings(`SELECT kind || ' ' || state::text || ' ' || attempt || ' ' || coalesce(errors[array_length(errors, 1)]->>'error', '') FROM keyworker.river_job ORDER BY id`), "; ")
	}
	waitFor(t, 60*time.Second, "keys for the unblocked users", func() (bool, error) {
		if n := f.count(`SELECT count(*) FROM keyworker.api_keys WHERE user_id::text = ANY($1)`, notified); n != len(notified) {
			return false, fmt.Errorf("%d of %d keys; jobs: %s", n, len(notified), jobStates())
		}
		return true, nil
	})
	// The signups may have come in one hand-off or several: every
	// create-keys job holding a blocked user is running (waiting on the
	// lock), and the notices of the others hang.
	waitFor(t, 45*time.Second, "three notices hanging and the blocked batches running", func() (bool, error) {
		holding := f.count(`SELECT count(DISTINCT j.id) FROM keyworker.river_job j, jsonb_array_elements_text(j.args->'user_ids') u
			WHERE j.kind = $1 AND u = ANY($2)`, jobs.KindCreateKeys, blocked)
		running := f.count(`SELECT count(DISTINCT j.id) FROM keyworker.river_job j, jsonb_array_elements_text(j.args->'user_ids') u
			WHERE j.kind = $1 AND u = ANY($2) AND j.state = 'running'`, jobs.KindCreateKeys, blocked)
		if hanging := hook.hangingNow(); hanging != len(notified) || running != holding || holding == 0 {
			return false, fmt.Errorf("%d notices hanging, %d of %d blocked create-keys jobs running; jobs: %s", hanging, running, holding, jobStates())
		}
		return true, nil
	})

	began := time.Now()
	d1.Stop()
	took := time.Since(began)
	if took < shutdownTimeout-100*time.Millisecond || took > shutdownTimeout+5*time.Second {
		t.Errorf("Stop took %s with jobs running; want about ShutdownTimeout (%s), at most %s more", took, shutdownTimeout, 5*time.Second)
	}
	if n := f.count(`SELECT count(*) FROM keyworker.river_job WHERE state = 'running'`); n != 0 {
		t.Errorf("%d jobs still 'running' after Stop", n)
	}
	if n := f.count(`SELECT count(*) FROM keyworker.api_keys`); n != len(notified) {
		t.Errorf("%d keys after Stop, want %d: a cancelled key job left something", n, len(notified))
	}
	if n := f.count(`SELECT count(*) FROM keyworker.key_events WHERE event = 'notified'`); n != 0 {
		t.Errorf("%d notices recorded as delivered, but none was", n)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// The slot is released, and the last acknowledgement covers every
	// signup handed off.
	f.waitSlotReleased()
	if n := f.count(`SELECT count(*) FROM pg_replication_slots s JOIN keyworker.replication_checkpoints c USING (slot_name)
		WHERE s.slot_name = $1 AND s.confirmed_flush_lsn >= c.lsn`, f.slot); n != 1 {
		t.Error("after Stop the slot's confirmed position is behind the checkpoint: the last acknowledgement was not sent")
	}

	// While no daemon runs, someone signs up; then a new daemon starts.
	late := f.signUp(false)
	hook.setRespond(func(int) (int, http.Header, bool) { return http.StatusOK, nil, false })
	d2 := f.start(cfg)
	all := append(append(slices.Clone(notified), blocked...), late)
	f.waitCount(45*time.Second, "every notice delivered", len(all), `SELECT count(*) FROM keyworker.key_events WHERE event = 'notified'`)
	f.waitQuiet(30 * time.Second)

	for _, u := range all {
		if n := f.count(`SELECT count(*) FROM keyworker.api_keys WHERE user_id = $1`, u); n != 1 {
			t.Errorf("user %s has %d keys, want 1", u, n)
		}
		k := f.keyOf(u)
		var created, notices int
		for _, e := range f.events(k) {
			switch e {
			case "created":
				created++
			case "notified:webhook":
				notices++
			}
		}
		if created != 1 || notices != 1 {
			t.Errorf("key %s: %d 'created' and %d 'notified' events, want 1 and 1: %v", k, created, notices, f.events(k))
		}
	}
	ok := map[string]int{}
	for _, dl := range hook.received() {
		if dl.status == http.StatusOK {
			ok[dl.id]++
		}
	}
	if len(ok) != len(all) {
		t.Errorf("%d notices answered 200, want %d", len(ok), len(all))
	}
	for id, n := range ok {
		if n != 1 {
			t.Errorf("notice %s delivered %d times", id, n)
		}
	}
	if st := d2.SourceStatus(); st.Signups < 1 {
		t.Errorf("the new daemon streamed %d signups; the one made while it was down should come from the slot", st.Signups)
	}
}

// TestRunStopsOnCancel: Run serves until its context ends, then shuts down
// in order and returns nil (a cancelled context is a clean exit), releasing
// the replication slot and the HTTP port.
func TestRunStopsOnCancel(t *testing.T) {
	t.Parallel()
	f := setup(t)
	cfg := f.config(daemon.ModeLogical)
	d, err := daemon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitRole(t, d, listener.RoleStreaming) // Start has bound the HTTP server by now
	addr := d.Addr()
	// The source streams before River and its dashboard are up; /readyz
	// says 503 "starting" until Start has finished.
	waitFor(t, 30*time.Second, "/readyz to answer 200", func() (bool, error) {
		status, _ := get(t, "http://"+addr+"/readyz")
		return status == http.StatusOK, nil
	})
	u := f.signUp(false)
	f.waitCount(30*time.Second, "the key", 1, `SELECT count(*) FROM keyworker.api_keys WHERE user_id = $1`, u)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v after its context was cancelled, want nil", err)
		}
	case <-time.After(cfg.ShutdownTimeout + 10*time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("the HTTP server still answers after Run returned")
	}
	f.waitSlotReleased()
	if st := d.SourceStatus(); st.Role != listener.RoleStopped {
		t.Errorf("source role %s after Run returned, want stopped", st.Role)
	}
}

// TestConfigValidation: New refuses bad settings before connecting to
// anything, with errors that name the setting to fix.
func TestConfigValidation(t *testing.T) {
	t.Parallel()
	base := func() daemon.Config {
		return daemon.Config{
			// Nothing listens there: New must not connect.
			DatabaseURL: "postgres://nobody@127.0.0.1:1/nothing",
			SealingKey:  make([]byte, keys.SealingKeySize),
			HTTP:        server.Config{Addr: "127.0.0.1:0"},
		}
	}
	for _, c := range []struct {
		name string
		edit func(*daemon.Config)
		want string // "" means valid
	}{
		{"valid", func(*daemon.Config) {}, ""},
		{"no database", func(c *daemon.Config) { c.DatabaseURL = "" }, "DATABASE_URL"},
		{"no sealing key", func(c *daemon.Config) { c.SealingKey = nil }, "KEYWORKER_SEALING_KEY"},
		{"short sealing key", func(c *daemon.Config) { c.SealingKey = make([]byte, 16) }, "KEYWORKER_SEALING_KEY"},
		{"bad mode", func(c *daemon.Config) { c.Mode = "trigger" }, "KEYWORKER_MODE"},
		{"listen mode", func(c *daemon.Config) { c.Mode = daemon.ModeListen }, ""},
		{"exposed dashboard", func(c *daemon.Config) { c.HTTP.Addr = "0.0.0.0:8080" }, "KEYWORKER_DASHBOARD_USER"},
		{"all interfaces dashboard", func(c *daemon.Config) { c.HTTP.Addr = ":8080" }, "KEYWORKER_DASHBOARD_PASSWORD"},
		{"exposed dashboard with credentials", func(c *daemon.Config) {
			c.HTTP = server.Config{Addr: "0.0.0.0:8080", DashboardUser: "admin", DashboardPassword: "s3cret-enough"}
		}, ""},
		{"bad HTTP address", func(c *daemon.Config) { c.HTTP.Addr = "localhost" }, "KEYWORKER_HTTP_ADDR"},
		{"bad webhook secret", func(c *daemon.Config) {
			c.Webhook = notify.WebhookConfig{URL: "https://hooks.example.com/k", Secret: "not-a-secret"}
		}, "Webhook: "},
		{"bad SMTP URL", func(c *daemon.Config) {
			c.SMTP = notify.SMTPConfig{URL: "http://mail.example.com", From: "k@example.com"}
		}, "SMTP: "},
		{"short JWT secret", func(c *daemon.Config) { c.Tokens.JWTSecret = []byte("short") }, "KEYWORKER_JWT_SECRET"},
		{"JWKS URL without a derivable issuer", func(c *daemon.Config) { c.Tokens.JWKSURL = "https://keys.example.com/jwks" }, "KEYWORKER_JWT_ISSUER"},
		{"negative key TTL", func(c *daemon.Config) { c.KeyTTL = -time.Hour }, "KEYWORKER_KEY_TTL"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := base()
			c.edit(&cfg)
			began := time.Now()
			d, err := daemon.New(cfg)
			if time.Since(began) > 2*time.Second {
				t.Errorf("New took %s: it should not connect", time.Since(began))
			}
			if c.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				d.Stop() // safe before Start
				d.Stop() // and idempotent
				return
			}
			if err == nil {
				t.Fatalf("New accepted the config; want an error naming %s", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not name %s", err, c.want)
			}
		})
	}
}

// TestStartFailsFast: an unreachable database fails Start quickly with an
// error naming it (and no password), and a daemon starts only once.
func TestStartFailsFast(t *testing.T) {
	t.Parallel()
	d, err := daemon.New(daemon.Config{
		DatabaseURL: "postgres://keyworker:hunter2@127.0.0.1:1/app?connect_timeout=5",
		SealingKey:  make([]byte, keys.SealingKeySize),
		HTTP:        server.Config{Addr: "127.0.0.1:0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = d.Start(ctx)
	if err == nil {
		t.Fatal("Start succeeded against a closed port")
	}
	if !strings.Contains(err.Error(), "127.0.0.1") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %q should name the database and hide the password", err)
	}
	if err := d.Start(ctx); err == nil {
		t.Error("a second Start succeeded")
	}
	d.Stop()
}
