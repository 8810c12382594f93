package server

import (
	"cmp"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults.
const (
	DefaultAddr            = "127.0.0.1:8080"
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultRevealPerUser is how many reveal attempts a user may make per
	// minute.
	DefaultRevealPerUser = 5
	// DefaultRevealPerAddr is how many reveal requests one client address
	// (an IPv6 /64) may make per minute, authenticated or not.
	DefaultRevealPerAddr = 30
	// DefaultLoginFailuresPerMinute is how many wrong dashboard (or metrics)
	// credentials one client address may send per minute before it is
	// answered 429 for a while.
	DefaultLoginFailuresPerMinute = 10
	// DefaultKeysPerUser is how many keys API requests (list, create,
	// rotate, disable, enable, revoke) a user may make per minute.
	DefaultKeysPerUser = 60
	// DefaultKeysPerAddr is how many keys API requests one client address
	// (an IPv6 /64) may make per minute, authenticated or not.
	DefaultKeysPerAddr = 300
	// MaxRateLimit bounds the per-minute limits.
	MaxRateLimit = 1_000_000
)

// Request body limits. Reveal takes no body; River UI's API takes JSON
// lists of job ids.
const (
	MaxRequestBody   = 16 << 10
	MaxDashboardBody = 256 << 10
)

// ErrNothingToReveal is what a RevealFunc returns when the user has no key
// waiting (already picked up, expired, or never made).
var ErrNothingToReveal = errors.New("nothing to reveal")

// ErrSealedUnderAnotherKey is what a RevealFunc returns (wrapped) when the
// waiting key was sealed under a sealing key this worker does not hold: the
// answer is 500 with code "sealed_under_another_key", which says that
// retrying cannot help.
var ErrSealedUnderAnotherKey = errors.New("sealed under another sealing key")

// ErrTokenExpired is what a TokenFunc returns (wrapped) for an expired token,
// so the client is told to refresh rather than that the token is forged.
var ErrTokenExpired = errors.New("token expired")

// ErrTokenUnverifiable is what a TokenFunc returns (wrapped) when it cannot
// check any token right now (the signing keys cannot be fetched): the
// request is answered 503 with Retry-After, since the caller is not at fault.
var ErrTokenUnverifiable = errors.New("tokens cannot be checked right now")

// tokenRetryAfter is the Retry-After of an ErrTokenUnverifiable answer: about
// when the signing keys are fetched again.
const tokenRetryAfter = 30 * time.Second

// Revealed is a key taken for its one pick-up. Its Key is the plaintext and
// reaches only the response body: String, Format (every fmt verb, %#v
// included), GoString and LogValue show the redacted form
// "<prefix>_<key_id>_…<last4>", as keys.Key does. encoding/json, which writes
// the response, still sees Key.
type Revealed struct {
	Key       string     `json:"key"`
	KeyID     string     `json:"key_id"`
	Prefix    string     `json:"prefix"`
	Last4     string     `json:"last4"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at"`
}

// String is the redacted form: the prefix, the key id and the last 4.
func (r Revealed) String() string { return redactedKey(r.Prefix, r.KeyID, r.Last4) }

// GoString is a Go-syntax representation without the key, for %#v.
func (r Revealed) GoString() string {
	return fmt.Sprintf("server.Revealed{KeyID:%q, Prefix:%q, Last4:%q, CreatedAt:%s, ExpiresAt:%v}", r.KeyID, r.Prefix, r.Last4, r.CreatedAt.Format(time.RFC3339), r.ExpiresAt)
}

// Format makes every fmt verb print String's redacted form (GoString for
// %#v), keeping the verb's flags, width and precision.
func (r Revealed) Format(f fmt.State, verb rune) { formatRedacted(f, verb, r.String(), r.GoString) }

// LogValue keeps the key out of logs.
func (r Revealed) LogValue() slog.Value { return redactedLogValue(r.Prefix, r.KeyID, r.Last4) }

// TokenFunc verifies a bearer token and returns the user id it names. Its
// error is logged, never sent to the client, and must not contain the token.
type TokenFunc func(ctx context.Context, token string) (userID string, err error)

// RevealFunc atomically takes the user's waiting key; ErrNothingToReveal when
// there is none. remoteAddr is for the audit trail.
type RevealFunc func(ctx context.Context, userID, remoteAddr string) (Revealed, error)

// Config configures the server.
type Config struct {
	// Addr is the listen address. Defaults to DefaultAddr. On a loopback
	// address, requests must name localhost, 127.0.0.1, [::1], Addr's host or
	// PublicURL's host in their Host header (a DNS rebinding defence), or are
	// answered 421.
	Addr string
	// PublicURL is the base URL users reach this server at, e.g.
	// https://keys.example.com. Its host is accepted in Host headers on a
	// loopback Addr (behind a proxy that keeps Host), and its origin is
	// trusted by the cross-origin check. Optional.
	PublicURL string
	// MetricsAddr, when set, serves /metrics (and /healthz) on a listener of
	// its own, without credentials, and not on Addr; bind it to an address
	// only the scraper reaches. When empty, /metrics is served on Addr,
	// behind the dashboard's credentials when they are set (and refused on
	// a non-loopback Addr when they are not). Defaults to "".
	MetricsAddr string
	// TLSCertFile and TLSKeyFile, when both set, make the server speak TLS.
	TLSCertFile, TLSKeyFile string

	// DashboardUser and DashboardPassword protect /riverui/ with basic
	// authentication; DashboardToken, when set, is also accepted as a bearer
	// token. Without any of them the dashboard is only served on a loopback
	// address.
	DashboardUser, DashboardPassword, DashboardToken string
	// Dashboard is the River UI handler, mounted at /riverui/. Optional.
	Dashboard http.Handler

	// Metrics serves /metrics. Optional.
	Metrics http.Handler
	// Ready reports readiness for /readyz; nil means always ready.
	Ready func(ctx context.Context) error

	// VerifyToken and Reveal implement POST /v1/keys/reveal; the endpoint
	// answers 503 when either is nil.
	VerifyToken TokenFunc
	Reveal      RevealFunc
	// RevealPerUser and RevealPerAddr are per-minute limits (token buckets
	// of that size), per user and per client address; IPv6 addresses count
	// per /64. Defaults to DefaultRevealPerUser and DefaultRevealPerAddr.
	RevealPerUser, RevealPerAddr int
	// LoginFailuresPerMinute limits wrong dashboard credentials per client
	// address. Defaults to DefaultLoginFailuresPerMinute.
	LoginFailuresPerMinute int
	// TrustedProxies are CIDRs (or single addresses) of the proxies in
	// front of the server. A request from one of them is attributed to the
	// right-most address of X-Forwarded-For that is not one of them;
	// X-Forwarded-For from anyone else is ignored. Defaults to none.
	TrustedProxies []string
	// Keys implements the keys API (GET and POST /v1/keys,
	// /v1/keys/{id}/rotate, /disable, /enable, DELETE /v1/keys/{id}) and
	// POST /v1/keys/verify. The user endpoints also need VerifyToken; they
	// answer 503 keys_disabled while either is nil, and verify answers 503
	// verify_disabled while Keys is nil or VerifyTokens is empty.
	Keys KeyService
	// KeysPerUser and KeysPerAddr are per-minute limits of the keys API, as
	// RevealPerUser and RevealPerAddr are of reveal (each has its own
	// buckets). Defaults to DefaultKeysPerUser and DefaultKeysPerAddr.
	KeysPerUser, KeysPerAddr int
	// VerifyTokens are the service tokens backends send to POST
	// /v1/keys/verify (Authorization: Bearer <token>), each at least
	// MinVerifyTokenLen printable ASCII characters without spaces; several
	// let one be replaced without downtime. Compared in constant time; an
	// end user's access token is not one. Wrong ones count against the
	// address's LoginFailuresPerMinute (buckets of their own). Defaults to
	// none: verify answers 503.
	VerifyTokens []string
	// CORSOrigins are the origins (scheme://host[:port], exactly as a
	// browser sends them) of the web apps that may call the user endpoints
	// (/v1/keys, its sub-paths and reveal, not verify) from the browser:
	// preflights from them are answered, their answers carry
	// Access-Control-Allow-Origin, and the cross-origin check trusts them
	// on those endpoints only. "*" is refused. Credentials travel in
	// Authorization, never in cookies: Access-Control-Allow-Credentials is
	// never sent. Defaults to none.
	CORSOrigins []string
	// OnReveal, when set, is called after each reveal request with its
	// outcome ("revealed", "nothing", "unauthorized", "rate_limited", "error"),
	// for metrics.
	OnReveal func(outcome string)

	// ShutdownTimeout bounds Stop. Defaults to DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Logger defaults to discarding.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	c.Addr = cmp.Or(c.Addr, DefaultAddr)
	c.RevealPerUser = cmp.Or(c.RevealPerUser, DefaultRevealPerUser)
	c.RevealPerAddr = cmp.Or(c.RevealPerAddr, DefaultRevealPerAddr)
	c.KeysPerUser = cmp.Or(c.KeysPerUser, DefaultKeysPerUser)
	c.KeysPerAddr = cmp.Or(c.KeysPerAddr, DefaultKeysPerAddr)
	c.LoginFailuresPerMinute = cmp.Or(c.LoginFailuresPerMinute, DefaultLoginFailuresPerMinute)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, DefaultShutdownTimeout)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.OnReveal == nil {
		c.OnReveal = func(string) {}
	}
	return c
}

