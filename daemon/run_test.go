package daemon_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyworker/keyworker/daemon"
	"github.com/keyworker/keyworker/keys"
	"github.com/keyworker/keyworker/listener"
	"github.com/keyworker/keyworker/server"
)

// TestRunReturnsAPartsFailure: when a long-lived part ends on its own (here
// River, stopped behind the daemon's back), Done closes, Err names the part,
// and Run shuts the rest down and returns that error.
func TestRunReturnsAPartsFailure(t *testing.T) {
	t.Parallel()
	f := setup(t)
	cfg := f.config(daemon.ModeListen)
	d, err := daemon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitRole(t, d, listener.RoleListening)
	addr := d.Addr()
	waitFor(t, 30*time.Second, "/readyz to answer 200", func() (bool, error) {
		status, _ := get(t, "http://"+addr+"/readyz")
		return status == http.StatusOK, nil
	})
	select {
	case <-d.Done():
		t.Fatalf("Done is closed while every part runs (Err %v)", d.Err())
	default:
	}
	if err := d.Err(); err != nil {
		t.Fatalf("Err = %v while every part runs", err)
	}

	stopCtx, stopCancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer stopCancel()
	if err := daemon.StopRiver(stopCtx, d); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "River stopped on its own") {
			t.Fatalf("Run returned %v, want River's failure", err)
		}
	case <-time.After(cfg.ShutdownTimeout + 10*time.Second):
		t.Fatal("Run did not return after River stopped")
	}
	select {
	case <-d.Done():
	default:
		t.Error("Done is open after a part failed")
	}
	if err := d.Err(); err == nil || !strings.Contains(err.Error(), "River") {
		t.Errorf("Err = %v after River stopped, want River's failure", err)
	}
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("the HTTP server still answers after Run returned")
	}
	if st := d.SourceStatus(); st.Role != listener.RoleStopped {
		t.Errorf("source role %s after Run returned, want stopped", st.Role)
	}
}

// TestDoneWithoutFailure: before Start Done is open and Err nil; Stop
// (here before Start) closes Done without a failure.
func TestDoneWithoutFailure(t *testing.T) {
	t.Parallel()
	d, err := daemon.New(daemon.Config{
		DatabaseURL: "postgres://nobody@127.0.0.1:1/nothing",
		SealingKey:  make([]byte, keys.SealingKeySize),
		HTTP:        server.Config{Addr: "127.0.0.1:0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.Done():
		t.Fatal("Done is closed before Start")
	default:
	}
	d.Stop()
	select {
	case <-d.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done is open after Stop")
	}
	if err := d.Err(); err != nil {
		t.Errorf("Err = %v after Stop, want nil", err)
	}
}
