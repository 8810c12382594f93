package notify

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const (
	// WebhookEventType is the "type" of a created notice's payload, as in
	// earlier versions: EventCreated. Payloads carry their Notice's Type.
	WebhookEventType = EventCreated

	// DefaultWebhookTimeout is WebhookConfig.Timeout's default.
	DefaultWebhookTimeout = 10 * time.Second

	// DefaultUserAgent is WebhookConfig.UserAgent's default.
	DefaultUserAgent = "keyworker"

	// MaxRetryAfter caps the Retry-After a webhook may ask for.
	MaxRetryAfter = time.Hour

	// WebhookSecretPrefix starts every webhook secret.
	WebhookSecretPrefix = "whsec_"

	minWebhookTimeout  = time.Millisecond
	maxWebhookTimeout  = 5 * time.Minute
	minSecretBytes     = 24
	maxSecretBytes     = 64
	maxErrorBodyBytes  = 1 << 10
	maxDrainBodyBytes  = 64 << 10
	webhookSecretHowTo = `make one with: echo "whsec_$(openssl rand -base64 32)"`
)

// WebhookConfig configures a Webhook.
type WebhookConfig struct {
	// URL receives the notices as POST requests; https, or http to this
	// machine (a loopback host) unless AllowHTTP. Required.
	URL string

	// AllowHTTP permits an http:// URL to a host other than this machine,
	// where the notices (key id, user id, pick-up link) and their
	// signatures would cross the network unencrypted. Defaults to false:
	// such a URL is refused.
	AllowHTTP bool

	// Secret signs the requests: "whsec_" followed by the base64 of 24 to
	// 64 random bytes, as the Standard Webhooks specification describes.
	// Required.
	Secret string

	// Timeout bounds one delivery attempt, from connecting to reading the
	// status, between 1ms and 5m. Defaults to DefaultWebhookTimeout (10s).
	Timeout time.Duration

	// Client sends the requests. Redirects are never followed (a 3xx is a
	// permanent failure): the Webhook uses a copy of Client with its own
	// CheckRedirect. Defaults to a client on a copy of
	// http.DefaultTransport that keeps up to WebhookIdleConns idle
	// connections to the receiver (http.DefaultTransport keeps 2, so
	// concurrent notices opened and closed a connection each).
	Client *http.Client

	// UserAgent is sent as the User-Agent header. Defaults to
	// DefaultUserAgent ("keyworker").
	UserAgent string
}

// WebhookIdleConns is how many idle connections to the receiver the default
// client keeps: at least as many as notices are sent at once (by default 10
// notice jobs of 32 sends each).
const WebhookIdleConns = 512

// webhookTransport is the default client's transport, shared by every
// Webhook so that connections are reused across jobs.
var webhookTransport = func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = WebhookIdleConns
	t.MaxIdleConnsPerHost = WebhookIdleConns
	return t
}()

func (c WebhookConfig) withDefaults() WebhookConfig {
	c.Timeout = cmp.Or(c.Timeout, DefaultWebhookTimeout)
	c.UserAgent = cmp.Or(c.UserAgent, DefaultUserAgent)
	client := &http.Client{Transport: webhookTransport}
	if c.Client != nil {
		copied := *c.Client
		client = &copied
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.Client = client
	return c
}

func (c WebhookConfig) validate() error {
	if c.URL == "" {
		return errors.New("URL is required: the address that receives the notices, signed with Secret")
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		// url.Error repeats the whole URL, which may carry credentials.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Errorf("URL is not a valid URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("URL must use http or https, got scheme %q", u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return errors.New("URL must have a host")
	}
	if u.Scheme == "http" && !c.AllowHTTP && !IsLoopbackHost(u.Hostname()) {
		return fmt.Errorf("URL is http:// to %s, which is not this machine: the notices (key id, user id, pick-up link) would cross the network unencrypted; use https://, or set AllowHTTP=true to send them in plaintext anyway", u.Hostname())
	}
	if _, err := decodeWebhookSecret(c.Secret); err != nil {
		return fmt.Errorf("Secret %w", err)
	}
	if c.Timeout < minWebhookTimeout || c.Timeout > maxWebhookTimeout {
		return fmt.Errorf("Timeout must be between %s and %s, got %s", minWebhookTimeout, maxWebhookTimeout, c.Timeout)
	}
	if strings.ContainsFunc(c.UserAgent, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return errors.New("UserAgent must not contain control characters")
	}
	return nil
}

// IsLoopbackHost reports whether host (a URL's Hostname) is this machine:
// "localhost" or a loopback address. Other names are not resolved.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// decodeWebhookSecret returns the key bytes of a "whsec_" secret. Its errors
// never repeat the secret and say how to make a good one.
func decodeWebhookSecret(secret string) ([]byte, error) {
	if secret == "" {
		return nil, fmt.Errorf("is required (%s)", webhookSecretHowTo)
	}
	encoded, ok := strings.CutPrefix(secret, WebhookSecretPrefix)
	if !ok {
		return nil, fmt.Errorf("must start with %q (%s)", WebhookSecretPrefix, webhookSecretHowTo)
	}
	key, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return nil, fmt.Errorf("must be %q followed by standard base64 (%s)", WebhookSecretPrefix, webhookSecretHowTo)
	}
	if len(key) < minSecretBytes || len(key) > maxSecretBytes {
		return nil, fmt.Errorf("must decode to between %d and %d bytes, got %d (%s)", minSecretBytes, maxSecretBytes, len(key), webhookSecretHowTo)
	}
	return key, nil
}

