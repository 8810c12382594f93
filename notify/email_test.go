package notify_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"html"
	"io"
	"log"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/keyworker/keyworker/notify"

	"github.com/keyworker/keyworker/internal/testenv"
)

// smtpOptions shapes a test SMTP server.
type smtpOptions struct {
	tls         *tls.Config // offer STARTTLS (or, with implicitTLS, TLS from the start)
	implicitTLS bool
	user, pass  string        // require AUTH PLAIN with these
	rcptErr     error         // answer RCPT TO with this
	dataErr     error         // answer the end of DATA with this
	dataDelay   time.Duration // wait this long before answering the end of DATA
}

// received is one message as the server got it.
type received struct {
	from     string
	to       []string
	data     []byte
	tls      bool
	authUser string
}

// smtpServer is a real SMTP server (emersion/go-smtp) on a loopback port
// that records what it accepts.
type smtpServer struct {
	addr string
	opts smtpOptions
	srv  *smtp.Server

	mu       sync.Mutex
	messages []received
	authFail int
}

func startSMTP(t *testing.T, opts smtpOptions) *smtpServer {
	t.Helper()
	s := &smtpServer{opts: opts}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{server: s, conn: c}, nil
	}))
	s.srv.Domain = "localhost"
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.ReadTimeout = 10 * time.Second
	s.srv.WriteTimeout = 10 * time.Second
	s.srv.TLSConfig = opts.tls

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.implicitTLS {
		l = tls.NewListener(l, opts.tls)
	}
	s.addr = l.Addr().String()
	go func() { _ = s.srv.Serve(l) }()
	t.Cleanup(func() { _ = s.srv.Close() })
	// Serve registers the listener with the server only once it runs; wait
	// for a greeting so that Close is sure to stop it.
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	if opts.implicitTLS {
		c = tls.Client(c, &tls.Config{InsecureSkipVerify: true}) // only to see the greeting
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	greeting := make([]byte, 3)
	if _, err := io.ReadFull(c, greeting); err != nil || string(greeting) != "220" {
		t.Fatalf("test SMTP server greeting: %q, %v", greeting, err)
	}
	_ = c.Close()
	return s
}

func (s *smtpServer) received() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.messages)
}

type session struct {
	server   *smtpServer
	conn     *smtp.Conn
	authUser string
	from     string
	to       []string
}

func (s *session) AuthMechanisms() []string {
	if s.server.opts.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != s.server.opts.user || password != s.server.opts.pass {
			s.server.mu.Lock()
			s.server.authFail++
			s.server.mu.Unlock()
			return smtp.ErrAuthFailed
		}
		s.authUser = username
		return nil
	}), nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if s.server.opts.user != "" && s.authUser == "" {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.server.opts.rcptErr != nil {
		return s.server.opts.rcptErr
	}
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	time.Sleep(s.server.opts.dataDelay)
	if s.server.opts.dataErr != nil {
		return s.server.opts.dataErr
	}
	_, isTLS := s.conn.TLSConnectionState()
	s.server.mu.Lock()
	s.server.messages = append(s.server.messages, received{from: s.from, to: s.to, data: data, tls: isTLS, authUser: s.authUser})
	s.server.mu.Unlock()
	return nil
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }

// selfSigned makes a certificate for 127.0.0.1 and localhost, and a pool
// that trusts it.
func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	c := testenv.SelfSigned(t, "notify test SMTP")
	return c.Config, c.Pool
}

func newEmail(t *testing.T, cfg notify.SMTPConfig) *notify.Email {
	t.Helper()
	if cfg.From == "" {
		cfg.From = "Example Keys <keys@example.com>"
	}
	e, err := notify.NewEmail(cfg)
	if err != nil {
		t.Fatalf("NewEmail: %v", err)
	}
	return e
}

// parsedMessage is a received message taken apart with net/mail and
// mime/multipart.
type parsedMessage struct {
	header mail.Header
	parts  map[string]string // content type -> decoded body
}

