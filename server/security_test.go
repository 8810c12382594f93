package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// mutations is a stand-in dashboard that counts the writes that reach it.
type mutations struct{ n atomic.Int64 }

func (m *mutations) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		m.n.Add(1)
	}
	_, _ = w.Write([]byte("ok"))
}

// started builds a server, lets edit adjust it before it listens, starts it
// and stops it when the test ends.
func started(t *testing.T, cfg Config, edit func(*Server)) *Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s := testServer(t, cfg)
	if edit != nil {
		edit(s)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

type reply struct {
	status int
	body   string
	header http.Header
}

// send makes a request over TCP with a real client.
func send(t *testing.T, method, url string, body io.Reader, hdr map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, string(b), resp.Header}
}

// TestDashboardRefusesCrossOriginWrites: a web page elsewhere cannot make the
// browser post to the dashboard's API (River UI parses JSON whatever the
// Content-Type, so a form post would do), with or without cached
// credentials; the dashboard's own page, curl and Go clients still can, and
// so can a backend picking a key up with its Bearer token.
func TestDashboardRefusesCrossOriginWrites(t *testing.T) {
	t.Parallel()
	ui := &mutations{}
	s := started(t, Config{Dashboard: ui, PublicURL: "https://keys.example.com"}, nil)
	base := "http://" + s.Addr()
	api := base + "/riverui/api/jobs/cancel"
	body := func() io.Reader { return strings.NewReader(`{"job_ids":[1]}`) }
	for _, c := range []struct {
		name   string
		hdr    map[string]string
		status int
	}{
		{"another site's page (Sec-Fetch-Site)", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, http.StatusForbidden},
		{"another site's page (Origin only, older browser)", map[string]string{"Origin": "https://evil.example", "Content-Type": "text/plain"}, http.StatusForbidden},
		{"a sibling subdomain's page", map[string]string{"Sec-Fetch-Site": "same-site", "Origin": "http://other.localhost"}, http.StatusForbidden},
		{"the dashboard's own page", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": base}, http.StatusOK},
		{"the dashboard's own page (Origin only)", map[string]string{"Origin": base}, http.StatusOK},
		{"the public URL's page, through a proxy", map[string]string{"Origin": "https://keys.example.com", "Host": "keys.example.com"}, http.StatusOK},
		{"curl", nil, http.StatusOK},
		{"typed into the address bar", map[string]string{"Sec-Fetch-Site": "none"}, http.StatusOK},
	} {
		before := ui.n.Load()
		r := send(t, http.MethodPost, api, body(), c.hdr)
		if r.status != c.status {
			t.Errorf("%s: %d %s, want %d", c.name, r.status, r.body, c.status)
		}
		reached := ui.n.Load() > before
		if reached != (c.status == http.StatusOK) {
			t.Errorf("%s: the write reached the dashboard: %t", c.name, reached)
		}
		if r.status == http.StatusForbidden && !strings.Contains(r.body, "cross_origin") {
			t.Errorf("%s: the refusal does not say why: %s", c.name, r.body)
		}
	}
	// Reading is not a write: a cross-site GET passes (and the browser
	// keeps its answer from the other page: no CORS headers).
	if r := send(t, http.MethodGet, base+"/riverui/", nil, map[string]string{"Sec-Fetch-Site": "cross-site"}); r.status != http.StatusOK {
		t.Errorf("cross-site GET: %d", r.status)
	}
	// A backend's reveal (a Go client: no Origin, no Sec-Fetch-Site).
	if r := send(t, http.MethodPost, base+"/v1/keys/reveal", nil, map[string]string{"Authorization": "Bearer good"}); r.status != http.StatusOK || !strings.Contains(r.body, secretKey) {
		t.Errorf("reveal from a Go client: %d %s", r.status, r.body)
	}
	// A page elsewhere posting to reveal is refused too.
	if r := send(t, http.MethodPost, base+"/v1/keys/reveal", nil, map[string]string{"Authorization": "Bearer good2", "Sec-Fetch-Site": "cross-site"}); r.status != http.StatusForbidden {
		t.Errorf("cross-site reveal: %d %s", r.status, r.body)
	}
}

// TestLoopbackRefusesOtherHosts: on loopback, a request naming another host
// (a DNS-rebound page: evil.example now resolves to 127.0.0.1) is refused
// with 421 and a body that says what to set; the names of this machine and
// of the public URL are served. Off loopback the check does not apply.
func TestLoopbackRefusesOtherHosts(t *testing.T) {
	t.Parallel()
	ui := &mutations{}
	s := started(t, Config{Dashboard: ui, PublicURL: "https://Keys.Example.com/base"}, nil)
	port := s.Addr()[strings.LastIndexByte(s.Addr(), ':')+1:]
	for _, c := range []struct {
		host   string
		status int
	}{
		{"evil.example:" + port, http.StatusMisdirectedRequest},
		{"evil.example", http.StatusMisdirectedRequest},
		{"127.0.0.1.nip.io:" + port, http.StatusMisdirectedRequest},
		{"localhost.evil.example:" + port, http.StatusMisdirectedRequest},
		{"localhost:" + port, http.StatusOK},
		{"LOCALHOST.:" + port, http.StatusOK},
		{"127.0.0.1:" + port, http.StatusOK},
		{"[::1]:" + port, http.StatusOK},
		{"keys.example.com", http.StatusOK},
	} {
		for _, path := range []string{"/riverui/", "/healthz"} {
			r := send(t, http.MethodGet, "http://"+s.Addr()+path, nil, map[string]string{"Host": c.host})
			if r.status != c.status {
				t.Errorf("Host %s %s: %d %s, want %d", c.host, path, r.status, r.body, c.status)
			}
			if r.status == http.StatusMisdirectedRequest && !strings.Contains(r.body, "public URL must be configured") {
				t.Errorf("Host %s: the refusal does not say what to set: %s", c.host, r.body)
			}
		}
	}
	before := ui.n.Load()
	if r := send(t, http.MethodPost, "http://"+s.Addr()+"/riverui/api/jobs/delete", strings.NewReader("{}"), map[string]string{"Host": "evil.example:" + port}); r.status != http.StatusMisdirectedRequest || ui.n.Load() != before {
		t.Errorf("rebound POST: %d, reached the dashboard: %t", r.status, ui.n.Load() != before)
	}

	open := started(t, Config{Addr: "0.0.0.0:0", Dashboard: ui, DashboardUser: "admin", DashboardPassword: "pw"}, nil)
	port = open.Addr()[strings.LastIndexByte(open.Addr(), ':')+1:]
	if r := send(t, http.MethodGet, "http://127.0.0.1:"+port+"/healthz", nil, map[string]string{"Host": "keys.example.org"}); r.status != http.StatusOK {
		t.Errorf("off loopback, any Host is served: %d %s", r.status, r.body)
	}
}

// TestDashboardLoginThrottled: a client that keeps sending wrong dashboard
// credentials is answered 429 (even with the right ones, or guessing could
// go on) until its bucket refills; other clients are not affected.
func TestDashboardLoginThrottled(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	metricsHit := atomic.Int64{}
	s := started(t, Config{
		Dashboard: &mutations{}, DashboardUser: "admin", DashboardPassword: "pw", DashboardToken: "tok",
		Metrics:        http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { metricsHit.Add(1) }),
		TrustedProxies: []string{"127.0.0.1"}, LoginFailuresPerMinute: 3,
	}, func(s *Server) { s.now = clock })
	url := "http://" + s.Addr() + "/riverui/"
	as := func(client, user, pass string) reply {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.SetBasicAuth(user, pass)
		req.Header.Set("X-Forwarded-For", client)
		return send(t, http.MethodGet, url, nil, map[string]string{"Authorization": req.Header.Get("Authorization"), "X-Forwarded-For": client})
	}
	var statuses []int
	for range 4 {
		statuses = append(statuses, as("198.51.100.7", "admin", "guess").status)
	}
	if fmt.Sprint(statuses) != "[401 401 401 429]" {
		t.Fatalf("wrong passwords: %v, want [401 401 401 429]", statuses)
	}
	r := as("198.51.100.7", "admin", "pw")
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "20" {
		t.Fatalf("right password while throttled: %d, Retry-After %q; want 429 and 20 (3 per minute)", r.status, r.header.Get("Retry-After"))
	}
	// A wrong bearer token counts too, and so does /metrics on this listener.
	if r := send(t, http.MethodGet, "http://"+s.Addr()+"/metrics", nil, map[string]string{"Authorization": "Bearer tok", "X-Forwarded-For": "198.51.100.7"}); r.status != http.StatusTooManyRequests || metricsHit.Load() != 0 {
		t.Fatalf("/metrics while throttled: %d", r.status)
	}
	// Another client is not throttled.
	if r := as("198.51.100.8", "admin", "pw"); r.status != http.StatusOK {
		t.Fatalf("another client: %d %s", r.status, r.body)
	}
	// Without credentials the answer is the usual 401, not a 429.
	if r := send(t, http.MethodGet, url, nil, map[string]string{"X-Forwarded-For": "198.51.100.7"}); r.status != http.StatusUnauthorized {
		t.Fatalf("no credentials while throttled: %d", r.status)
	}
	advance(20 * time.Second)
	if r := as("198.51.100.7", "admin", "pw"); r.status != http.StatusOK {
		t.Fatalf("right password after the bucket refilled: %d %s", r.status, r.body)
	}
	if r := as("198.51.100.7", "admin", "guess"); r.status != http.StatusUnauthorized {
		t.Fatalf("one more wrong one: %d", r.status)
	}
	if r := as("198.51.100.7", "admin", "guess"); r.status != http.StatusTooManyRequests {
		t.Fatalf("and the next: %d, want 429 again", r.status)
	}
}

