package notify

import (
	"cmp"
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"net"
	"net/mail"
	"net/url"
	"strings"
	texttemplate "text/template"
	"time"

	"github.com/emersion/go-smtp"
)

const (
	// DefaultSMTPTimeout is SMTPConfig.Timeout's default.
	DefaultSMTPTimeout = 15 * time.Second

	// DefaultSMTPPort is the port of an smtp:// URL without one (submission).
	DefaultSMTPPort = "587"

	// DefaultSMTPSPort is the port of an smtps:// URL without one.
	DefaultSMTPSPort = "465"

	// DefaultHelloName is SMTPConfig.HelloName's default.
	DefaultHelloName = "localhost"

	// EmailSubject is the subject of a created notice's email; Subject
	// gives the others'.
	EmailSubject = "Your API key is ready"

	minSMTPTimeout = time.Millisecond
	maxSMTPTimeout = 5 * time.Minute
)

var (
	//go:embed templates/notice.txt.tmpl
	defaultTextTemplate string

	//go:embed templates/notice.html.tmpl
	defaultHTMLTemplate string
)

// SMTPConfig configures an Email sender.
//
// The URL chooses the transport:
//
//   - smtps://user:pass@host:465 connects with TLS from the first byte
//     (implicit TLS). Port defaults to 465.
//   - smtp://user:pass@host:587 connects in clear and upgrades with STARTTLS,
//     which is required: a server that does not offer it is a permanent
//     failure, so credentials and notices never cross the network in clear.
//     Port defaults to 587.
//   - On a loopback host (localhost, 127.0.0.0/8, ::1), smtp:// uses STARTTLS
//     when the server offers it and goes on in clear when it does not.
//   - ?starttls=off never upgrades, for a trusted plain relay; with
//     credentials it is only accepted on a loopback host.
//     ?starttls=require forces the requirement on a loopback host too.
//
// Credentials in the URL are percent-encoded and sent with AUTH PLAIN, only
// over TLS or to a loopback host.
type SMTPConfig struct {
	// URL names the server, as above. Required.
	URL string

	// From is the sender address, "keys@example.com" or
	// "Example <keys@example.com>". Required.
	From string

	// Timeout bounds one delivery attempt, from connecting to the server's
	// answer to the message, between 1ms and 5m. Defaults to
	// DefaultSMTPTimeout (15s).
	Timeout time.Duration

	// TLSConfig is used for implicit TLS and STARTTLS; its ServerName
	// defaults to the URL's host. Tests set RootCAs to trust a test
	// certificate. Defaults to the system roots and TLS 1.2 or newer.
	TLSConfig *tls.Config

	// HelloName is the name this client gives in EHLO (the one before
	// STARTTLS excepted: go-smtp's client gives "localhost" there). Defaults
	// to DefaultHelloName ("localhost").
	HelloName string

	// TextTemplate is a text/template for the plain-text part, executed on
	// the Notice of every event type (.Type says which; branch on it, e.g.
	// {{if eq .Type "api_key.created"}}). Defaults to the embedded
	// templates/notice.txt.tmpl.
	TextTemplate string

	// HTMLTemplate is an html/template for the HTML part, executed on the
	// Notice of every event type, as TextTemplate. Defaults to the embedded
	// templates/notice.html.tmpl.
	HTMLTemplate string
}

type starttlsMode int

const (
	starttlsRequire starttlsMode = iota
	starttlsOpportunistic
	starttlsOff
)

// smtpTarget is a parsed SMTP URL.
type smtpTarget struct {
	host, port  string
	implicitTLS bool
	starttls    starttlsMode
	user, pass  string
	hasAuth     bool
}

func (c SMTPConfig) withDefaults() SMTPConfig {
	c.Timeout = cmp.Or(c.Timeout, DefaultSMTPTimeout)
	c.HelloName = cmp.Or(c.HelloName, DefaultHelloName)
	c.TextTemplate = cmp.Or(c.TextTemplate, defaultTextTemplate)
	c.HTMLTemplate = cmp.Or(c.HTMLTemplate, defaultHTMLTemplate)
	return c
}

