package notify

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		value string
		want  time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-5", 0},
		{"7", 7 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"3600", time.Hour},
		{"3601", time.Hour},
		{"99999999999999999999", 0}, // overflows: treated as malformed
		{"9223372036854775807", time.Hour},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{now.Add(48 * time.Hour).Format(http.TimeFormat), time.Hour},
		{"Sunday, 01-Mar-26 12:00:30 GMT", 30 * time.Second}, // RFC 850, allowed by HTTP
		{"soon", 0},
		{"1.5", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.value, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.value, got, tt.want)
		}
	}
}

func TestCleanText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 100, "plain"},
		{"a\r\nb\tc\x00d\x1b[0m", 100, "a b c d [0m"},
		{"  spaced   out  ", 100, "spaced out"},
		{"abcdef", 3, "abc…"},
		{"h\xc3\xa9llo", 2, "h…"}, // a rune cut in half is dropped
		{"\xff\xfe ok", 100, "ok"},
	}
	for _, tt := range tests {
		if got := cleanText(tt.in, tt.max); got != tt.want {
			t.Errorf("cleanText(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

func TestMessageID(t *testing.T) {
	t.Parallel()
	if got := messageID("notice_2zVabc", "keys@example.com"); got != "<notice_2zVabc@example.com>" {
		t.Errorf("messageID = %q", got)
	}
	for _, id := range []string{"", "a b", "a\r\nb", "<x>", ".x", "x..y", "é"} {
		got := messageID(id, "keys@example.com")
		if strings.Contains(got, id) && id != "" {
			t.Errorf("messageID(%q) = %q, used an unsafe id", id, got)
		}
		if !strings.HasPrefix(got, "<") || !strings.HasSuffix(got, "@example.com>") || len(got) != len("<@example.com>")+32 {
			t.Errorf("messageID(%q) = %q, want a random one", id, got)
		}
	}
	if got := messageID("notice_1", `"odd domain"@[127.0.0.1]`); got != "<notice_1@keyworker.invalid>" {
		t.Errorf("messageID with an unusual domain = %q", got)
	}
}

func TestParseSMTPURLModes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url      string
		port     string
		implicit bool
		mode     starttlsMode
		user     string
		pass     string
	}{
		{"smtp://mail.example.com", "587", false, starttlsRequire, "", ""},
		{"smtp://u:p%40ss@mail.example.com:2525", "2525", false, starttlsRequire, "u", "p@ss"},
		{"smtps://mail.example.com", "465", true, starttlsRequire, "", ""},
		{"smtp://localhost:25", "25", false, starttlsOpportunistic, "", ""},
		{"smtp://127.0.0.1", "587", false, starttlsOpportunistic, "", ""},
		{"smtp://[::1]:25", "25", false, starttlsOpportunistic, "", ""},
		{"smtp://localhost?starttls=require", "587", false, starttlsRequire, "", ""},
		{"smtp://relay.internal:25?starttls=off", "25", false, starttlsOff, "", ""},
		{"smtp://u:p@localhost:25?starttls=off", "25", false, starttlsOff, "u", "p"},
	}
	for _, tt := range tests {
		got, err := parseSMTPURL(tt.url)
		if err != nil {
			t.Errorf("parseSMTPURL(%q): %v", tt.url, err)
			continue
		}
		if got.port != tt.port || got.implicitTLS != tt.implicit || got.starttls != tt.mode || got.user != tt.user || got.pass != tt.pass {
			t.Errorf("parseSMTPURL(%q) = %+v", tt.url, got)
		}
	}
}

func TestErrorTypes(t *testing.T) {
	t.Parallel()
	base := errors.New("webhook https://x/y answered 410 Gone")
	p := permanent(base)
	if p.Error() != "webhook https://x/y answered 410 Gone: permanent failure, not retried" || !errors.Is(p, base) {
		t.Errorf("permanent: %q", p)
	}
	r := &RetryableError{Err: base, RetryAfter: 7 * time.Second}
	if r.Error() != "webhook https://x/y answered 410 Gone: temporary failure, retry after 7s" || !errors.Is(r, base) {
		t.Errorf("retryable: %q", r)
	}
	if got := retryable(base).Error(); got != "webhook https://x/y answered 410 Gone: temporary failure, will retry" {
		t.Errorf("retryable without a delay: %q", got)
	}
}