// Webhook sends notices as signed HTTP POST requests, following the Standard
// Webhooks specification (https://www.standardwebhooks.com). It is safe for
// concurrent use.
//
// Each request carries the JSON payload
//
//	{"type": "<Notice.Type, e.g. api_key.created>",
//	 "timestamp": "<when the event happened, RFC 3339: the key's created_at
//	               for api_key.created>",
//	 "data": {"key_id", "user_id", "prefix", "last4", "created_at",
//	          "expires_at", ...}}
//
// where data also has, when they apply: "reveal_url" (the POST-only API
// endpoint a backend calls to pick the key up) and "reveal_expires_at" for
// a created key waiting to be picked up, "pickup_url" (the application's
// pick-up page) when configured, "rotated_to" (the new key's id) for
// api_key.rotated, "revoked_at" and "disabled_at".
//
// and the headers webhook-id (the notice's EventID, the same on every retry),
// webhook-timestamp (Unix seconds of this attempt) and webhook-signature
// ("v1," followed by the base64 HMAC-SHA256 of id.timestamp.body under the
// secret's key bytes). The payload is the same bytes on every attempt.
type Webhook struct {
	url       string
	display   string // URL without userinfo, query or fragment, for messages
	key       []byte
	timeout   time.Duration
	client    *http.Client
	userAgent string
}

var _ Sender = (*Webhook)(nil)

// NewWebhook validates cfg and returns a Webhook. Its errors name the field at
// fault and never repeat the secret.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("configuring webhook: %w", err)
	}
	key, _ := decodeWebhookSecret(cfg.Secret) // validated above
	u, _ := url.Parse(cfg.URL)
	display := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	return &Webhook{
		url:       cfg.URL,
		display:   display,
		key:       key,
		timeout:   cfg.Timeout,
		client:    cfg.Client,
		userAgent: cfg.UserAgent,
	}, nil
}

// Name returns "webhook".
func (w *Webhook) Name() string { return "webhook" }

type webhookPayload struct {
	Type      string      `json:"type"`
	Timestamp time.Time   `json:"timestamp"`
	Data      webhookData `json:"data"`
}

// webhookData is everything a receiver learns about a key. It has no field
// for the secret, by construction.
type webhookData struct {
	KeyID           string     `json:"key_id"`
	UserID          string     `json:"user_id"`
	Prefix          string     `json:"prefix"`
	Last4           string     `json:"last4"`
	CreatedAt       time.Time  `json:"created_at"`
	ExpiresAt       *time.Time `json:"expires_at"`
	RevealURL       string     `json:"reveal_url,omitempty"`
	RevealExpiresAt *time.Time `json:"reveal_expires_at,omitempty"`
	PickupURL       string     `json:"pickup_url,omitempty"`
	RotatedTo       string     `json:"rotated_to,omitempty"`
	RevokedAt       *time.Time `json:"revoked_at,omitempty"`
	DisabledAt      *time.Time `json:"disabled_at,omitempty"`
}

