package demo

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyworker/keyworker/internal/testenv"
	"github.com/keyworker/keyworker/pgtemp"
)

// TestDashboardInARealBrowser runs the demo, then opens the River UI in
// headless Chromium: with credentials it shows the key jobs, without them
// the server answers 401. The screenshot goes to docs/dashboard.png when
// KEYWORKER_UPDATE_SCREENSHOT=1.
func TestDashboardInARealBrowser(t *testing.T) {
	chromium := findChromium()
	testenv.Need(t, chromium != "", "Chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	demoCtx, stopDemo := context.WithCancel(ctx)
	ready := make(chan Ready, 1)
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- Run(demoCtx, Config{HTTPAddr: "127.0.0.1:0", Users: 3, Out: &out, OnReady: func(r Ready) { ready <- r },
			ServerURL: os.Getenv(pgtemp.EnvTestDatabaseURL)})
	}()
	var r Ready
	select {
	case r = <-ready:
	case err := <-done:
		t.Fatalf("demo ended before it was ready: %v\n%s", err, out.String())
	case <-ctx.Done():
		t.Fatal("demo never became ready")
	}
	defer func() {
		stopDemo()
		if err := <-done; err != nil {
			t.Errorf("demo: %v", err)
		}
		if !strings.Contains(out.String(), "removed the throwaway PostgreSQL") && !strings.Contains(out.String(), "dropped the demo database") {
			t.Errorf("demo did not clean up:\n%s", out.String())
		}
	}()

	// Without credentials: 401, for the page and for its API.
	for _, path := range []string{"/riverui/", "/riverui/api/jobs?state=completed"} {
		resp, err := http.Get(r.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("GET %s without credentials: %d, want 401", path, resp.StatusCode)
		}
	}

	b, err := startBrowser(ctx, chromium, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(r.DashboardUser+":"+r.DashboardPassword))
	if err := b.open(ctx, map[string]string{"Authorization": auth}); err != nil {
		t.Fatal(err)
	}
	if err := b.navigate(ctx, r.URL+"/riverui/jobs?state=completed"); err != nil {
		t.Fatal(err)
	}
	waitCtx, cancelWait := context.WithTimeout(ctx, 45*time.Second)
	text, err := b.waitText(waitCtx, func(s string) bool {
		return strings.Contains(s, "keyworker.create_keys") && strings.Contains(s, "keyworker.deliver_notices")
	})
	cancelWait()
	if err != nil {
		t.Fatalf("the dashboard never listed the key jobs: %v\npage text:\n%s", err, text)
	}
	png, err := b.screenshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(png) < 10_000 {
		t.Fatalf("screenshot is only %d bytes: the page is probably blank", len(png))
	}
	if os.Getenv("KEYWORKER_UPDATE_SCREENSHOT") == "1" {
		if err := os.WriteFile("../docs/dashboard.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The same page without the header: the dashboard's API answers the
	// browser 401.
	if err := b.call(ctx, "Network.setExtraHTTPHeaders", map[string]any{"headers": map[string]string{}}, nil); err != nil {
		t.Fatal(err)
	}
	status, err := b.eval(ctx, `fetch("/riverui/api/jobs?state=completed", {credentials: "omit"}).then(r => String(r.status))`)
	if err != nil || status != "401" {
		t.Fatalf("the browser's request without credentials got %q (%v), want 401", status, err)
	}
}

// TestDemoOnAnExistingServer: with ServerURL (TEST_DATABASE_URL) the demo
// runs in a database of its own on that server, in logical mode on a slot
// of its own, and drops both at the end, leaving the server as it was.
func TestDemoOnAnExistingServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv, err := pgtemp.Start(ctx, pgtemp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Stop() }()
	admin, err := pgx.Connect(ctx, srv.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	count := func(q string) int {
		t.Helper()
		var n int
		if err := admin.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	databases := count(`SELECT count(*) FROM pg_database`)

	var out bytes.Buffer
	err = Run(ctx, Config{HTTPAddr: "127.0.0.1:0", Users: 2, Exit: true, Out: &out, ServerURL: srv.URL("postgres")})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"using the server of TEST_DATABASE_URL", "on the server of TEST_DATABASE_URL, database keyworker_demo_",
		"reading signups by logical replication", "verify_api_key(<key>) → valid", "dropped the demo database keyworker_demo_"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "throwaway PostgreSQL") {
		t.Errorf("the demo started a server of its own:\n%s", out.String())
	}
	if n := count(`SELECT count(*) FROM pg_database`); n != databases {
		t.Errorf("%d databases after the demo, %d before", n, databases)
	}
	if n := count(`SELECT count(*) FROM pg_replication_slots`); n != 0 {
		t.Errorf("%d replication slots left after the demo", n)
	}
}