func parseMessage(t *testing.T, raw []byte) parsedMessage {
	t.Helper()
	for i, b := range raw {
		if b == '\n' && (i == 0 || raw[i-1] != '\r') {
			t.Fatalf("bare LF at byte %d", i)
		}
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("reading message: %v", err)
	}
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/alternative" {
		t.Fatalf("Content-Type = %q (%v), want multipart/alternative", msg.Header.Get("Content-Type"), err)
	}
	p := parsedMessage{header: msg.Header, parts: map[string]string{}}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var order []string
	for {
		part, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading part: %v", err)
		}
		ct, ctParams, err := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if err != nil {
			t.Fatalf("part Content-Type: %v", err)
		}
		if ctParams["charset"] != "utf-8" {
			t.Errorf("%s charset = %q", ct, ctParams["charset"])
		}
		if cte := part.Header.Get("Content-Transfer-Encoding"); cte != "quoted-printable" {
			t.Errorf("%s Content-Transfer-Encoding = %q", ct, cte)
		}
		rawBody, err := io.ReadAll(part)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(rawBody), "\r\n") {
			if len(line) > 76 {
				t.Errorf("%s has a %d-byte line", ct, len(line))
			}
		}
		body, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(rawBody)))
		if err != nil {
			t.Fatalf("decoding %s: %v", ct, err)
		}
		p.parts[ct] = string(body)
		order = append(order, ct)
	}
	if !slices.Equal(order, []string{"text/plain", "text/html"}) {
		t.Errorf("parts = %v, want text/plain then text/html", order)
	}
	return p
}

// checkNoticeMessage checks the envelope, headers and both parts.
func checkNoticeMessage(t *testing.T, got received, n notify.Notice) parsedMessage {
	t.Helper()
	if got.from != "keys@example.com" || !slices.Equal(got.to, []string{n.Email}) {
		t.Errorf("envelope from %q to %v", got.from, got.to)
	}
	p := parseMessage(t, got.data)
	h := p.header
	if s := h.Get("Subject"); s != notify.Subject(n.Type) {
		t.Errorf("Subject = %q", s)
	}
	if from, err := h.AddressList("From"); err != nil || len(from) != 1 || from[0].Address != "keys@example.com" || from[0].Name != "Example Keys" {
		t.Errorf("From = %q (%v)", h.Get("From"), err)
	}
	if to, err := h.AddressList("To"); err != nil || len(to) != 1 || to[0].Address != n.Email {
		t.Errorf("To = %q (%v)", h.Get("To"), err)
	}
	if d, err := h.Date(); err != nil || time.Since(d) > time.Minute {
		t.Errorf("Date = %q (%v)", h.Get("Date"), err)
	}
	if id := h.Get("Message-ID"); id != "<"+n.EventID+"@example.com>" {
		t.Errorf("Message-ID = %q", id)
	}
	if v := h.Get("MIME-Version"); v != "1.0" {
		t.Errorf("MIME-Version = %q", v)
	}
	for ct, body := range p.parts {
		if ct == "text/html" {
			body = html.UnescapeString(body)
		}
		for _, want := range []string{n.KeyID, n.Last4} {
			if !strings.Contains(body, want) {
				t.Errorf("%s part does not contain %q:\n%s", ct, want, body)
			}
		}
		if n.PickUp() && n.PickupURL != "" && !strings.Contains(body, n.PickupURL) {
			t.Errorf("%s part does not contain the pick-up URL %q:\n%s", ct, n.PickupURL, body)
		}
		// The reveal endpoint takes POST only: a link to it cannot work.
		if strings.Contains(body, n.RevealURL) {
			t.Errorf("%s part links the POST-only reveal endpoint %q:\n%s", ct, n.RevealURL, body)
		}
	}
	return p
}

func TestEmailPlainRelay(t *testing.T) {
	t.Parallel()
	srv := startSMTP(t, smtpOptions{})
	e := newEmail(t, notify.SMTPConfig{URL: "smtp://" + srv.addr + "?starttls=off"})
	n := testNotice(t)

	if err := e.Send(t.Context(), n); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := srv.received()
	if len(got) != 1 {
		t.Fatalf("server got %d messages, want 1", len(got))
	}
	if got[0].tls {
		t.Error("starttls=off used TLS")
	}
	checkNoticeMessage(t, got[0], n)
}