// TestRequestBodiesAreBounded: reveal takes no body and the dashboard's API
// small JSON: a larger body is refused with 413 whether its length is
// declared or streamed, and never reaches the dashboard.
func TestRequestBodiesAreBounded(t *testing.T) {
	t.Parallel()
	ui := &mutations{}
	s := started(t, Config{Dashboard: ui}, nil)
	base := "http://" + s.Addr()
	big := bytes.Repeat([]byte("x"), MaxDashboardBody+1)
	streamed := func(b []byte) io.Reader { return io.MultiReader(bytes.NewReader(b)) } // no length: chunked
	for _, c := range []struct {
		name   string
		path   string
		body   io.Reader
		status int
	}{
		{"reveal, declared", "/v1/keys/reveal", bytes.NewReader(big[:MaxRequestBody+1]), http.StatusRequestEntityTooLarge},
		{"reveal, streamed", "/v1/keys/reveal", streamed(big[:MaxRequestBody+1]), http.StatusRequestEntityTooLarge},
		{"reveal, a small JSON body", "/v1/keys/reveal", strings.NewReader("{}"), http.StatusOK},
		{"dashboard, declared", "/riverui/api/jobs/retry", bytes.NewReader(big), http.StatusRequestEntityTooLarge},
		{"dashboard, 100 KiB of job ids", "/riverui/api/jobs/retry", bytes.NewReader(big[:100<<10]), http.StatusOK},
	} {
		before := ui.n.Load()
		r := send(t, http.MethodPost, base+c.path, c.body, map[string]string{"Authorization": "Bearer good"})
		if r.status != c.status {
			t.Errorf("%s: %d %.200s, want %d", c.name, r.status, r.body, c.status)
		}
		if c.status == http.StatusRequestEntityTooLarge && ui.n.Load() != before {
			t.Errorf("%s: reached the dashboard", c.name)
		}
	}
	// A streamed body past the dashboard's bound fails when read.
	before := ui.n.Load()
	if r := send(t, http.MethodPost, base+"/riverui/api/jobs/retry", streamed(big), nil); r.status == http.StatusOK || ui.n.Load() != before {
		t.Errorf("dashboard, streamed: %d, reached the dashboard: %t", r.status, ui.n.Load() != before)
	}
}

