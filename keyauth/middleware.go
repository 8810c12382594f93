package keyauth

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Defaults and bounds of Options.
const (
	// DefaultRealm is Options.Realm's default.
	DefaultRealm = "api"
	// DefaultCacheSize is Options.CacheSize's default.
	DefaultCacheSize = 10000
	// MaxCacheTTL is the longest Options.CacheTTL.
	MaxCacheTTL = 5 * time.Minute

	maxCacheSize = 1 << 20
)

// The answers of the middleware. One body for every refused key, whatever
// the reason, so that a caller learns nothing about a key it does not hold.
const (
	unauthorizedBody = `{"error":"a valid API key is required","code":"invalid_api_key"}` + "\n"
	unavailableBody  = `{"error":"the API key could not be checked, try again later","code":"key_check_unavailable"}` + "\n"
)

// Options configures Middleware. The zero Options is usable: Bearer keys
// only, realm "api", no cache.
type Options struct {
	// Realm is the realm of the WWW-Authenticate challenge. Defaults to
	// DefaultRealm ("api").
	Realm string

	// APIKeyHeader, when set (e.g. "X-API-Key"), is a header that may carry
	// the key instead of Authorization: Bearer. A Bearer credential wins
	// when both are sent. Defaults to none: Authorization only.
	APIKeyHeader string

	// CacheTTL, when positive, keeps a valid result for that long, at most
	// MaxCacheTTL (5m), so that a key used again is not checked again. Only
	// valid results are kept, under the SHA-256 of the key (never the key);
	// refusals and errors always go to the Checker.
	//
	// The cost is staleness, bounded by CacheTTL: a key revoked, disabled or
	// expired at time T may still be accepted by requests until T+CacheTTL,
	// and by none after (with the app's clock and the database's in
	// agreement). Each process has its own cache. Defaults to 0: no cache,
	// every request is checked.
	CacheTTL time.Duration

	// CacheSize bounds the cache's entries (one per distinct valid key);
	// when it is full an entry is dropped to make room. Ignored without
	// CacheTTL. Defaults to DefaultCacheSize (10000).
	CacheSize int

	// Logger receives a line for each check that failed (the answer is then
	// 503); it never sees a key. Defaults to slog.Default().
	Logger *slog.Logger

	// Now is the cache's clock. Defaults to time.Now.
	Now func() time.Time
}

// Validate reports the first field of o that Middleware would refuse, by
// name and bound.
func (o Options) Validate() error {
	switch {
	case strings.ContainsFunc(o.Realm, func(r rune) bool { return r == '"' || r == '\\' || r < 0x20 || r == 0x7f }):
		return fmt.Errorf("keyauth: Options.Realm must not contain quotes, backslashes or control characters, got %q", o.Realm)
	case o.APIKeyHeader != "" && !isToken(o.APIKeyHeader):
		return fmt.Errorf("keyauth: Options.APIKeyHeader must be a header name such as X-API-Key, got %q", o.APIKeyHeader)
	case strings.EqualFold(o.APIKeyHeader, "Authorization"):
		return errors.New("keyauth: Options.APIKeyHeader must not be Authorization, which is always read (as Bearer): leave it empty")
	case o.CacheTTL < 0 || o.CacheTTL > MaxCacheTTL:
		return fmt.Errorf("keyauth: Options.CacheTTL must be between 0 (no cache) and %s, got %s", MaxCacheTTL, o.CacheTTL)
	case o.CacheSize < 0 || o.CacheSize > maxCacheSize:
		return fmt.Errorf("keyauth: Options.CacheSize must be between 0 (the default, %d) and %d, got %d", DefaultCacheSize, maxCacheSize, o.CacheSize)
	}
	return nil
}