func TestEmailLoopbackWithoutSTARTTLSGoesOnInClear(t *testing.T) {
	t.Parallel()
	srv := startSMTP(t, smtpOptions{})
	e := newEmail(t, notify.SMTPConfig{URL: "smtp://" + srv.addr})
	if err := e.Send(t.Context(), testNotice(t)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if n := len(srv.received()); n != 1 {
		t.Fatalf("server got %d messages, want 1", n)
	}
}

func TestEmailSTARTTLSWithAuth(t *testing.T) {
	t.Parallel()
	for _, query := range []string{"", "?starttls=require"} {
		t.Run("query="+query, func(t *testing.T) {
			t.Parallel()
			serverTLS, pool := selfSigned(t)
			srv := startSMTP(t, smtpOptions{tls: serverTLS, user: "alice", pass: "s3cr@t pass"})
			u := "smtp://alice:" + url.PathEscape("s3cr@t pass") + "@" + srv.addr + query
			e := newEmail(t, notify.SMTPConfig{URL: u, TLSConfig: &tls.Config{RootCAs: pool}})
			n := testNotice(t)

			if err := e.Send(t.Context(), n); err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := srv.received()
			if len(got) != 1 {
				t.Fatalf("server got %d messages, want 1", len(got))
			}
			if !got[0].tls {
				t.Error("message did not travel over TLS")
			}
			if got[0].authUser != "alice" {
				t.Errorf("authenticated as %q, want alice", got[0].authUser)
			}
			checkNoticeMessage(t, got[0], n)
		})
	}
}

func TestEmailImplicitTLS(t *testing.T) {
	t.Parallel()
	serverTLS, pool := selfSigned(t)
	srv := startSMTP(t, smtpOptions{tls: serverTLS, implicitTLS: true, user: "bob", pass: "pw"})
	e := newEmail(t, notify.SMTPConfig{URL: "smtps://bob:pw@" + srv.addr, TLSConfig: &tls.Config{RootCAs: pool}})
	n := testNotice(t)

	if err := e.Send(t.Context(), n); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := srv.received()
	if len(got) != 1 || !got[0].tls || got[0].authUser != "bob" {
		t.Fatalf("server got %+v", got)
	}
	checkNoticeMessage(t, got[0], n)
}

func TestEmailWrongPasswordIsPermanent(t *testing.T) {
	t.Parallel()
	serverTLS, pool := selfSigned(t)
	srv := startSMTP(t, smtpOptions{tls: serverTLS, user: "alice", pass: "right"})
	e := newEmail(t, notify.SMTPConfig{URL: "smtp://alice:wr0ng@" + srv.addr, TLSConfig: &tls.Config{RootCAs: pool}})

	err := e.Send(t.Context(), testNotice(t))
	var pe *notify.PermanentError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "answered 535") || !strings.Contains(err.Error(), "AUTH") {
		t.Fatalf("Send = %v, want a PermanentError for the 535 to AUTH", err)
	}
	if strings.Contains(err.Error(), "wr0ng") {
		t.Errorf("error shows the password: %v", err)
	}
	if len(srv.received()) != 0 {
		t.Error("message delivered without authentication")
	}
}

func TestEmailUntrustedCertificateSendsNothing(t *testing.T) {
	t.Parallel()
	serverTLS, _ := selfSigned(t)
	srv := startSMTP(t, smtpOptions{tls: serverTLS, user: "alice", pass: "pw"})
	e := newEmail(t, notify.SMTPConfig{URL: "smtp://alice:pw@" + srv.addr}) // system roots only

	err := e.Send(t.Context(), testNotice(t))
	var re *notify.RetryableError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("Send = %v, want a RetryableError during STARTTLS", err)
	}
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) {
		t.Errorf("error does not carry the certificate failure: %v", err)
	}
	srv.mu.Lock()
	authFail := srv.authFail
	srv.mu.Unlock()
	if len(srv.received()) != 0 || authFail != 0 {
		t.Error("credentials or message reached a server with an untrusted certificate")
	}
}