// TestMetricsExposure: /metrics on the main listener needs the dashboard's
// credentials when there are any; with a metrics address it is served there
// (without credentials, and nothing else is) and not on the main listener;
// off loopback without credentials it is refused unless it has its own
// address.
func TestMetricsExposure(t *testing.T) {
	t.Parallel()
	m := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("keyworker_up 1\n")) })
	s := started(t, Config{Metrics: m, Dashboard: &mutations{}, DashboardUser: "admin", DashboardPassword: "pw"}, nil)
	if r := send(t, http.MethodGet, "http://"+s.Addr()+"/metrics", nil, nil); r.status != http.StatusUnauthorized {
		t.Errorf("/metrics without credentials: %d", r.status)
	}
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	req.SetBasicAuth("admin", "pw")
	if r := send(t, http.MethodGet, "http://"+s.Addr()+"/metrics", nil, map[string]string{"Authorization": req.Header.Get("Authorization")}); r.status != http.StatusOK || r.body != "keyworker_up 1\n" {
		t.Errorf("/metrics with credentials: %d %s", r.status, r.body)
	}

	own := started(t, Config{Metrics: m, MetricsAddr: "127.0.0.1:0", Dashboard: &mutations{}, DashboardUser: "admin", DashboardPassword: "pw"}, nil)
	if own.MetricsAddr() == "" || own.MetricsAddr() == own.Addr() {
		t.Fatalf("metrics address %q, main %q", own.MetricsAddr(), own.Addr())
	}
	if r := send(t, http.MethodGet, "http://"+own.MetricsAddr()+"/metrics", nil, nil); r.status != http.StatusOK || r.body != "keyworker_up 1\n" {
		t.Errorf("/metrics on its own address: %d %s", r.status, r.body)
	}
	for _, path := range []string{"/riverui/", "/v1/keys/reveal", "/readyz"} {
		if r := send(t, http.MethodGet, "http://"+own.MetricsAddr()+path, nil, nil); r.status != http.StatusNotFound {
			t.Errorf("%s on the metrics address: %d, want 404", path, r.status)
		}
	}
	if r := send(t, http.MethodGet, "http://"+own.Addr()+"/metrics", nil, nil); r.status != http.StatusNotFound || !strings.Contains(r.body, "an address of their own") {
		t.Errorf("/metrics on the main address with a metrics address: %d %s", r.status, r.body)
	}
	if r := send(t, http.MethodGet, "http://"+own.MetricsAddr()+"/metrics", nil, map[string]string{"Host": "evil.example"}); r.status != http.StatusMisdirectedRequest {
		t.Errorf("rebound scrape of a loopback metrics address: %d", r.status)
	}
	own.Stop()
	if _, err := http.Get("http://" + own.MetricsAddr() + "/metrics"); err == nil {
		t.Error("the metrics listener still answers after Stop")
	}

	_, err := New(Config{Addr: "0.0.0.0:8080", Metrics: m})
	if err == nil || !strings.Contains(err.Error(), "set MetricsAddr") {
		t.Errorf("open /metrics off loopback: %v, want a refusal naming MetricsAddr", err)
	}
	if _, err := New(Config{Addr: "0.0.0.0:8080", Metrics: m, MetricsAddr: "10.0.0.5:9090"}); err != nil {
		t.Errorf("metrics on their own address: %v", err)
	}
	if _, err := New(Config{Addr: "127.0.0.1:8080", MetricsAddr: "127.0.0.1:8080"}); err == nil || !strings.Contains(err.Error(), "MetricsAddr") {
		t.Errorf("metrics address = main address: %v", err)
	}
	if _, err := New(Config{MetricsAddr: "9090"}); err == nil || !strings.Contains(err.Error(), "MetricsAddr") {
		t.Errorf("bad metrics address: %v", err)
	}
}