func (c Config) validate() error {
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("Addr %q is invalid: want host:port, e.g. %q: %w", c.Addr, DefaultAddr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("Addr %q has an invalid port", c.Addr)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("TLS needs both a certificate file and a key file: set TLSCertFile and TLSKeyFile")
	}
	if c.Dashboard != nil && !c.dashboardProtected() && !IsLoopback(host) {
		return fmt.Errorf("refusing to serve the dashboard on non-loopback address %s without credentials: set DashboardUser and DashboardPassword (or DashboardToken), or listen on 127.0.0.1", c.Addr)
	}
	if c.MetricsAddr != "" {
		_, mport, err := net.SplitHostPort(c.MetricsAddr)
		if err != nil {
			return fmt.Errorf("MetricsAddr %q is invalid: want host:port, e.g. 127.0.0.1:9090: %w", c.MetricsAddr, err)
		}
		if _, err := strconv.ParseUint(mport, 10, 16); err != nil {
			return fmt.Errorf("MetricsAddr %q has an invalid port", c.MetricsAddr)
		}
		if c.MetricsAddr == c.Addr && mport != "0" {
			return fmt.Errorf("MetricsAddr is the same as Addr, %s: leave it empty to serve /metrics there", c.Addr)
		}
	} else if c.Metrics != nil && !c.dashboardProtected() && !IsLoopback(host) {
		return fmt.Errorf("refusing to serve /metrics on non-loopback address %s without credentials: set MetricsAddr to serve it on an address of its own, or set DashboardUser and DashboardPassword (or DashboardToken)", c.Addr)
	}
	if (c.DashboardUser == "") != (c.DashboardPassword == "") {
		return errors.New("dashboard credentials need both DashboardUser and DashboardPassword")
	}
	if c.PublicURL != "" {
		if _, err := publicOrigin(c.PublicURL); err != nil {
			return err
		}
	}
	for _, l := range []struct {
		name string
		n    int
	}{
		{"RevealPerUser", c.RevealPerUser},
		{"RevealPerAddr", c.RevealPerAddr},
		{"KeysPerUser", c.KeysPerUser},
		{"KeysPerAddr", c.KeysPerAddr},
		{"LoginFailuresPerMinute", c.LoginFailuresPerMinute},
	} {
		if l.n < 1 || l.n > MaxRateLimit {
			return fmt.Errorf("%s must be between 1 and %d per minute, got %d", l.name, MaxRateLimit, l.n)
		}
	}
	if _, err := parseTrustedProxies(c.TrustedProxies); err != nil {
		return err
	}
	if _, err := parseCORSOrigins(c.CORSOrigins); err != nil {
		return err
	}
	if _, err := c.verifyTokenSums(); err != nil {
		return err
	}
	return nil
}