func TestEmailRequiredSTARTTLSMissingIsPermanent(t *testing.T) {
	t.Parallel()
	srv := startSMTP(t, smtpOptions{}) // no TLS at all
	e := newEmail(t, notify.SMTPConfig{URL: "smtp://" + srv.addr + "?starttls=require"})

	err := e.Send(t.Context(), testNotice(t))
	var pe *notify.PermanentError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "does not offer STARTTLS") {
		t.Fatalf("Send = %v, want a PermanentError about STARTTLS", err)
	}
	if len(srv.received()) != 0 {
		t.Error("message sent in clear despite starttls=require")
	}
}

func TestEmailServerReplies(t *testing.T) {
	t.Parallel()
	reply := func(code int, enhanced smtp.EnhancedCode, msg string) error {
		return &smtp.SMTPError{Code: code, EnhancedCode: enhanced, Message: msg}
	}
	tests := []struct {
		name      string
		opts      smtpOptions
		permanent bool
		want      string
	}{
		{"451 to RCPT", smtpOptions{rcptErr: reply(451, smtp.EnhancedCode{4, 3, 0}, "Try again later")}, false, "answered 451 4.3.0 Try again later to RCPT TO"},
		{"550 to RCPT", smtpOptions{rcptErr: reply(550, smtp.EnhancedCode{5, 1, 1}, "No such user")}, true, "answered 550 5.1.1 No such user to RCPT TO"},
		{"452 to DATA", smtpOptions{dataErr: reply(452, smtp.EnhancedCode{4, 3, 1}, "Mailbox full")}, false, "answered 452 4.3.1 Mailbox full to end of DATA"},
		{"554 to DATA", smtpOptions{dataErr: reply(554, smtp.EnhancedCode{5, 7, 1}, "Rejected as spam")}, true, "answered 554 5.7.1 Rejected as spam to end of DATA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startSMTP(t, tt.opts)
			e := newEmail(t, notify.SMTPConfig{URL: "smtp://" + srv.addr + "?starttls=off"})
			n := testNotice(t)

			err := e.Send(t.Context(), n)
			var pe *notify.PermanentError
			var re *notify.RetryableError
			if tt.permanent && !errors.As(err, &pe) {
				t.Fatalf("Send = %v, want a PermanentError", err)
			}
			if !tt.permanent && !errors.As(err, &re) {
				t.Fatalf("Send = %v, want a RetryableError", err)
			}
			if !strings.Contains(err.Error(), "smtp "+srv.addr+" "+tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), n.Email) {
				t.Errorf("error shows the recipient: %v", err)
			}
		})
	}
}

func TestEmailServerStoppedIsRetryable(t *testing.T) {
	t.Parallel()
	srv := startSMTP(t, smtpOptions{})
	e := newEmail(t, notify.SMTPConfig{URL: "smtp://" + srv.addr + "?starttls=off"})
	if err := e.Send(t.Context(), testNotice(t)); err != nil {
		t.Fatalf("Send while the server runs: %v", err)
	}
	if err := srv.srv.Close(); err != nil {
		t.Fatal(err)
	}

	err := e.Send(t.Context(), testNotice(t))
	var re *notify.RetryableError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), srv.addr) {
		t.Fatalf("Send = %v, want a RetryableError naming the server", err)
	}
}

// silentServer accepts connections and never says a word.
func silentServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}

func TestEmailSilentServerTimesOut(t *testing.T) {
	t.Parallel()
	addr := silentServer(t)
	e := newEmail(t, notify.SMTPConfig{URL: "smtp://" + addr + "?starttls=off", Timeout: 100 * time.Millisecond})

	err := e.Send(t.Context(), testNotice(t))
	var re *notify.RetryableError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "timed out after 100ms during greeting") {
		t.Fatalf("Send = %v, want a RetryableError naming the timeout", err)
	}
}