// TestClientAddrBehindProxies: X-Forwarded-For counts only from a trusted
// proxy, and then its right-most untrusted hop is the client (what is left
// of it the client wrote itself).
func TestClientAddrBehindProxies(t *testing.T) {
	t.Parallel()
	s := testServer(t, Config{TrustedProxies: []string{"10.0.0.0/8", " 192.0.2.7 ", "fd00::/8", "::ffff:172.16.0.0/108"}})
	for _, c := range []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"no proxy", "198.51.100.1:5000", nil, "198.51.100.1"},
		{"untrusted peer's header is ignored", "198.51.100.1:5000", []string{"203.0.113.9"}, "198.51.100.1"},
		{"trusted proxy", "10.1.2.3:5000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"spoofed hops left of the real one", "10.1.2.3:5000", []string{"1.1.1.1, 2.2.2.2, 203.0.113.9"}, "203.0.113.9"},
		{"two trusted proxies", "10.1.2.3:5000", []string{"1.1.1.1, 203.0.113.9, 192.0.2.7"}, "203.0.113.9"},
		{"several headers", "10.1.2.3:5000", []string{"1.1.1.1", "203.0.113.9, 10.9.9.9"}, "203.0.113.9"},
		{"IPv6 client and proxy", "[fd00::1]:5000", []string{"2001:db8::5"}, "2001:db8::5"},
		{"hop with a port", "10.1.2.3:5000", []string{"[2001:db8::5]:443"}, "2001:db8::5"},
		{"mapped IPv4 peer", "[::ffff:10.1.2.3]:5000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"mapped CIDR", "172.16.0.9:5000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"all hops trusted", "10.1.2.3:5000", []string{"10.4.4.4"}, "10.4.4.4"},
		{"garbage from a trusted hop", "10.1.2.3:5000", []string{"203.0.113.9, unknown"}, "10.1.2.3"},
		{"no header from a trusted proxy", "10.1.2.3:5000", nil, "10.1.2.3"},
	} {
		req := httptest.NewRequest(http.MethodPost, "/v1/keys/reveal", nil)
		req.RemoteAddr = c.remote
		for _, v := range c.xff {
			req.Header.Add("X-Forwarded-For", v)
		}
		if got := s.clientAddr(req); got != c.want {
			t.Errorf("%s: client %q, want %q", c.name, got, c.want)
		}
	}
	for _, c := range []struct{ addr, key string }{
		{"203.0.113.9", "203.0.113.9"},
		{"2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:bbbb::2", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
	} {
		if got := rateKey(c.addr); got != c.key {
			t.Errorf("rateKey(%s) = %s, want %s", c.addr, got, c.key)
		}
	}
}

