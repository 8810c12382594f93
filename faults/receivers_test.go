package faults

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/keyworker/keyworker/notify"
)

// --- webhook receiver --------------------------------------------------

// How the webhook receiver answers.
const (
	hookOK   int32 = iota // 204
	hookFail              // 500, and every other request 503 with Retry-After: 1
	hookHang              // no answer until the sender gives up
)

// hookKey is what the receiver saw for one key.
type hookKey struct {
	ids       map[string]bool // webhook-id of every signed request naming the key
	delivered int             // requests answered 2xx
	userID    string
}

// hookReceiver receives the worker's notices and checks each request's
// Standard Webhooks signature with notify.VerifyWebhook, which shares no
// code with the signing side.
type hookReceiver struct {
	srv     *httptest.Server
	secret  string
	mode    atomic.Int32
	closing chan struct{}

	mu           sync.Mutex
	byKey        map[string]*hookKey
	requests, ok int
	failed, hung int
	problems     []string // bad signatures, bad payloads
	bodies       [][]byte
	modeSeen     map[int32]int // requests per mode they met
}

func newHookReceiver(t *testing.T) *hookReceiver {
	t.Helper()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	h := &hookReceiver{
		secret:   "whsec_" + base64.StdEncoding.EncodeToString(raw),
		closing:  make(chan struct{}),
		byKey:    map[string]*hookKey{},
		modeSeen: map[int32]int{},
	}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(func() {
		close(h.closing)
		h.srv.Close()
	})
	return h
}

func (h *hookReceiver) url() string { return h.srv.URL + "/hooks/keyworker" }

type hookPayload struct {
	Type string `json:"type"`
	Data struct {
		KeyID  string `json:"key_id"`
		UserID string `json:"user_id"`
	} `json:"data"`
}

func (h *hookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	mode := h.mode.Load()
	id := r.Header.Get("webhook-id")
	var p hookPayload
	problem := ""
	if err := notify.VerifyWebhook(h.secret, r.Header, body, 0, time.Now()); err != nil {
		problem = fmt.Sprintf("request %q: %v", id, err)
	} else if err := json.Unmarshal(body, &p); err != nil || p.Type != notify.WebhookEventType || p.Data.KeyID == "" || p.Data.UserID == "" {
		problem = fmt.Sprintf("request %q: payload %.200q is not an api_key.created event", id, body)
	}

	h.mu.Lock()
	h.requests++
	h.modeSeen[mode]++
	h.bodies = append(h.bodies, body)
	if problem != "" {
		h.problems = append(h.problems, problem)
		h.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	k := h.byKey[p.Data.KeyID]
	if k == nil {
		k = &hookKey{ids: map[string]bool{}, userID: p.Data.UserID}
		h.byKey[p.Data.KeyID] = k
	}
	k.ids[id] = true
	if k.userID != p.Data.UserID {
		h.problems = append(h.problems, fmt.Sprintf("key %s announced for user %s and for user %s", p.Data.KeyID, k.userID, p.Data.UserID))
	}
	switch mode {
	case hookOK:
		k.delivered++
		h.ok++
		h.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case hookFail:
		h.failed++
		n := h.failed
		h.mu.Unlock()
		if n%2 == 0 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "try again in a second", http.StatusServiceUnavailable)
			return
		}
		http.Error(w, "receiver failing on purpose", http.StatusInternalServerError)
	case hookHang:
		h.hung++
		h.mu.Unlock()
		// Past the sender's timeout (10s): it gives up and closes the
		// connection first.
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		case <-h.closing:
		}
		http.Error(w, "too late", http.StatusServiceUnavailable)
	}
}

// hookSnapshot is a copy of what the receiver saw.
type hookSnapshot struct {
	byKey                      map[string]hookKey
	requests, ok, failed, hung int
	problems                   []string
}

func (h *hookReceiver) snapshot() hookSnapshot {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := hookSnapshot{byKey: make(map[string]hookKey, len(h.byKey)), requests: h.requests, ok: h.ok, failed: h.failed, hung: h.hung,
		problems: append([]string(nil), h.problems...)}
	for id, k := range h.byKey {
		c := *k
		c.ids = make(map[string]bool, len(k.ids))
		for x := range k.ids {
			c.ids[x] = true
		}
		s.byKey[id] = c
	}
	return s
}

// eachBody calls f with every request body received.
func (h *hookReceiver) eachBody(f func([]byte)) {
	h.mu.Lock()
	bodies := h.bodies
	h.mu.Unlock()
	for _, b := range bodies {
		f(b)
	}
}

// --- SMTP server -------------------------------------------------------

