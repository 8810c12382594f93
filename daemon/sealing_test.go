package daemon_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyworker/keyworker/daemon"
	"github.com/keyworker/keyworker/keys"
)

// TestReplicaWithAnotherSealingKeyIsRefused guards the fingerprint check: a
// second replica started with another sealing key does not join (it would
// seal keys the first cannot open), and says which fingerprints differ.
func TestReplicaWithAnotherSealingKeyIsRefused(t *testing.T) {
	t.Parallel()
	f := setup(t)
	first := f.config(daemon.ModeListen)
	f.start(first)

	second := f.config(daemon.ModeListen)
	second.SealingKey = randomBytes(t, keys.SealingKeySize)
	d, err := daemon.New(second)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = d.Start(ctx)
	if err == nil {
		d.Stop()
		t.Fatal("a replica with another sealing key started")
	}
	msg := err.Error()
	for _, want := range []string{keys.Fingerprint(f.sealingKey), keys.Fingerprint(second.SealingKey), "SealingKey", "PreviousSealingKey"} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal %q does not say %q", msg, want)
		}
	}
	for _, k := range [][]byte{f.sealingKey, second.SealingKey} {
		if strings.Contains(msg, base64.StdEncoding.EncodeToString(k)[:12]) {
			t.Errorf("refusal %q shows a sealing key", msg)
		}
	}
}

// TestSealingKeyRotation guards rotation end to end: a worker started with
// a new key and the old one as previous starts (and says so), picks up keys
// sealed under either; one with the new key alone answers a key sealed under
// the old one with 500 sealed_under_another_key, not "try again", and logs
// the fingerprints.
func TestSealingKeyRotation(t *testing.T) {
	t.Parallel()
	f := setup(t)
	oldKey, newKey := f.sealingKey, randomBytes(t, keys.SealingKeySize)
	run := func(key, previous []byte) *daemon.Daemon {
		cfg := f.config(daemon.ModeListen)
		cfg.SealingKey, cfg.PreviousSealingKey = key, previous
		return f.start(cfg)
	}
	waitKey := func(user string) {
		f.waitCount(30*time.Second, "the sealed key of "+user, 1, `SELECT count(*) FROM keyworker.key_reveals WHERE user_id = $1`, user)
	}

	d := run(oldKey, nil)
	early := f.signUp(false)
	waitKey(early)
	d.Stop()

	d = run(newKey, oldKey)
	if !strings.Contains(f.logs.String(), "sealing key rotated") {
		t.Error("the rotation is not logged")
	}
	late := f.signUp(false)
	waitKey(late)
	if a := reveal(t, d, f.token(late)); a.status != http.StatusOK || a.Key == "" {
		t.Fatalf("reveal of a key sealed under the new key: %d %s", a.status, a.body)
	}
	d.Stop()

	d = run(newKey, nil)
	a := reveal(t, d, f.token(early))
	if a.status != http.StatusInternalServerError || a.Code != "sealed_under_another_key" || a.Key != "" {
		t.Fatalf("reveal of a key sealed under a key the worker lacks: %d %s, want 500 sealed_under_another_key", a.status, a.body)
	}
	if strings.Contains(a.Error, "try again") {
		t.Errorf("the answer asks to try again: %s", a.Error)
	}
	logs := f.logs.String()
	if !strings.Contains(logs, keys.Fingerprint(oldKey)) || !strings.Contains(logs, keys.Fingerprint(newKey)) {
		t.Errorf("no log line names the fingerprints %s and %s", keys.Fingerprint(oldKey), keys.Fingerprint(newKey))
	}
	d.Stop()

	d = run(newKey, oldKey)
	if a := reveal(t, d, f.token(early)); a.status != http.StatusOK || a.Key == "" {
		t.Fatalf("reveal of the old key with the previous key back: %d %s", a.status, a.body)
	}
}