func TestEmailObeysCallerDeadline(t *testing.T) {
	t.Parallel()
	addr := silentServer(t)
	e := newEmail(t, notify.SMTPConfig{URL: "smtp://" + addr + "?starttls=off"}) // 15s of its own
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()

	start := time.Now()
	err := e.Send(ctx, testNotice(t))
	var re *notify.RetryableError
	if !errors.As(err, &re) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send = %v, want a RetryableError wrapping the caller's deadline", err)
	}
	if strings.Contains(err.Error(), "timed out after 15s") {
		t.Errorf("error blames the sender's own timeout: %v", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Send took %s past a 100ms deadline", elapsed)
	}
}

func TestEmailTemplateOverride(t *testing.T) {
	t.Parallel()
	srv := startSMTP(t, smtpOptions{})
	e := newEmail(t, notify.SMTPConfig{
		URL:          "smtp://" + srv.addr + "?starttls=off",
		TextTemplate: "Key {{.KeyID}} ending {{.Last4}}: {{.RevealURL}}\n",
		HTMLTemplate: `<p>Key {{.KeyID}} ending {{.Last4}}: <a href="{{.RevealURL}}">pick it up</a></p>`,
	})
	n := testNotice(t)
	if err := e.Send(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	p := parseMessage(t, srv.received()[0].data)
	if want := "Key " + n.KeyID + " ending x9Qz: " + n.RevealURL + "\r\n"; p.parts["text/plain"] != want {
		t.Errorf("text part = %q, want %q", p.parts["text/plain"], want)
	}
	escapedURL := strings.ReplaceAll(n.RevealURL, "&", "&amp;")
	if want := `<p>Key ` + n.KeyID + ` ending x9Qz: <a href="` + escapedURL + `">pick it up</a></p>`; p.parts["text/html"] != want {
		t.Errorf("html part = %q, want %q", p.parts["text/html"], want)
	}
}

func TestEmailHTMLEscapesNoticeFields(t *testing.T) {
	t.Parallel()
	srv := startSMTP(t, smtpOptions{})
	e := newEmail(t, notify.SMTPConfig{URL: "smtp://" + srv.addr + "?starttls=off"})
	n := testNotice(t)
	n.Prefix = "<script>alert(1)</script>"
	n.RevealURL = "javascript:alert(1)"
	if err := e.Send(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	p := parseMessage(t, srv.received()[0].data)
	if h := p.parts["text/html"]; strings.Contains(h, "<script>") || strings.Contains(h, `href="javascript:`) {
		t.Errorf("HTML part was not escaped:\n%s", h)
	}
}

func TestEmailMessageIDStableAcrossRetries(t *testing.T) {
	t.Parallel()
	srv := startSMTP(t, smtpOptions{})
	e := newEmail(t, notify.SMTPConfig{URL: "smtp://" + srv.addr + "?starttls=off"})
	n := testNotice(t)
	for range 2 {
		if err := e.Send(t.Context(), n); err != nil {
			t.Fatal(err)
		}
	}
	got := srv.received()
	a, b := parseMessage(t, got[0].data), parseMessage(t, got[1].data)
	if a.header.Get("Message-ID") != b.header.Get("Message-ID") {
		t.Errorf("Message-IDs differ: %q, %q", a.header.Get("Message-ID"), b.header.Get("Message-ID"))
	}
}

func TestEmailRejectsBadRecipients(t *testing.T) {
	t.Parallel()
	srv := startSMTP(t, smtpOptions{})
	e := newEmail(t, notify.SMTPConfig{URL: "smtp://" + srv.addr + "?starttls=off"})
	tests := []struct{ email, want string }{
		{"", "user has no email address"},
		{"victim@example.com\r\nBcc: attacker@example.com", "must not contain CR or LF"},
		{"victim@example.com\nBcc: attacker@example.com", "must not contain CR or LF"},
		{"victim@example.com\r\n.\r\nMAIL FROM:<x@y>", "must not contain CR or LF"},
		{"not an address", "is not a valid email address"},
	}
	for _, tt := range tests {
		n := testNotice(t)
		n.Email = tt.email
		err := e.Send(t.Context(), n)
		var pe *notify.PermanentError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Send to %q = %v, want a PermanentError containing %q", tt.email, err, tt.want)
		}
	}
	if got := srv.received(); len(got) != 0 {
		t.Errorf("server got %d messages", len(got))
	}
}

func TestNewEmailValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  notify.SMTPConfig
		want string // in the error; "" means valid
	}{
		{"submission", notify.SMTPConfig{URL: "smtp://u:p@mail.example.com:587", From: "keys@example.com"}, ""},
		{"implicit TLS", notify.SMTPConfig{URL: "smtps://u:p@mail.example.com", From: "keys@example.com"}, ""},
		{"plain local relay", notify.SMTPConfig{URL: "smtp://localhost:25?starttls=off", From: "keys@example.com"}, ""},
		{"no URL", notify.SMTPConfig{From: "keys@example.com"}, "URL is required"},
		{"bad scheme shows redacted URL", notify.SMTPConfig{URL: "http://u:hunter2@mail.example.com", From: "keys@example.com"}, "URL must start with smtp:// or smtps://, got http://u:xxxxx@mail.example.com"},
		{"unparsable with password", notify.SMTPConfig{URL: "smtp://u:hunter2@mail.example.com:port", From: "keys@example.com"}, "URL is not a valid URL"},
		{"no host", notify.SMTPConfig{URL: "smtp://u:hunter2@:587", From: "keys@example.com"}, "URL must have a host, got smtp://u:xxxxx@:587"},
		{"path", notify.SMTPConfig{URL: "smtp://mail.example.com/x", From: "keys@example.com"}, "URL must not have a path"},
		{"unknown parameter", notify.SMTPConfig{URL: "smtp://u:hunter2@mail.example.com?tls=yes", From: "keys@example.com"}, `URL has unknown parameter "tls"`},
		{"bad starttls", notify.SMTPConfig{URL: "smtp://mail.example.com?starttls=maybe", From: "keys@example.com"}, "starttls must be off or require"},
		{"starttls with smtps", notify.SMTPConfig{URL: "smtps://mail.example.com?starttls=off", From: "keys@example.com"}, "starttls applies to smtp://"},
		{"password in clear", notify.SMTPConfig{URL: "smtp://u:hunter2@mail.example.com?starttls=off", From: "keys@example.com"}, "would send the password in clear"},
		{"no From", notify.SMTPConfig{URL: "smtp://mail.example.com"}, "From is required"},
		{"From with CRLF", notify.SMTPConfig{URL: "smtp://mail.example.com", From: "keys@example.com\r\nBcc: x@y.z"}, "From must not contain CR or LF"},
		{"From not an address", notify.SMTPConfig{URL: "smtp://mail.example.com", From: "keys"}, "From is not a valid email address"},
		{"negative timeout", notify.SMTPConfig{URL: "smtp://mail.example.com", From: "keys@example.com", Timeout: -1}, "Timeout must be between 1ms and 5m0s, got -1ns"},
		{"HelloName with space", notify.SMTPConfig{URL: "smtp://mail.example.com", From: "keys@example.com", HelloName: "a b"}, "HelloName"},
		{"text template syntax", notify.SMTPConfig{URL: "smtp://mail.example.com", From: "keys@example.com", TextTemplate: "{{.KeyID"}, "TextTemplate"},
		{"text template unknown field", notify.SMTPConfig{URL: "smtp://mail.example.com", From: "keys@example.com", TextTemplate: "{{.Secret}}"}, "executing TextTemplate"},
		{"html template unknown field", notify.SMTPConfig{URL: "smtp://mail.example.com", From: "keys@example.com", HTMLTemplate: "<p>{{.Plaintext}}</p>"}, "executing HTMLTemplate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := notify.NewEmail(tt.cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("NewEmail: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewEmail = %v, want an error containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}