// mailKey is what the SMTP server saw for one key.
type mailKey struct {
	messageIDs map[string]bool
	received   int
	to         map[string]bool
}

// mailServer is an in-process SMTP server on a fixed loopback port that
// can be stopped and started again on the same port. It parses every
// message: Message-ID, recipient, and the key id from the text part.
type mailServer struct {
	addr string

	mu       sync.Mutex
	srv      *smtp.Server
	byKey    map[string]*mailKey
	received int
	problems []string
	texts    [][]byte // raw messages and their decoded parts, for the secret scan
}

func newMailServer(t *testing.T) *mailServer {
	t.Helper()
	m := &mailServer{addr: freeAddr(t), byKey: map[string]*mailKey{}}
	m.start(t)
	t.Cleanup(m.stop)
	return m
}

func (m *mailServer) url() string { return "smtp://" + m.addr + "?starttls=off" }

// start listens on the server's address again, retrying for a while if the
// port is not free yet.
func (m *mailServer) start(t *testing.T) {
	t.Helper()
	var l net.Listener
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		l, err = net.Listen("tcp", m.addr)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			t.Fatalf("starting the SMTP server on %s: %v", m.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &mailSession{m: m}, nil }))
	srv.Domain = "localhost"
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.MaxMessageBytes = 1 << 20
	srv.ErrorLog = log.New(io.Discard, "", 0) // connections the worker drops are expected here
	m.mu.Lock()
	m.srv = srv
	m.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
}

// stop closes the listener and every open connection.
func (m *mailServer) stop() {
	m.mu.Lock()
	srv := m.srv
	m.srv = nil
	m.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

var keyIDInMail = regexp.MustCompile(`Key ID:\s+([0-9A-Za-z]{27})\b`)

// record parses and files one accepted message.
func (m *mailServer) record(to []string, raw []byte) {
	texts := [][]byte{raw}
	problem := ""
	var messageID, keyID string
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		problem = "unparseable message: " + err.Error()
	} else {
		messageID = msg.Header.Get("Message-ID")
		mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
		if err != nil || !strings.HasPrefix(mediaType, "multipart/") {
			problem = fmt.Sprintf("message %s is not multipart (%q)", messageID, msg.Header.Get("Content-Type"))
		} else {
			mr := multipart.NewReader(msg.Body, params["boundary"])
			for {
				part, err := mr.NextPart()
				if err != nil {
					if !errors.Is(err, io.EOF) {
						problem = fmt.Sprintf("message %s: reading parts: %v", messageID, err)
					}
					break
				}
				b, _ := io.ReadAll(part) // quoted-printable is decoded by the reader
				texts = append(texts, b)
				if keyID == "" {
					if sm := keyIDInMail.FindSubmatch(b); sm != nil {
						keyID = string(sm[1])
					}
				}
			}
		}
		if problem == "" && (messageID == "" || keyID == "") {
			problem = fmt.Sprintf("message %q names no key id", messageID)
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	m.received++
	m.texts = append(m.texts, texts...)
	if problem != "" {
		m.problems = append(m.problems, problem)
		return
	}
	k := m.byKey[keyID]
	if k == nil {
		k = &mailKey{messageIDs: map[string]bool{}, to: map[string]bool{}}
		m.byKey[keyID] = k
	}
	k.received++
	k.messageIDs[messageID] = true
	for _, r := range to {
		k.to[strings.ToLower(r)] = true
	}
}

type mailSnapshot struct {
	byKey    map[string]mailKey
	received int
	problems []string
}

func (m *mailServer) snapshot() mailSnapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := mailSnapshot{byKey: make(map[string]mailKey, len(m.byKey)), received: m.received, problems: append([]string(nil), m.problems...)}
	for id, k := range m.byKey {
		c := mailKey{received: k.received, messageIDs: map[string]bool{}, to: map[string]bool{}}
		for x := range k.messageIDs {
			c.messageIDs[x] = true
		}
		for x := range k.to {
			c.to[x] = true
		}
		s.byKey[id] = c
	}
	return s
}

func (m *mailServer) eachText(f func([]byte)) {
	m.mu.Lock()
	texts := m.texts
	m.mu.Unlock()
	for _, b := range texts {
		f(b)
	}
}

type mailSession struct {
	m  *mailServer
	to []string
}

func (s *mailSession) Reset()        { s.to = nil }
func (s *mailSession) Logout() error { return nil }
func (s *mailSession) Mail(string, *smtp.MailOptions) error {
	return nil
}
func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *mailSession) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.m.record(s.to, raw)
	return nil
}