func (o Options) withDefaults() Options {
	o.Realm = cmp.Or(o.Realm, DefaultRealm)
	o.CacheSize = cmp.Or(o.CacheSize, DefaultCacheSize)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// isToken reports whether s is an HTTP token (RFC 9110), as header names are.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}

// Middleware returns middleware that lets a request through only with a
// valid key, checked by c:
//
//   - the key is read from Authorization: Bearer <key> (the scheme in any
//     case), or from Options.APIKeyHeader when set;
//   - no key: 401 with WWW-Authenticate: Bearer realm="<Realm>";
//   - a key that is malformed, unknown, wrong, revoked, expired or disabled,
//     or a credential of another scheme: 401 with WWW-Authenticate: Bearer
//     realm="<Realm>", error="invalid_token", and the same body for all:
//     {"error":"a valid API key is required","code":"invalid_api_key"};
//   - the Checker failing: 503 {"error":"...","code":"key_check_unavailable"}
//     and a log line (not for a request its client gave up on);
//   - a valid key: the next handler, with the key's user id and key id in
//     the request's context (UserID, KeyID).
//
// Answers of the middleware are JSON with Cache-Control: no-store. It
// panics when o is invalid (Options.Validate says why), as http.ServeMux
// does on a bad pattern: that is a programming error found at startup.
func Middleware(c Checker, o Options) func(http.Handler) http.Handler {
	if c == nil {
		panic("keyauth: Middleware needs a Checker (keyauth.Postgres or keyauth.Remote)")
	}
	if err := o.Validate(); err != nil {
		panic(err.Error())
	}
	o = o.withDefaults()
	if o.CacheTTL > 0 {
		c = newCachedChecker(c, o.CacheTTL, o.CacheSize, o.Now)
	}
	m := &middleware{
		checker:   c,
		header:    o.APIKeyHeader,
		log:       o.Logger.With("component", "keyauth"),
		challenge: `Bearer realm="` + o.Realm + `"`,
		invalid:   `Bearer realm="` + o.Realm + `", error="invalid_token"`,
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { m.serve(w, r, next) })
	}
}

type middleware struct {
	checker            Checker
	header             string
	log                *slog.Logger
	challenge, invalid string
}

func (m *middleware) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	key, sent := m.credential(r)
	if key == "" {
		challenge := m.challenge
		if sent {
			challenge = m.invalid
		}
		answer(w, http.StatusUnauthorized, challenge, unauthorizedBody)
		return
	}
	res, err := m.checker.Check(r.Context(), key)
	if err != nil {
		if r.Context().Err() == nil {
			m.log.ErrorContext(r.Context(), "checking API key failed", "error", err.Error(), "method", r.Method, "path", r.URL.Path)
		}
		answer(w, http.StatusServiceUnavailable, "", unavailableBody)
		return
	}
	if !res.Valid() {
		answer(w, http.StatusUnauthorized, m.invalid, unauthorizedBody)
		return
	}
	next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), resultKey{}, res)))
}

// credential returns the presented key, or "" with sent=true when a
// credential came that carries no usable key (another scheme, an empty
// Bearer, two Authorization headers).
func (m *middleware) credential(r *http.Request) (key string, sent bool) {
	auth := r.Header.Values("Authorization")
	if len(auth) == 1 {
		if scheme, rest, ok := strings.Cut(auth[0], " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.Trim(rest, " \t"), true
		}
	}
	if m.header != "" {
		if v := r.Header.Values(m.header); len(v) > 0 {
			if len(v) > 1 {
				return "", true
			}
			return strings.Trim(v[0], " \t"), true
		}
	}
	return "", len(auth) > 0
}

func answer(w http.ResponseWriter, code int, challenge, body string) {
	h := w.Header()
	if challenge != "" {
		h.Set("WWW-Authenticate", challenge)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

type resultKey struct{}

// UserID returns the user id of the valid key the request carried, and
// false when ctx did not come through Middleware.
func UserID(ctx context.Context) (string, bool) {
	r, ok := ctx.Value(resultKey{}).(Result)
	return r.UserID, ok && r.Valid()
}

// KeyID returns the id of the valid key the request carried (a KSUID, which
// may be logged), and false when ctx did not come through Middleware.
func KeyID(ctx context.Context) (string, bool) {
	r, ok := ctx.Value(resultKey{}).(Result)
	return r.KeyID, ok && r.Valid()
}