func webhookBody(n Notice) ([]byte, error) {
	n = n.normalized()
	data := webhookData{
		KeyID:      n.KeyID,
		UserID:     n.UserID,
		Prefix:     n.Prefix,
		Last4:      n.Last4,
		CreatedAt:  n.CreatedAt.UTC(),
		ExpiresAt:  utcPtr(n.ExpiresAt),
		RotatedTo:  n.RotatedTo,
		RevokedAt:  utcPtr(n.RevokedAt),
		DisabledAt: utcPtr(n.DisabledAt),
	}
	if n.PickUp() {
		t := n.RevealExpiresAt.UTC()
		data.RevealURL, data.RevealExpiresAt, data.PickupURL = n.RevealURL, &t, n.PickupURL
	}
	return json.Marshal(webhookPayload{Type: n.Type, Timestamp: n.OccurredAt.UTC(), Data: data})
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// sign returns the webhook-signature header value for one attempt.
func (w *Webhook) sign(id string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, w.key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(strconv.FormatInt(timestamp, 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Send POSTs n to the webhook once. A 2xx answer is success; 408, 425, 429,
// 5xx, network errors and timeouts give a *RetryableError (with the
// answer's Retry-After, if any); any other answer gives a *PermanentError.
func (w *Webhook) Send(ctx context.Context, n Notice) error {
	if err := n.validate(); err != nil {
		return permanent(fmt.Errorf("webhook %s: %w", w.display, err))
	}
	body, err := webhookBody(n)
	if err != nil {
		return permanent(fmt.Errorf("webhook %s: encoding payload: %w", w.display, err))
	}

	attemptCtx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(attemptCtx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return permanent(fmt.Errorf("webhook %s: building request: %w", w.display, err))
	}
	timestamp := time.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", w.userAgent)
	req.Header.Set("webhook-id", n.EventID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(timestamp, 10))
	req.Header.Set("webhook-signature", w.sign(n.EventID, timestamp, body))

	resp, err := w.client.Do(req)
	if err != nil {
		return w.transportError(ctx, attemptCtx, err)
	}
	defer func() { _ = resp.Body.Close() }()

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		_, _ = io.CopyN(io.Discard, resp.Body, maxDrainBodyBytes) // lets the connection be reused
		return nil
	}

	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes+1))
	msg := fmt.Sprintf("webhook %s answered %s", w.display, statusText(resp.StatusCode))
	if s := cleanText(string(snippet), maxErrorBodyBytes); s != "" {
		msg += ": " + s
	}
	failure := errors.New(msg)

	switch code := resp.StatusCode; {
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly,
		code == http.StatusTooManyRequests, code >= 500:
		return &RetryableError{Err: failure, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	default:
		return permanent(failure)
	}
}

// transportError classifies a failure to get an answer at all: always
// retryable, naming a timeout as one.
func (w *Webhook) transportError(parent, attempt context.Context, err error) error {
	if cause := ctxDone(parent); cause != nil {
		return retryable(fmt.Errorf("posting to webhook %s: %w", w.display, cause))
	}
	// url.Error repeats the full URL, query string included; drop it.
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	if attempt.Err() != nil || isTimeout(err) {
		return retryable(fmt.Errorf("posting to webhook %s timed out after %s: %w", w.display, w.timeout, err))
	}
	return retryable(fmt.Errorf("posting to webhook %s: %w", w.display, err))
}

// ctxDone returns why ctx is done, or nil. A deadline that has passed counts
// even before ctx's timer fires: a connection deadline set from it can
// expire first.
func ctxDone(ctx context.Context) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if deadline, ok := ctx.Deadline(); ok && !time.Now().Before(deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &t) && t.Timeout())
}

func statusText(code int) string {
	if text := http.StatusText(code); text != "" {
		return fmt.Sprintf("%d %s", code, text)
	}
	return strconv.Itoa(code)
}

// parseRetryAfter reads a Retry-After value, delta-seconds or an HTTP-date,
// as a duration from now, capped at MaxRetryAfter. It returns 0 for a
// missing, malformed or past value.
func parseRetryAfter(value string, now time.Time) time.Duration {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(value, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs >= int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if at, err := http.ParseTime(value); err == nil {
		d = at.Sub(now)
	} else {
		return 0
	}
	return min(max(d, 0), MaxRetryAfter)
}
