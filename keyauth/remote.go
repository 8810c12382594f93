package keyauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/keyworker/keyworker/keys"
)

// Defaults and bounds of Remote.
const (
	// DefaultRemoteTimeout is how long one check may take (connecting,
	// sending, keyworker's answer) unless WithTimeout says otherwise.
	DefaultRemoteTimeout = 3 * time.Second

	minRemoteTimeout = 10 * time.Millisecond
	maxRemoteTimeout = time.Minute
	maxAnswerBytes   = 64 << 10
	// VerifyPath is keyworker's verify endpoint, under the base URL.
	VerifyPath = "/v1/keys/verify"
)

// RemoteOption configures Remote.
type RemoteOption func(*remoteConfig)

type remoteConfig struct {
	client  *http.Client
	timeout time.Duration
}

// WithHTTPClient makes Remote send its requests with c (its Transport:
// proxies, TLS roots, connection pool). Remote uses a copy that follows no
// redirect, so the service token is only ever sent to baseURL. Defaults to
// a client on http.DefaultTransport.
func WithHTTPClient(c *http.Client) RemoteOption {
	return func(rc *remoteConfig) { rc.client = c }
}

// WithTimeout bounds each check, between 10ms and 1m; the caller's context
// can make it shorter. Defaults to DefaultRemoteTimeout (3s).
func WithTimeout(d time.Duration) RemoteOption {
	return func(rc *remoteConfig) { rc.timeout = d }
}

// Remote returns a Checker that asks keyworker: POST <baseURL>/v1/keys/verify
// with {"key": ...} and Authorization: Bearer <serviceToken>, a token from
// keyworker's verify tokens (never an end user's access token). baseURL is
// keyworker's address, http or https, optionally with a path prefix (a
// reverse proxy's); use https unless keyworker is on the same host or a
// private network, since the key and the token travel in the request.
//
// A string that is not a well-formed key (keys.Parse: shape and checksum) is
// not_found without a request. Every other check is one request under the
// timeout (WithTimeout). An answer that is not a verify result is an error
// wrapping a *RemoteError: keyworker refusing the token (401), verify
// turned off (503 verify_disabled), keyworker failing (5xx), a redirect
// (not followed), or anything else. Errors name the key by its id only, and
// never contain the key or the service token.
//
// The Checker is safe for concurrent use. Remote's error is for a bad
// baseURL, token or option.
func Remote(baseURL, serviceToken string, opts ...RemoteOption) (Checker, error) {
	rc := remoteConfig{timeout: DefaultRemoteTimeout}
	for _, o := range opts {
		o(&rc)
	}
	endpoint, err := verifyURL(baseURL)
	if err != nil {
		return nil, err
	}
	if serviceToken == "" {
		return nil, errors.New("keyauth.Remote: the service token is empty: pass one of keyworker's verify tokens")
	}
	if strings.TrimSpace(serviceToken) != serviceToken || strings.ContainsFunc(serviceToken, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}) {
		return nil, errors.New("keyauth.Remote: the service token contains spaces or control characters (a stray newline from a file?): pass the token alone")
	}
	if rc.timeout < minRemoteTimeout || rc.timeout > maxRemoteTimeout {
		return nil, fmt.Errorf("keyauth.Remote: WithTimeout must be between %s and %s, got %s", minRemoteTimeout, maxRemoteTimeout, rc.timeout)
	}
	client := &http.Client{}
	if rc.client != nil {
		c := *rc.client
		client = &c
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &remoteChecker{client: client, endpoint: endpoint, auth: "Bearer " + serviceToken, token: serviceToken, timeout: rc.timeout}, nil
}

func verifyURL(baseURL string) (string, error) {
	if !strings.Contains(baseURL, "://") && baseURL != "" && !strings.Contains(baseURL, "@") {
		return "", fmt.Errorf("keyauth.Remote: baseURL %q has no scheme: give keyworker's address with it, like http://%s or https://%s", baseURL, baseURL, baseURL)
	}
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("keyauth.Remote: baseURL must be keyworker's http or https address, like https://keys.example.com, got %q", redactURL(baseURL))
	}
	if u.User != nil {
		return "", errors.New("keyauth.Remote: baseURL must not carry credentials: the service token is the second argument")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("keyauth.Remote: baseURL must have no query or fragment, got %q", redactURL(baseURL))
	}
	u.Path = strings.TrimRight(u.Path, "/") + VerifyPath
	u.RawPath = ""
	return u.String(), nil
}

// redactURL drops what could be a credential (user info, query) from a URL
// for an error message.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable)"
	}
	if u.User != nil {
		u.User = url.User("xxxxx")
	}
	if u.RawQuery != "" {
		u.RawQuery = "…"
	}
	return u.String()
}

type remoteChecker struct {
	client   *http.Client
	endpoint string
	auth     string
	token    string
	timeout  time.Duration
}

// verifyAnswer is the body of keyworker's 200 answer.
type verifyAnswer struct {
	Valid  *bool  `json:"valid"`
	Status string `json:"status"`
	UserID string `json:"user_id"`
	KeyID  string `json:"key_id"`
}