// parseSMTPURL parses and checks the URL. Its errors show the URL with the
// password replaced by "xxxxx", as pgx does for connection strings.
func parseSMTPURL(raw string) (smtpTarget, error) {
	var t smtpTarget
	if raw == "" {
		return t, errors.New("URL is required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the whole URL, password included.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return t, fmt.Errorf("URL is not a valid URL: %w", err)
	}
	shown := u.Redacted()
	switch u.Scheme {
	case "smtp":
		t.port = DefaultSMTPPort
	case "smtps":
		t.port, t.implicitTLS = DefaultSMTPSPort, true
	default:
		return t, fmt.Errorf("URL must start with smtp:// or smtps://, got %s", shown)
	}
	t.host = u.Hostname()
	if t.host == "" {
		return t, fmt.Errorf("URL must have a host, got %s", shown)
	}
	if p := u.Port(); p != "" {
		t.port = p
	}
	if u.Path != "" && u.Path != "/" {
		return t, fmt.Errorf("URL must not have a path, got %s", shown)
	}
	if u.User != nil {
		t.user = u.User.Username()
		t.pass, _ = u.User.Password()
		t.hasAuth = t.user != ""
	}

	loopback := isLoopback(t.host)
	t.starttls = starttlsRequire
	if loopback {
		t.starttls = starttlsOpportunistic
	}
	query := u.Query()
	for name := range query {
		if name != "starttls" {
			return t, fmt.Errorf("URL has unknown parameter %q (the only one is starttls), got %s", name, shown)
		}
	}
	if query.Has("starttls") {
		if t.implicitTLS {
			return t, fmt.Errorf("URL: starttls applies to smtp://, not smtps://, got %s", shown)
		}
		switch v := query.Get("starttls"); v {
		case "off":
			t.starttls = starttlsOff
		case "require":
			t.starttls = starttlsRequire
		default:
			return t, fmt.Errorf("URL parameter starttls must be off or require, got %q in %s", v, shown)
		}
	}
	if t.hasAuth && t.starttls == starttlsOff && !loopback {
		return t, fmt.Errorf("URL has credentials and starttls=off on a non-loopback host, which would send the password in clear; use STARTTLS or smtps://, got %s", shown)
	}
	return t, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c SMTPConfig) validate() (smtpTarget, error) {
	t, err := parseSMTPURL(c.URL)
	if err != nil {
		return t, err
	}
	if c.From == "" {
		return t, errors.New("From is required: the address notices are sent from")
	}
	if _, err := parseAddress(c.From); err != nil {
		return t, fmt.Errorf("From %w", err)
	}
	if c.Timeout < minSMTPTimeout || c.Timeout > maxSMTPTimeout {
		return t, fmt.Errorf("Timeout must be between %s and %s, got %s", minSMTPTimeout, maxSMTPTimeout, c.Timeout)
	}
	if strings.ContainsAny(c.HelloName, " \r\n\t") {
		return t, fmt.Errorf("HelloName must be a host name, got %q", c.HelloName)
	}
	return t, nil
}

// parseAddress parses one address, refusing CR and LF outright so nothing
// can smuggle a header or an SMTP command in.
func parseAddress(s string) (*mail.Address, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("must not contain CR or LF")
	}
	addr, err := mail.ParseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("is not a valid email address: %w", err)
	}
	if strings.ContainsAny(addr.Address, "\r\n<> ") {
		return nil, errors.New("is not a valid email address")
	}
	return addr, nil
}

// Email sends notices as multipart/alternative emails (plain text and HTML)
// over SMTP. It is safe for concurrent use; each Send opens its own
// connection.
type Email struct {
	target    smtpTarget
	display   string // host:port, for messages
	from      *mail.Address
	helloName string
	timeout   time.Duration
	tlsConfig *tls.Config
	text      *texttemplate.Template
	html      *htmltemplate.Template
}

var _ Sender = (*Email)(nil)

