package server

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
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
	// DefaultRevealPerAddr is how many reveal requests one client address may
	// make per minute, authenticated or not.
	DefaultRevealPerAddr = 30
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

// Revealed is a key taken for its one pick-up.
type Revealed struct {
	Key       string     `json:"key"`
	KeyID     string     `json:"key_id"`
	Prefix    string     `json:"prefix"`
	Last4     string     `json:"last4"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at"`
}

// LogValue keeps the key out of logs.
func (r Revealed) LogValue() slog.Value {
	return slog.GroupValue(slog.String("key_id", r.KeyID), slog.String("last4", r.Last4))
}

// TokenFunc verifies a bearer token and returns the user id it names.
type TokenFunc func(ctx context.Context, token string) (userID string, err error)

// RevealFunc atomically takes the user's waiting key; ErrNothingToReveal when
// there is none. remoteAddr is for the audit trail.
type RevealFunc func(ctx context.Context, userID, remoteAddr string) (Revealed, error)

// Config configures the server.
type Config struct {
	// Addr is the listen address. Defaults to DefaultAddr.
	Addr string
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
	// RevealPerUser and RevealPerAddr are per-minute limits. Defaults to
	// DefaultRevealPerUser and DefaultRevealPerAddr.
	RevealPerUser, RevealPerAddr int
	// TrustForwardedFor takes the client address from X-Forwarded-For's
	// last hop (set it only behind a proxy you run). Defaults to false.
	TrustForwardedFor bool
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
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.RevealPerUser == 0 {
		c.RevealPerUser = DefaultRevealPerUser
	}
	if c.RevealPerAddr == 0 {
		c.RevealPerAddr = DefaultRevealPerAddr
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
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
		return fmt.Errorf("HTTP address %q is invalid: want host:port, e.g. %q: %w", c.Addr, DefaultAddr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("HTTP address %q has an invalid port", c.Addr)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("TLS needs both a certificate file and a key file (KEYWORKER_TLS_CERT_FILE and KEYWORKER_TLS_KEY_FILE)")
	}
	if c.Dashboard != nil && !c.dashboardProtected() && !IsLoopback(host) {
		return fmt.Errorf("refusing to serve the dashboard on non-loopback address %s without credentials: set KEYWORKER_DASHBOARD_USER and KEYWORKER_DASHBOARD_PASSWORD (or KEYWORKER_DASHBOARD_TOKEN), or listen on 127.0.0.1", c.Addr)
	}
	if (c.DashboardUser == "") != (c.DashboardPassword == "") {
		return errors.New("dashboard credentials need both KEYWORKER_DASHBOARD_USER and KEYWORKER_DASHBOARD_PASSWORD")
	}
	if c.RevealPerUser < 0 || c.RevealPerAddr < 0 {
		return errors.New("reveal rate limits must be positive")
	}
	return nil
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
	cfg      Config
	handler  http.Handler
	userRate *limiter
	addrRate *limiter

	mu       sync.Mutex
	srv      *http.Server
	ln       net.Listener
	done     chan struct{}
	serveErr error
	stopped  bool
}

// New validates cfg and builds the server; nothing listens until Start.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		userRate: newLimiter(cfg.RevealPerUser, time.Minute),
		addrRate: newLimiter(cfg.RevealPerAddr, time.Minute),
	}
	s.handler = s.routes()
	return s, nil
}

// Handler is the server's routing, for tests and embedding.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", s.readyz)
	if s.cfg.Metrics != nil {
		mux.Handle("/metrics", s.cfg.Metrics)
	}
	if s.cfg.Dashboard != nil {
		protected := s.dashboardAuth(s.cfg.Dashboard)
		mux.Handle("/riverui/", protected)
		mux.Handle("/riverui", http.RedirectHandler("/riverui/", http.StatusMovedPermanently))
	}
	mux.HandleFunc("/v1/keys/reveal", s.reveal)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			writeError(w, http.StatusNotFound, "not_found", "no such endpoint: try POST /v1/keys/reveal, /riverui/, /metrics, /healthz or /readyz")
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("keyworker: POST /v1/keys/reveal, /riverui/ (dashboard), /metrics, /healthz, /readyz\n"))
	})
	return mux
}

