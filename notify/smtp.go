package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// deliver runs one SMTP conversation through go-smtp's client, under our
// policy: STARTTLS required unless the URL or a loopback host says
// otherwise, no AUTH over a clear connection off loopback. On failure it
// returns the stage that failed ("connect", "greeting", "EHLO", "STARTTLS",
// "AUTH", "MAIL FROM", "RCPT TO", "DATA", "end of DATA") and the error, a
// *smtp.SMTPError when the server answered with an unexpected code.
func (e *Email) deliver(ctx context.Context, to string, msg []byte) (string, error) {
	c, isTLS, stage, err := e.open(ctx)
	if err != nil {
		return stage, err
	}
	defer func() { _ = c.Close() }()

	if e.target.hasAuth {
		if !isTLS && !isLoopback(e.target.host) {
			return "AUTH", &smtpPolicyError{msg: "refusing to send the password over an unencrypted connection"}
		}
		if ok, _ := c.Extension("AUTH"); !ok {
			return "AUTH", &smtpPolicyError{msg: "server does not offer AUTH, but the URL has credentials"}
		}
		if err := c.Auth(sasl.NewPlainClient("", e.target.user, e.target.pass)); err != nil {
			return "AUTH", err
		}
	}
	if err := c.Mail(e.from.Address, nil); err != nil {
		return "MAIL FROM", err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return "RCPT TO", err
	}
	w, err := c.Data()
	if err != nil {
		return "DATA", err
	}
	if _, err := w.Write(msg); err != nil {
		return "DATA", err
	}
	if err := w.Close(); err != nil { // the final dot, and the server's answer to the message
		return "end of DATA", err
	}
	// The message is accepted: a failed QUIT changes nothing.
	_ = c.Quit()
	return "", nil
}

// open connects, reads the greeting, says EHLO and, as the URL asks,
// upgrades with STARTTLS and says EHLO again. It reports whether the
// connection is encrypted.
func (e *Email) open(ctx context.Context) (c *smtp.Client, isTLS bool, stage string, err error) {
	conn, err := e.dial(ctx)
	if err != nil {
		return nil, false, "connect", err
	}
	if e.target.implicitTLS || e.target.starttls == starttlsOff {
		c, stage, err := e.hello(conn)
		return c, e.target.implicitTLS, stage, err
	}

	// STARTTLS. go-smtp's client says EHLO (as "localhost") and STARTTLS
	// in one call; what it wrote tells which step failed, and whether the
	// server simply did not offer STARTTLS.
	sniff := &commandSniffer{Conn: conn}
	c, err = smtp.NewClientStartTLS(sniff, e.tlsConfig)
	if err != nil {
		last := sniff.last()
		var reply *smtp.SMTPError
		var netErr net.Error
		var proto textproto.ProtocolError
		answered := !errors.As(err, &reply) && !errors.As(err, &netErr) && !errors.As(err, &proto) && ctx.Err() == nil
		switch {
		case last == "EHLO" && answered, last == "HELO" && answered:
			// The EHLO (or HELO) exchange went through and no STARTTLS
			// was sent: the server does not offer it.
			if e.target.starttls == starttlsRequire {
				return nil, false, "STARTTLS", &smtpPolicyError{msg: "server does not offer STARTTLS, which an smtp:// URL requires " +
					"(use smtps:// for implicit TLS, or ?starttls=off for a trusted plain relay)"}
			}
			// A loopback relay without TLS: go on in clear, on a new
			// connection (the client closed this one).
			if conn, err = e.dial(ctx); err != nil {
				return nil, false, "connect", err
			}
			c, stage, err := e.hello(conn)
			return c, false, stage, err
		case last == "":
			return nil, false, "greeting", err
		case last == "STARTTLS":
			return nil, false, "STARTTLS", err
		default:
			return nil, false, "EHLO", err
		}
	}
	// RFC 3207: forget what was learnt before TLS and ask again. The TLS
	// handshake runs with this EHLO: an error that is not the server's
	// answer is the handshake's.
	if err := c.Hello(e.helloName); err != nil {
		_ = c.Close()
		var reply *smtp.SMTPError
		if errors.As(err, &reply) {
			return nil, false, "EHLO", err
		}
		return nil, false, "STARTTLS", err
	}
	return c, true, "", nil
}

