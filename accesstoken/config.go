package accesstoken

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults and bounds for Config.
const (
	// DefaultAudience is the aud claim Supabase Auth puts in every signed-in
	// user's access token.
	DefaultAudience = "authenticated"
	// DefaultLeeway is the clock skew tolerated on exp, nbf and iat.
	DefaultLeeway = 30 * time.Second
	// DefaultJWKSRefresh is how long a fetched key set is used before it is
	// fetched again. Supabase's edge caches the endpoint for 10 minutes too.
	DefaultJWKSRefresh = 10 * time.Minute
	// DefaultJWKSTimeout bounds one fetch of the key set.
	DefaultJWKSTimeout = 5 * time.Second

	// MinJWKSRefetchInterval is the least time between two fetches of the key
	// set, whatever triggers them (an unknown kid, a stale set). It keeps a
	// stream of tokens with made-up kids from turning into a stream of
	// requests to Supabase.
	MinJWKSRefetchInterval = 30 * time.Second

	// MinJWTSecretLen is the shortest HS256 secret accepted. Supabase refuses
	// JWT secrets shorter than 32 characters.
	MinJWTSecretLen = 32
	// MaxLeeway bounds Config.Leeway.
	MaxLeeway = 5 * time.Minute
	// MaxJWKSRefresh bounds Config.JWKSRefresh.
	MaxJWKSRefresh = 24 * time.Hour
	// MaxJWKSTimeout bounds Config.JWKSTimeout.
	MaxJWKSTimeout = time.Minute

	// DefaultJWKSMaxStaleness is how long after the last successful fetch a
	// key set is still used while refreshing it fails.
	DefaultJWKSMaxStaleness = time.Hour
	// MaxJWKSMaxStaleness bounds Config.JWKSMaxStaleness.
	MaxJWKSMaxStaleness = 7 * 24 * time.Hour

	// jwksPathSuffix is the path Supabase Auth serves its key set at, below
	// the issuer URL.
	jwksPathSuffix = "/.well-known/jwks.json"
)