// publicOrigin is PublicURL's origin (scheme://host[:port]) and host.
func publicOrigin(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("PublicURL %q is not a base URL: want http(s)://host[:port][/path], e.g. https://keys.example.com", raw)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

func (c Config) dashboardProtected() bool {
	return c.DashboardPassword != "" || c.DashboardToken != ""
}

// IsLoopback reports whether host is a loopback name or address. An empty
// host (all interfaces) is not.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Server is the HTTP server. Start and Stop are safe to call from different
// goroutines; Stop is idempotent and safe before Start.
type Server struct {
	cfg            Config
	handler        http.Handler
	metricsHandler http.Handler // on MetricsAddr; nil without one
	revealLimits   userLimits
	keysLimits     userLimits
	loginRate      *limiter
	verifyFailRate *limiter // wrong service tokens, per client address
	trustedProxies []netip.Prefix
	corsOrigins    map[string]bool
	apiCOP         *http.CrossOriginProtection // on the API's paths, CORSOrigins trusted
	verifyTokens   [][32]byte                  // SHA-256 of each of VerifyTokens
	now            func() time.Time            // the limiters' clock; tests move it

	mu        sync.Mutex
	srvs      []*http.Server
	ln, mln   net.Listener
	done      chan struct{}
	closeDone sync.Once
	serveErr  error
	stopped   bool
}

// New validates cfg and builds the server; nothing listens until Start.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:            cfg,
		revealLimits:   userLimits{"reveal", newLimiter(cfg.RevealPerAddr, time.Minute), newLimiter(cfg.RevealPerUser, time.Minute)},
		keysLimits:     userLimits{"keys API", newLimiter(cfg.KeysPerAddr, time.Minute), newLimiter(cfg.KeysPerUser, time.Minute)},
		loginRate:      newLimiter(cfg.LoginFailuresPerMinute, time.Minute),
		verifyFailRate: newLimiter(cfg.LoginFailuresPerMinute, time.Minute),
		now:            time.Now,
	}
	// All validated.
	s.trustedProxies, _ = parseTrustedProxies(cfg.TrustedProxies)
	s.corsOrigins, _ = parseCORSOrigins(cfg.CORSOrigins)
	s.verifyTokens, _ = cfg.verifyTokenSums()
	var err error
	if s.apiCOP, err = s.crossOrigin(s.corsOrigins); err != nil {
		return nil, err
	}
	if s.handler, err = s.guard(cfg.Addr, s.routes(), true); err != nil {
		return nil, err
	}
	if cfg.MetricsAddr != "" && cfg.Metrics != nil {
		if s.metricsHandler, err = s.guard(cfg.MetricsAddr, s.metricsRoutes(), false); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Handler is the server's routing on Addr, for tests and embedding.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", s.readyz)
	switch {
	case s.cfg.Metrics != nil && s.cfg.MetricsAddr == "":
		mux.Handle("/metrics", s.credentials(s.cfg.Metrics))
	case s.cfg.Metrics != nil:
		mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "not_found", "metrics are served on an address of their own, not here")
		})
	}
	if s.cfg.Dashboard != nil {
		protected := s.credentials(s.cfg.Dashboard)
		mux.Handle("/riverui/", protected)
		mux.Handle("/riverui", http.RedirectHandler("/riverui/", http.StatusMovedPermanently))
	}
	s.handleAPI(mux, s.apiRoutes())
	// The catch-all: the mux's own 404 would be plain text.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			writeError(w, http.StatusNotFound, "not_found", "no such endpoint: GET /v1/openapi.json lists the API (/v1/keys, /v1/keys/reveal, /v1/keys/verify); also /riverui/, /metrics, /healthz and /readyz")
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("keyworker: the API is under /v1/ (GET /v1/openapi.json describes it), /riverui/ (dashboard), /metrics, /healthz, /readyz\n"))
	})
	return mux
}

