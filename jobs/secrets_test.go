package jobs_test

import (
	"bytes"
	"context"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/http"
	netmail "net/mail"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/riverqueue/river/rivertype"

	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/jobs"
	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/keystore"
	"github.com/keyworker/keyworker/notify"
)

// TestNoSecretAtRest runs the whole flow (keys, a failing then working
// webhook, email, the log sink, pick-up, purge) and then looks for every key
// and every secret in every text, json and bytea column of the database,
// River's tables included, in the captured logs of the run, and in what the
// webhook and the SMTP server received. Invariant 3.
func TestNoSecretAtRest(t *testing.T) {
	t.Parallel()
	hook := newHookServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 { // one failure, so River records an error too
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mail := newSMTPServer(t)
	f := setup(t, func(c *jobs.Config) {
		c.Senders = []notify.Sender{hook.sender(t, 5*time.Second), mail.sender(t), notify.NewLog(c.Logger)}
	})
	ctx := context.Background()
	const n = 5
	ids := f.newUsers(t, n)
	f.enqueueUsers(t, ids...)
	f.start(t)
	f.waitJobs(t, jobs.KindDeliverNotices, rivertype.JobStateCompleted, 1, 20*time.Second)
	f.waitIdle(t, 10*time.Second)

	var needles []string
	for _, id := range ids {
		r, err := f.store.Reveal(ctx, f.db, id, keystore.Audit{Actor: keystore.ActorUser})
		if err != nil {
			t.Fatal(err)
		}
		f.logger.Info("revealed", "key", r) // as a careless caller might
		needles = append(needles, r.Plaintext(), secretOf(t, r.Plaintext()))
	}
	if _, err := f.store.PurgeExpiredReveals(ctx, f.db); err != nil {
		t.Fatal(err)
	}
	if got := count(t, f.db, `SELECT count(*) FROM keyworker.key_events WHERE event = 'notify_failed'`); got != 1 {
		t.Fatalf("%d notify_failed events, want 1 (the scan should see a failure recorded)", got)
	}

	// The scan can fail: a needle planted in text, bytea and jsonb columns,
	// and a hex needle as bytes, are all found.
	if _, err := f.db.Exec(ctx, `CREATE SCHEMA scan_control;
		CREATE TABLE scan_control.t (s varchar(200), b bytea, j jsonb, h bytea, a text[])`); err != nil {
		t.Fatal(err)
	}
	planted := needles[0]
	if _, err := f.db.Exec(ctx, `INSERT INTO scan_control.t VALUES ('x' || $1, convert_to('y' || $1, 'UTF8'), jsonb_build_object('k', $1::text), '\xdeadbeefcafe', ARRAY['a', $1::text])`, planted); err != nil {
		t.Fatal(err)
	}
	hits, err := testenv.ScanForSecrets(ctx, f.db, []string{planted, "deadbeefcafe"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"scan_control.t.a", "scan_control.t.b", "scan_control.t.h", "scan_control.t.j", "scan_control.t.s"}
	if !slices.Equal(hits, want) {
		t.Fatalf("control scan found %v, want %v", hits, want)
	}
	if _, err := f.db.Exec(ctx, `DROP SCHEMA scan_control CASCADE`); err != nil {
		t.Fatal(err)
	}

	hits, err = testenv.ScanForSecrets(ctx, f.db, needles)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) > 0 {
		t.Fatalf("a key or secret is stored in %v", hits)
	}
	if n := count(t, f.db, `SELECT count(*) FROM keyworker.river_job WHERE errors IS NOT NULL`); n == 0 {
		t.Fatal("no job recorded an error; the scan did not cover River's errors")
	}

	logs := f.logs.String()
	if !strings.Contains(logs, "api key created") || !strings.Contains(logs, "api key notice") || !strings.Contains(logs, "503") {
		t.Fatal("the captured logs lack the run's lines; the log check would prove nothing")
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
	for i, s := range needles {
		if strings.Contains(logs, s) {
			t.Errorf("the logs contain needle %d", i)
		}
		if strings.Contains(received.String(), s) {
			t.Errorf("a notice contains needle %d", i)
		}
	}
}

// secretOf returns the 43-character secret part of a key.
func secretOf(t *testing.T, plaintext string) string {
	t.Helper()
	p, err := keys.Parse(plaintext)
	if err != nil {
		t.Fatal(err)
	}
	return p.Secret()
}

// decodedMail returns the decoded text of every part of a MIME message.
func decodedMail(t *testing.T, raw []byte) string {
	t.Helper()
	msg, err := netmail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var r io.Reader = p
		if strings.EqualFold(p.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			r = quotedprintable.NewReader(p)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		out.Write(b)
	}
	return out.String()
}