// TestRevealLimitsPerClientBehindAProxy: behind a trusted proxy each client
// has its own reveal budget (not the proxy's one), an IPv6 client's whole
// /64 shares one, and a client cannot buy a fresh budget by writing its own
// X-Forwarded-For.
func TestRevealLimitsPerClientBehindAProxy(t *testing.T) {
	t.Parallel()
	proxied := started(t, Config{TrustedProxies: []string{"127.0.0.0/8", "::1"}, RevealPerAddr: 2}, nil)
	post := func(s *Server, xff string) int {
		hdr := map[string]string{"Authorization": "Bearer forged"}
		if xff != "" {
			hdr["X-Forwarded-For"] = xff
		}
		return send(t, http.MethodPost, "http://"+s.Addr()+"/v1/keys/reveal", nil, hdr).status
	}
	seq := func(s *Server, xffs ...string) string {
		var out []int
		for _, x := range xffs {
			out = append(out, post(s, x))
		}
		return fmt.Sprint(out)
	}
	if got := seq(proxied, "198.51.100.1", "198.51.100.1", "198.51.100.1", "198.51.100.2"); got != "[401 401 429 401]" {
		t.Errorf("two clients behind the proxy: %s, want [401 401 429 401]", got)
	}
	if got := seq(proxied, "6.6.6.6, 198.51.100.3", "7.7.7.7, 198.51.100.3", "8.8.8.8, 198.51.100.3"); got != "[401 401 429]" {
		t.Errorf("a client varying the hops it writes: %s, want [401 401 429]", got)
	}
	if got := seq(proxied, "2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:0:1:ffff::3", "2001:db8:0:2::1"); got != "[401 401 429 401]" {
		t.Errorf("IPv6 clients by /64: %s, want [401 401 429 401]", got)
	}

	direct := started(t, Config{RevealPerAddr: 2}, nil)
	if got := seq(direct, "198.51.100.1", "198.51.100.2", "198.51.100.3"); got != "[401 401 429]" {
		t.Errorf("an untrusted peer's X-Forwarded-For: %s, want [401 401 429] (ignored)", got)
	}
}

// TestRateLimitSettingsAreValidated: the limits and the proxies are checked
// with errors that name the field and the setting.
func TestRateLimitSettingsAreValidated(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{RevealPerUser: -1}, "RevealPerUser must be between 1 and 1000000 per minute, got -1"},
		{Config{RevealPerAddr: MaxRateLimit + 1}, "RevealPerAddr must"},
		{Config{LoginFailuresPerMinute: -5}, "LoginFailuresPerMinute"},
		{Config{TrustedProxies: []string{"10.0.0.0/33"}}, `TrustedProxies: "10.0.0.0/33"`},
		{Config{TrustedProxies: []string{"proxy.internal"}}, "TrustedProxies:"},
		{Config{PublicURL: "keys.example.com"}, "PublicURL "},
	} {
		if _, err := New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error with %q", c.cfg.TrustedProxies, err, c.want)
		}
	}
	if _, err := New(Config{TrustedProxies: []string{"10.0.0.0/8", "", "2001:db8::1"}, RevealPerUser: 1, RevealPerAddr: MaxRateLimit}); err != nil {
		t.Errorf("valid settings: %v", err)
	}
}