// hello makes a client on conn and says EHLO as HelloName.
func (e *Email) hello(conn net.Conn) (*smtp.Client, string, error) {
	sniff := &commandSniffer{Conn: conn}
	c := smtp.NewClient(sniff)
	e.setTimeouts(c)
	if err := c.Hello(e.helloName); err != nil {
		_ = c.Close()
		if sniff.last() == "" {
			return nil, "greeting", err
		}
		return nil, "EHLO", err
	}
	return c, "", nil
}

// setTimeouts sets the client's own per-command bounds to the attempt's;
// the connection's deadlines (ctxConn) hold whatever it sets.
func (e *Email) setTimeouts(c *smtp.Client) {
	c.CommandTimeout, c.SubmissionTimeout = e.timeout, e.timeout
}

// dial connects (with TLS for smtps://) and returns a connection whose
// deadlines never pass ctx's and that fails at once when ctx ends.
func (e *Email) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", e.display)
	if err != nil {
		return nil, err
	}
	conn := newCtxConn(ctx, raw)
	if !e.target.implicitTLS {
		return conn, nil
	}
	tc := tls.Client(conn, e.tlsConfig)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = tc.Close()
		return nil, err
	}
	return tc, nil
}

// ctxConn bounds every read and write by a context: go-smtp's client sets
// deadlines of its own around each command (and clears them after), and
// ctxConn moves each of them to the context's deadline when that is
// sooner, and to the past once the context ends. Deadlines set on it hold
// for a TLS connection over it too.
type ctxConn struct {
	net.Conn
	deadline time.Time // the context's; zero without one
	stop     func() bool

	mu   sync.Mutex
	done bool
}

var pastDeadline = time.Unix(1, 0)

func newCtxConn(ctx context.Context, conn net.Conn) *ctxConn {
	c := &ctxConn{Conn: conn}
	c.deadline, _ = ctx.Deadline()
	_ = conn.SetDeadline(c.deadline)
	c.stop = context.AfterFunc(ctx, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.done = true
		_ = c.Conn.SetDeadline(pastDeadline)
	})
	return c
}

func (c *ctxConn) bound(t time.Time) time.Time {
	switch {
	case c.done:
		return pastDeadline
	case c.deadline.IsZero():
		return t
	case t.IsZero() || t.After(c.deadline):
		return c.deadline
	}
	return t
}

func (c *ctxConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.SetDeadline(c.bound(t))
}

func (c *ctxConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.SetReadDeadline(c.bound(t))
}

func (c *ctxConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.SetWriteDeadline(c.bound(t))
}

func (c *ctxConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// commandSniffer remembers the verb of the last command written in clear
// (before any TLS over it), to name the step of go-smtp's client that
// failed.
type commandSniffer struct {
	net.Conn
	mu   sync.Mutex
	verb string
}

func (s *commandSniffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	if s.verb != "STARTTLS" { // past it, the bytes are TLS records
		verb, _, _ := bytes.Cut(bytes.TrimRight(p, "\r\n"), []byte(" "))
		s.verb = string(bytes.ToUpper(verb))
	}
	s.mu.Unlock()
	return s.Conn.Write(p)
}

func (s *commandSniffer) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.verb
}

// replyText is a server reply as an error message shows it: the code, the
// enhanced code when there is one, and the text.
func replyText(r *smtp.SMTPError) string {
	if r.EnhancedCode != (smtp.EnhancedCode{}) && r.EnhancedCode != smtp.NoEnhancedCode {
		return fmt.Sprintf("%d %d.%d.%d %s", r.Code, r.EnhancedCode[0], r.EnhancedCode[1], r.EnhancedCode[2], cleanText(r.Message, 512))
	}
	return fmt.Sprintf("%d %s", r.Code, cleanText(r.Message, 512))
}
