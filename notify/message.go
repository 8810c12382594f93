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

// render executes both templates on n.
func (e *Email) render(n Notice) (text, html []byte, err error) {
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
	header("Subject", mime.QEncoding.Encode("utf-8", EmailSubject))
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