// Config configures a Verifier. The zero value is not usable: at least one of
// JWTSecret and JWKSURL must be set. Both may be set, which is the state of a
// Supabase project migrating from the legacy JWT secret to signing keys:
// HS256 tokens are then checked with the secret and RS256/ES256 tokens with the
// key set.
type Config struct {
	// JWTSecret is the Supabase project's legacy "JWT secret", used as the
	// HS256 key exactly as Supabase Auth uses it: the bytes of the string as
	// shown in the dashboard, not base64-decoded. When empty, HS256 tokens are
	// rejected. Must be at least MinJWTSecretLen bytes when set.
	JWTSecret []byte

	// JWKSURL is the Supabase signing keys discovery endpoint,
	// https://<project>.supabase.co/auth/v1/.well-known/jwks.json. RSA (RS256)
	// and EC P-256 (ES256) keys are used; other keys are skipped. It must be
	// https, except on a loopback host (a local `supabase start` serves
	// http://127.0.0.1:54321). When empty, RS256 and ES256 tokens are rejected.
	JWKSURL string

	// Audience must be one of the token's aud values. Defaults to
	// DefaultAudience ("authenticated").
	Audience string

	// Issuer must equal the token's iss claim exactly, for every algorithm;
	// for Supabase it is https://<project>.supabase.co/auth/v1. When empty
	// and JWKSURL is set, it is derived from JWKSURL by dropping
	// "/.well-known/jwks.json" (a JWKS URL that does not end so needs Issuer
	// set). When empty with only a JWTSecret, iss is not checked: the secret
	// alone decides. Defaults to the issuer derived from JWKSURL, or "" (not
	// checked) without one.
	Issuer string

	// Leeway is the clock skew tolerated when checking exp, nbf and iat. Must
	// be between 0 and MaxLeeway; zero means the default, so use
	// time.Nanosecond for practically none. Defaults to DefaultLeeway (30s).
	Leeway time.Duration

	// JWKSRefresh is how long a fetched key set is trusted before it is
	// fetched again. Independently, a token naming an unknown kid triggers a
	// fetch, at most once per MinJWKSRefetchInterval. Must be between
	// MinJWKSRefetchInterval and MaxJWKSRefresh. Defaults to
	// DefaultJWKSRefresh (10m).
	JWKSRefresh time.Duration

	// JWKSTimeout bounds one fetch of the key set. Must be between 0
	// (exclusive) and MaxJWKSTimeout. Defaults to DefaultJWKSTimeout (5s).
	JWKSTimeout time.Duration

	// JWKSMaxStaleness is how long after its last successful fetch the key
	// set is still trusted while refreshing it fails. Past it, RS256 and
	// ES256 tokens are refused with ErrJWKSUnavailable (HS256 tokens do not
	// depend on the set) until a fetch succeeds again: a revoked key must not
	// verify forever because Supabase cannot be reached. Must be between
	// JWKSRefresh and MaxJWKSMaxStaleness. Defaults to
	// DefaultJWKSMaxStaleness (1h).
	JWKSMaxStaleness time.Duration

	// HTTPClient fetches the key set. Defaults to a client that does not
	// follow redirects.
	HTTPClient *http.Client

	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

// withDefaults returns a copy of c with every unset field filled in.
func (c Config) withDefaults() Config {
	c.Audience = cmp.Or(c.Audience, DefaultAudience)
	c.Leeway = cmp.Or(c.Leeway, DefaultLeeway)
	c.JWKSRefresh = cmp.Or(c.JWKSRefresh, DefaultJWKSRefresh)
	c.JWKSTimeout = cmp.Or(c.JWKSTimeout, DefaultJWKSTimeout)
	c.JWKSMaxStaleness = cmp.Or(c.JWKSMaxStaleness, DefaultJWKSMaxStaleness)
	if c.Issuer == "" && c.JWKSURL != "" {
		// Left empty when the URL does not end in the well-known path;
		// validate then asks for Issuer.
		c.Issuer = issuerFromJWKSURL(c.JWKSURL)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{
			// The endpoint does not redirect; following one could leave
			// https or the project's host.
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.JWTSecret = append([]byte(nil), c.JWTSecret...)
	return c
}

// validate reports the first setting that is missing or out of bounds. It
// expects a Config returned by withDefaults. Messages name the Config field
// at fault; a program that reads settings from elsewhere (cmd/worker's
// environment variables) translates the field names for its users.
func (c Config) validate() error {
	if len(c.JWTSecret) == 0 && c.JWKSURL == "" {
		return errors.New("one of JWTSecret or JWKSURL is required to verify Supabase access tokens")
	}
	if n := len(c.JWTSecret); n > 0 && n < MinJWTSecretLen {
		return fmt.Errorf("JWTSecret must be at least %d bytes, got %d", MinJWTSecretLen, n)
	}
	if c.JWKSURL != "" {
		if err := validateJWKSURL(c.JWKSURL); err != nil {
			return err
		}
		if c.Issuer == "" {
			return fmt.Errorf("Issuer is required: it cannot be derived from JWKSURL %q, which does not end in %q; set it to the iss claim of your tokens, https://<project>.supabase.co/auth/v1 for Supabase", c.JWKSURL, jwksPathSuffix)
		}
	}
	if c.Leeway < 0 || c.Leeway > MaxLeeway {
		return fmt.Errorf("Leeway must be between 0s and %s, got %s", MaxLeeway, c.Leeway)
	}
	if c.JWKSRefresh < MinJWKSRefetchInterval || c.JWKSRefresh > MaxJWKSRefresh {
		return fmt.Errorf("JWKSRefresh must be between %s and %s, got %s", MinJWKSRefetchInterval, MaxJWKSRefresh, c.JWKSRefresh)
	}
	if c.JWKSTimeout <= 0 || c.JWKSTimeout > MaxJWKSTimeout {
		return fmt.Errorf("JWKSTimeout must be between 0s (exclusive) and %s, got %s", MaxJWKSTimeout, c.JWKSTimeout)
	}
	if c.JWKSMaxStaleness < c.JWKSRefresh || c.JWKSMaxStaleness > MaxJWKSMaxStaleness {
		return fmt.Errorf("JWKSMaxStaleness must be between the JWKS refresh interval (JWKSRefresh, %s) and %s, got %s", c.JWKSRefresh, MaxJWKSMaxStaleness, c.JWKSMaxStaleness)
	}
	return nil
}

// issuerFromJWKSURL returns the issuer Supabase Auth puts in the tokens it
// signs with the keys published at jwksURL: the URL without
// "/.well-known/jwks.json" (https://<project>.supabase.co/auth/v1). It returns
// "" when jwksURL does not end in that path, or has a query or fragment.
func issuerFromJWKSURL(jwksURL string) string {
	u, err := url.Parse(jwksURL)
	if err != nil || u.RawQuery != "" || u.Fragment != "" || !strings.HasSuffix(u.Path, jwksPathSuffix) {
		return ""
	}
	u.Path = strings.TrimSuffix(u.Path, jwksPathSuffix)
	u.RawPath = ""
	return u.String()
}

func validateJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the URL; a JWKS URL carries no secret.
		return fmt.Errorf("JWKSURL is not a URL: %w", err)
	}
	if u.Host == "" {
		return fmt.Errorf("JWKSURL must be an absolute https URL such as https://<project>.supabase.co/auth/v1/.well-known/jwks.json, got %q", raw)
	}
	if u.User != nil {
		return errors.New("JWKSURL must not carry credentials")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return fmt.Errorf("JWKSURL must use https (http is accepted only for a loopback host), got %q", raw)
		}
	default:
		return fmt.Errorf("JWKSURL must use https, got scheme %q", u.Scheme)
	}
	return nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