// metricsRoutes is what MetricsAddr serves.
func (s *Server) metricsRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.cfg.Metrics)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "this is the metrics address: GET /metrics or /healthz")
	})
	return mux
}

// Start listens and serves in the background, on Addr and on MetricsAddr
// when it is set. It fails fast when an address is taken or TLS files are
// unreadable.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("starting HTTP server: it was stopped")
	}
	if s.srvs != nil {
		return errors.New("starting HTTP server: already started")
	}
	var tlsCfg *tls.Config
	if s.cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCertFile, s.cfg.TLSKeyFile)
		if err != nil {
			return fmt.Errorf("loading TLS certificate and key: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s (Addr): %w", s.cfg.Addr, err)
	}
	var mln net.Listener
	if s.metricsHandler != nil {
		if mln, err = lc.Listen(ctx, "tcp", s.cfg.MetricsAddr); err != nil {
			_ = ln.Close()
			return fmt.Errorf("listening on %s (MetricsAddr): %w", s.cfg.MetricsAddr, err)
		}
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
		if mln != nil {
			mln = tls.NewListener(mln, tlsCfg)
		}
	}
	s.ln, s.mln = ln, mln
	s.done = make(chan struct{})
	s.serve(ctx, ln, s.handler)
	if mln != nil {
		s.serve(ctx, mln, s.metricsHandler)
	}
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	attrs := []any{"component", "http", "addr", ln.Addr().String(), "scheme", scheme, "dashboard", s.cfg.Dashboard != nil}
	if mln != nil {
		attrs = append(attrs, "metrics_addr", mln.Addr().String())
	}
	s.cfg.Logger.Info("http server listening", attrs...)
	return nil
}