// errorAnswer is keyworker's error shape.
type errorAnswer struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func (c *remoteChecker) Check(ctx context.Context, key string) (Result, error) {
	p, err := keys.Parse(key)
	if err != nil {
		return Result{Status: keys.StatusNotFound}, nil
	}
	r, err := c.check(ctx, p)
	if err != nil {
		return Result{}, fmt.Errorf("checking key %s: %w", p.ID(), err)
	}
	return r, nil
}

func (c *remoteChecker) check(ctx context.Context, p keys.Parsed) (Result, error) {
	body, err := json.Marshal(map[string]string{"key": p.Plaintext()})
	if err != nil {
		return Result{}, err
	}
	tctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(tctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return Result{}, fmt.Errorf("building the request to %s: %w", c.endpoint, err)
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "keyworker-keyauth")
	resp, err := c.client.Do(req)
	if err != nil {
		return Result{}, c.transportError(ctx, tctx, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return Result{}, c.transportError(ctx, tctx, fmt.Errorf("reading keyworker's answer (%d): %w", resp.StatusCode, err))
	}
	if resp.StatusCode != http.StatusOK {
		return Result{}, c.remoteError(resp, raw, p)
	}
	var a verifyAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		return Result{}, fmt.Errorf("decoding keyworker's answer from %s: %w", c.endpoint, err)
	}
	r, err := result(p, a.Status, a.UserID, a.KeyID)
	if err != nil {
		return Result{}, fmt.Errorf("keyworker's answer from %s: %w", c.endpoint, err)
	}
	if a.Valid == nil || *a.Valid != r.Valid() {
		return Result{}, fmt.Errorf("keyworker's answer from %s: \"valid\" is missing or disagrees with status %s", c.endpoint, r.Status)
	}
	return r, nil
}

// transportError names a timeout as one; ctx is the caller's, tctx the
// one under c.timeout.
func (c *remoteChecker) transportError(ctx, tctx context.Context, err error) error {
	if ctx.Err() == nil && errors.Is(tctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("calling keyworker at %s timed out after %s: %w", c.endpoint, c.timeout, context.DeadlineExceeded)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // its message repeats the method and URL
	}
	return fmt.Errorf("calling keyworker at %s: %w", c.endpoint, err)
}

func (c *remoteChecker) remoteError(resp *http.Response, raw []byte, p keys.Parsed) error {
	e := &RemoteError{StatusCode: resp.StatusCode, URL: c.endpoint}
	var a errorAnswer
	if json.Unmarshal(raw, &a) == nil {
		if quoteCode(a.Code) != "(not a code)" {
			e.Code = a.Code
		}
		e.Message = clean(a.Error, p.Plaintext(), c.token)
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		e.Location = redactURL(resp.Header.Get("Location"))
	}
	return e
}

// clean makes a message from keyworker safe to repeat: no key, no token,
// no control characters, at most 200 bytes.
func clean(msg string, secrets ...string) string {
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
		}
	}
	msg = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, msg)
	if len(msg) > 200 {
		msg = strings.ToValidUTF8(msg[:200], "") + "…"
	}
	return msg
}

// RemoteError is an answer from keyworker's verify endpoint that is not a
// verify result. Remote's errors wrap it: errors.As finds it.
type RemoteError struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Code is the "code" of keyworker's error body, such as
	// "invalid_service_token" or "verify_disabled"; empty when the body
	// had none (a proxy's page, say).
	Code string
	// Message is the "error" of keyworker's error body, without the key or
	// the service token.
	Message string
	// URL is the endpoint called.
	URL string
	// Location is a redirect's target (redirects are not followed).
	Location string
}

// Error says what keyworker answered and what to do about it.
func (e *RemoteError) Error() string {
	what := fmt.Sprintf("%d", e.StatusCode)
	if e.Code != "" {
		what += " " + e.Code
	}
	if e.Message != "" {
		what += ": " + e.Message
	}
	switch {
	case e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden:
		return fmt.Sprintf("keyworker at %s refused the service token (%s): pass keyauth.Remote one of keyworker's verify tokens, not an end user's access token", e.URL, what)
	case e.StatusCode == http.StatusServiceUnavailable && e.Code == "verify_disabled":
		return fmt.Sprintf("keyworker at %s has key verification turned off (%s): configure a verify token on keyworker and pass the same token to keyauth.Remote", e.URL, what)
	case e.StatusCode >= 500:
		return fmt.Sprintf("keyworker at %s failed to check the key (%s)", e.URL, what)
	case e.StatusCode >= 300 && e.StatusCode < 400:
		return fmt.Sprintf("keyworker at %s answered with a redirect (%s) to %s, which keyauth does not follow: give keyauth.Remote the final address", e.URL, what, e.Location)
	case e.StatusCode == http.StatusNotFound || e.StatusCode == http.StatusMethodNotAllowed:
		return fmt.Sprintf("%s has no verify endpoint (%s): is the base URL keyworker's address, and keyworker new enough?", e.URL, what)
	}
	return fmt.Sprintf("keyworker at %s did not check the key (%s)", e.URL, what)
}
