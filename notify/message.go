package notify

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
	"time"
)

// Subject returns the subject of the email for event type eventType
// (EmailSubject for EventCreated and an empty type):
//
//	api_key.created   Your API key is ready
//	api_key.rotated   Your API key was rotated
//	api_key.revoked   Your API key was revoked
//	api_key.disabled  Your API key was disabled
//	api_key.expiring  Your API key expires soon
//	api_key.expired   Your API key has expired
func Subject(eventType string) string {
	switch eventType {
	case EventRotated:
		return "Your API key was rotated"
	case EventRevoked:
		return "Your API key was revoked"
	case EventDisabled:
		return "Your API key was disabled"
	case EventExpiring:
		return "Your API key expires soon"
	case EventExpired:
		return "Your API key has expired"
	}
	return EmailSubject
}

// tryTemplates executes both templates on a sample notice of every event
// type: a template naming a field Notice lacks fails only when executed, so
// find out when the sender is made rather than at the first notice.
func (e *Email) tryTemplates() error {
	now := time.Now()
	for _, t := range EventTypes() {
		sample := Notice{
			Type: t, EventID: EventID(t, "sample"), KeyID: "sample", UserID: "sample", Prefix: "sk", Last4: "abcd",
			CreatedAt: now, ExpiresAt: &now, RevokedAt: &now, DisabledAt: &now, RotatedTo: "sample2",
			RevealURL: "https://example.com/v1/keys/reveal", PickupURL: "https://example.com/keys/sample",
			RevealExpiresAt: now, Email: "user@example.com",
		}
		if _, _, err := e.render(sample); err != nil {
			return fmt.Errorf("%s notice: %w", t, err)
		}
	}
	return nil
}

// render executes both templates on n, with n's Type set (EventCreated when
// it was empty).
func (e *Email) render(n Notice) (text, html []byte, err error) {
	n = n.normalized()
	var tb, hb bytes.Buffer
	if err := e.text.Execute(&tb, n); err != nil {
		return nil, nil, fmt.Errorf("executing TextTemplate: %w", err)
	}
	if err := e.html.Execute(&hb, n); err != nil {
		return nil, nil, fmt.Errorf("executing HTMLTemplate: %w", err)
	}
	return tb.Bytes(), hb.Bytes(), nil
}

// message builds the RFC 5322 message: CRLF line endings throughout, headers
// from trusted or checked values only, and a multipart/alternative body
// whose text and HTML parts are quoted-printable UTF-8.
func (e *Email) message(n Notice, to *mail.Address, now time.Time) ([]byte, error) {
	text, html, err := e.render(n)
	if err != nil {
		return nil, err
	}

	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for _, part := range []struct {
		contentType string
		content     []byte
	}{
		{"text/plain; charset=utf-8", text},
		{"text/html; charset=utf-8", html},
	} {
		pw, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {part.contentType},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		if err != nil {
			return nil, fmt.Errorf("building message: %w", err)
		}
		qp := quotedprintable.NewWriter(pw) // turns line breaks into CRLF
		if _, err := qp.Write(part.content); err != nil {
			return nil, fmt.Errorf("building message: %w", err)
		}
		if err := qp.Close(); err != nil {
			return nil, fmt.Errorf("building message: %w", err)
		}
	}
	if err := mw.Close(); err != nil {
		return nil, fmt.Errorf("building message: %w", err)
	}

	var msg bytes.Buffer
	header := func(name, value string) { fmt.Fprintf(&msg, "%s: %s\r\n", name, value) }
	header("From", e.from.String())
	header("To", to.String())
	header("Subject", mime.QEncoding.Encode("utf-8", Subject(n.Type)))
	header("Date", now.Format(time.RFC1123Z))
	header("Message-ID", messageID(n.EventID, e.from.Address))
	header("Auto-Submitted", "auto-generated") // RFC 3834: no vacation replies
	header("MIME-Version", "1.0")
	header("Content-Type", mime.FormatMediaType("multipart/alternative", map[string]string{"boundary": mw.Boundary()}))
	msg.WriteString("\r\n")
	msg.Write(body.Bytes())
	return msg.Bytes(), nil
}

// messageID returns "<eventID@domain of from>" when both are plain
// dot-atoms, so retries of one notice share it; otherwise it makes one up.
func messageID(eventID, from string) string {
	_, domain, _ := strings.Cut(from, "@")
	if !isDotAtom(domain) {
		domain = "keyworker.invalid"
	}
	left := eventID
	if !isDotAtom(left) {
		var b [16]byte
		_, _ = rand.Read(b[:])
		left = hex.EncodeToString(b[:])
	}
	return "<" + left + "@" + domain + ">"
}

// isDotAtom reports whether s is a conservative RFC 5322 dot-atom: ASCII
// letters, digits and a few symbols, dots only between them.
func isDotAtom(s string) bool {
	if s == "" || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-+=", r)
		if !ok {
			return false
		}
	}
	return true
}