// serve serves ln in the background; s.mu is held. Done closes when the
// first listener stops serving.
func (s *Server) serve(ctx context.Context, ln net.Listener, h http.Handler) {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	s.srvs = append(s.srvs, srv)
	done := s.done
	go func() {
		err := srv.Serve(ln)
		s.mu.Lock()
		if !errors.Is(err, http.ErrServerClosed) && s.serveErr == nil {
			s.serveErr = err
		}
		s.mu.Unlock()
		s.closeDone.Do(func() { close(done) })
	}()
}

// Addr is the bound address (useful with port 0), or "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// MetricsAddr is the metrics listener's bound address, or "" before Start
// or without MetricsAddr.
func (s *Server) MetricsAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mln == nil {
		return ""
	}
	return s.mln.Addr().String()
}

// Done is closed when the server stops serving (on either listener); Err
// then says why.
func (s *Server) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		ch := make(chan struct{})
		return ch
	}
	return s.done
}

// Err is the error that stopped serving, if it was not Stop.
func (s *Server) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serveErr
}

// Stop shuts the server down gracefully within ShutdownTimeout.
func (s *Server) Stop() {
	s.mu.Lock()
	s.stopped = true
	srvs, done := s.srvs, s.done
	s.mu.Unlock()
	if len(srvs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range srvs {
		wg.Go(func() {
			if err := srv.Shutdown(ctx); err != nil {
				_ = srv.Close()
			}
		})
	}
	wg.Wait()
	<-done
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := s.cfg.Ready(ctx); err != nil {
			writeError(w, http.StatusServiceUnavailable, "not_ready", err.Error())
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ready\n"))
}

// credentials guards the dashboard (and /metrics on Addr) with the
// dashboard's credentials, when there are any. A client that has sent
// LoginFailuresPerMinute wrong ones is answered 429, right or wrong, until
// its bucket refills.
func (s *Server) credentials(next http.Handler) http.Handler {
	if !s.cfg.dashboardProtected() {
		return next // only reachable on loopback: validate refused otherwise
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			s.unauthorized(w)
			return
		}
		key := rateKey(s.clientAddr(r))
		now := s.now()
		if blocked, retry := s.loginRate.blocked(key, now); blocked {
			w.Header().Set("Retry-After", retryAfter(retry))
			writeError(w, http.StatusTooManyRequests, "rate_limited", "too many wrong dashboard credentials from this address; try again later")
			return
		}
		if s.authorized(r) {
			next.ServeHTTP(w, r)
			return
		}
		s.loginRate.charge(key, now)
		if blocked, _ := s.loginRate.blocked(key, now); blocked {
			s.cfg.Logger.Warn("too many wrong dashboard credentials: throttling the client", "component", "http", "client", key, "per_minute", s.cfg.LoginFailuresPerMinute)
		}
		s.unauthorized(w)
	})
}