// Start listens and serves in the background. It fails fast when the
// address is taken or TLS files are unreadable.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("starting HTTP server: it was stopped")
	}
	if s.srv != nil {
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
		return fmt.Errorf("listening on %s (KEYWORKER_HTTP_ADDR): %w", s.cfg.Addr, err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	s.done = make(chan struct{})
	srv, done := s.srv, s.done
	go func() {
		err := srv.Serve(ln)
		s.mu.Lock()
		if !errors.Is(err, http.ErrServerClosed) {
			s.serveErr = err
		}
		s.mu.Unlock()
		close(done)
	}()
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	s.cfg.Logger.Info("http server listening", "component", "http", "addr", ln.Addr().String(), "scheme", scheme, "dashboard", s.cfg.Dashboard != nil)
	return nil
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

// Done is closed when the server stops serving; Err then says why.
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
	srv, done := s.srv, s.done
	s.mu.Unlock()
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
	}
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

func (s *Server) dashboardAuth(next http.Handler) http.Handler {
	if !s.cfg.dashboardProtected() {
		return next // only reachable on loopback: validate refused otherwise
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.DashboardToken != "" {
			if tok, ok := bearer(r); ok && subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.DashboardToken)) == 1 {
				next.ServeHTTP(w, r)
				return
			}
		}
		if s.cfg.DashboardPassword != "" {
			user, pass, ok := r.BasicAuth()
			userOK := subtle.ConstantTimeCompare([]byte(user), []byte(s.cfg.DashboardUser)) == 1
			passOK := subtle.ConstantTimeCompare([]byte(pass), []byte(s.cfg.DashboardPassword)) == 1
			if ok && userOK && passOK {
				next.ServeHTTP(w, r)
				return
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="keyworker dashboard", charset="UTF-8"`)
		}
		writeError(w, http.StatusUnauthorized, "unauthorized", "the dashboard needs the credentials from KEYWORKER_DASHBOARD_USER/KEYWORKER_DASHBOARD_PASSWORD")
	})
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

func (s *Server) clientAddr(r *http.Request) string {
	if s.cfg.TrustForwardedFor {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			parts := strings.Split(xff, ",")
			return strings.TrimSpace(parts[len(parts)-1])
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *Server) reveal(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
		return
	}
	addr := s.clientAddr(r)
	if ok, retry := s.addrRate.allow(addr); !ok {
		s.cfg.OnReveal("rate_limited")
		w.Header().Set("Retry-After", strconv.Itoa(int(retry.Seconds()+0.999)))
		writeError(w, http.StatusTooManyRequests, "rate_limited", "too many reveal requests from this address; try again later")
		return
	}
	if s.cfg.VerifyToken == nil || s.cfg.Reveal == nil {
		s.cfg.OnReveal("error")
		writeError(w, http.StatusServiceUnavailable, "reveal_disabled", "key pick-up is not configured: set KEYWORKER_JWT_SECRET or KEYWORKER_JWKS_URL")
		return
	}
	tok, ok := bearer(r)
	if !ok {
		s.cfg.OnReveal("unauthorized")
		w.Header().Set("WWW-Authenticate", `Bearer realm="keyworker"`)
		writeError(w, http.StatusUnauthorized, "missing_token", "send your Supabase access token as Authorization: Bearer <token>")
		return
	}
	userID, err := s.cfg.VerifyToken(r.Context(), tok)
	if err != nil {
		s.cfg.OnReveal("unauthorized")
		code, msg := "invalid_token", "the access token was rejected: "+err.Error()
		if errors.Is(err, ErrTokenExpired) {
			code, msg = "token_expired", "the access token has expired: refresh the session and try again"
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="keyworker", error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, code, msg)
		return
	}
	if ok, retry := s.userRate.allow("user:" + userID); !ok {
		s.cfg.OnReveal("rate_limited")
		w.Header().Set("Retry-After", strconv.Itoa(int(retry.Seconds()+0.999)))
		writeError(w, http.StatusTooManyRequests, "rate_limited", "too many reveal requests for this user; try again later")
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

// limiter allows n events per window per key (a sliding log would be more
// exact; fixed windows are enough for abuse control).
type limiter struct {
	n      int
	window time.Duration
	now    func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	start time.Time
	count int
}

func newLimiter(n int, window time.Duration) *limiter {
	return &limiter{n: n, window: window, now: time.Now, buckets: map[string]*bucket{}}
}

func (l *limiter) allow(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if len(l.buckets) > 100_000 {
		for k, b := range l.buckets {
			if now.Sub(b.start) >= l.window {
				delete(l.buckets, k)
			}
		}
	}
	b, ok := l.buckets[key]
	if !ok || now.Sub(b.start) >= l.window {
		l.buckets[key] = &bucket{start: now, count: 1}
		return true, 0
	}
	if b.count >= l.n {
		return false, b.start.Add(l.window).Sub(now)
	}
	b.count++
	return true, 0
}