// NewEmail validates cfg, parses the templates, and tries them on a sample
// notice. Its errors name the field at fault and never show the password.
func NewEmail(cfg SMTPConfig) (*Email, error) {
	cfg = cfg.withDefaults()
	target, err := cfg.validate()
	if err != nil {
		return nil, fmt.Errorf("configuring email: %w", err)
	}
	from, _ := parseAddress(cfg.From) // validated above

	text, err := texttemplate.New("text").Parse(cfg.TextTemplate)
	if err != nil {
		return nil, fmt.Errorf("configuring email: TextTemplate: %w", err)
	}
	html, err := htmltemplate.New("html").Parse(cfg.HTMLTemplate)
	if err != nil {
		return nil, fmt.Errorf("configuring email: HTMLTemplate: %w", err)
	}

	var tlsConfig *tls.Config
	if cfg.TLSConfig != nil {
		tlsConfig = cfg.TLSConfig.Clone()
	} else {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	tlsConfig.ServerName = cmp.Or(tlsConfig.ServerName, target.host)

	e := &Email{
		target:    target,
		display:   net.JoinHostPort(target.host, target.port),
		from:      from,
		helloName: cfg.HelloName,
		timeout:   cfg.Timeout,
		tlsConfig: tlsConfig,
		text:      text,
		html:      html,
	}
	if err := e.tryTemplates(); err != nil {
		return nil, fmt.Errorf("configuring email: %w", err)
	}
	return e, nil
}

// Name returns "email".
func (e *Email) Name() string { return "email" }

// Send emails n to n.Email. A notice without an address, or with one that is
// malformed or holds CR or LF, is a *PermanentError, as is a 5xx reply or a
// server that does not offer a required STARTTLS; a 4xx reply, a network
// error or a timeout is a *RetryableError.
//
// The Message-ID is derived from the notice's EventID, so a retry of a
// message the server in fact accepted looks like a duplicate to mail
// clients.
func (e *Email) Send(ctx context.Context, n Notice) error {
	if err := n.validate(); err != nil {
		return permanent(fmt.Errorf("email: %w", err))
	}
	if n.Email == "" {
		return permanent(fmt.Errorf("email for user %s: user has no email address", n.UserID))
	}
	to, err := parseAddress(n.Email)
	if err != nil {
		// The address itself is personal data; the user id finds it.
		return permanent(fmt.Errorf("email for user %s: address %w", n.UserID, err))
	}
	msg, err := e.message(n, to, time.Now())
	if err != nil {
		return permanent(fmt.Errorf("email for user %s: %w", n.UserID, err))
	}

	attempt, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	stage, err := e.deliver(attempt, to.Address, msg)
	if err == nil {
		return nil
	}
	return e.classify(ctx, attempt, stage, err)
}

// smtpPolicyError is a refusal of ours, not the server's: always permanent.
type smtpPolicyError struct{ msg string }

func (e *smtpPolicyError) Error() string { return e.msg }

// classify turns a delivery failure into a RetryableError or PermanentError.
func (e *Email) classify(parent, attempt context.Context, stage string, err error) error {
	var policy *smtpPolicyError
	var reply *smtp.SMTPError
	switch {
	case ctxDone(parent) != nil:
		return retryable(fmt.Errorf("sending email via smtp %s: %s: %w", e.display, stage, ctxDone(parent)))
	case errors.As(err, &policy):
		return permanent(fmt.Errorf("sending email via smtp %s: %w", e.display, err))
	case errors.As(err, &reply):
		failure := fmt.Errorf("smtp %s answered %s to %s", e.display, replyText(reply), stage)
		if reply.Code >= 400 && reply.Code < 500 {
			return retryable(failure)
		}
		return permanent(failure)
	case attempt.Err() != nil || isTimeout(err):
		return retryable(fmt.Errorf("sending email via smtp %s timed out after %s during %s: %w", e.display, e.timeout, stage, err))
	default:
		return retryable(fmt.Errorf("sending email via smtp %s: %s: %w", e.display, stage, err))
	}
}