func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.DashboardToken != "" {
		if tok, ok := bearer(r); ok && subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.DashboardToken)) == 1 {
			return true
		}
	}
	if s.cfg.DashboardPassword != "" {
		user, pass, ok := r.BasicAuth()
		userOK := subtle.ConstantTimeCompare([]byte(user), []byte(s.cfg.DashboardUser)) == 1
		passOK := subtle.ConstantTimeCompare([]byte(pass), []byte(s.cfg.DashboardPassword)) == 1
		return ok && userOK && passOK
	}
	return false
}

func (s *Server) unauthorized(w http.ResponseWriter) {
	if s.cfg.DashboardPassword != "" {
		w.Header().Set("WWW-Authenticate", `Basic realm="keyworker dashboard", charset="UTF-8"`)
	}
	writeError(w, http.StatusUnauthorized, "unauthorized", "the dashboard needs the credentials this server was configured with: its basic-auth user and password, or its bearer token")
}

// retryAfter is a Retry-After value: whole seconds, rounded up.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(int(math.Ceil(d.Seconds())))
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// reveal is POST /v1/keys/reveal: the user's waiting key, once.
func (s *Server) reveal(w http.ResponseWriter, r *http.Request) {
	// Reveal takes no body: read what came, to refuse a large one.
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		if tooLarge := new(http.MaxBytesError); errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("reveal takes no request body (at most %d bytes are read)", MaxRequestBody))
			return
		}
		writeError(w, http.StatusBadRequest, "bad_request", "reading the request body failed")
		return
	}
	if s.cfg.VerifyToken == nil || s.cfg.Reveal == nil {
		s.cfg.OnReveal("error")
		writeError(w, http.StatusServiceUnavailable, "reveal_disabled", "key pick-up is not configured on this server: it has no way to verify access tokens")
		return
	}
	userID, addr, failure := s.signIn(w, r, s.revealLimits)
	if failure != "" {
		s.cfg.OnReveal(failure)
		return
	}
	rev, err := s.cfg.Reveal(r.Context(), userID, addr)
	switch {
	case errors.Is(err, ErrNothingToReveal):
		s.cfg.OnReveal("nothing")
		writeError(w, http.StatusNotFound, "nothing_to_reveal", "no key is waiting to be picked up: it was already revealed, it expired, or none was made yet")
		return
	case errors.Is(err, ErrSealedUnderAnotherKey):
		s.cfg.OnReveal("error")
		s.cfg.Logger.Error("reveal failed: the key is sealed under another sealing key", "component", "http", "user_id", userID, "error", err)
		writeError(w, http.StatusInternalServerError, "sealed_under_another_key", "the key waiting for you was sealed under another sealing key than this server's, so it cannot be opened here and retrying will not help; nothing was lost: the operator must run keyworker with that key")
		return
	case err != nil:
		s.cfg.OnReveal("error")
		s.cfg.Logger.Error("reveal failed", "component", "http", "user_id", userID, "error", err)
		writeError(w, http.StatusInternalServerError, "internal", "the key could not be revealed; nothing was lost, try again")
		return
	}
	s.cfg.OnReveal("revealed")
	s.cfg.Logger.Info("key revealed", "component", "http", "user_id", userID, "key_id", rev.KeyID, "last4", rev.Last4)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(rev)
}

type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Error: msg, Code: code})
}
