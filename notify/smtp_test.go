package notify_test

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyworker/keyworker/notify"
)

// TestEmailTimeoutHoldsPastTheGreeting: go-smtp's client sets deadlines of
// its own around each command (minutes long); the attempt's Timeout still
// bounds a server that stalls after accepting the message's bytes, over
// STARTTLS too.
func TestEmailTimeoutHoldsPastTheGreeting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"clear", false}, {"STARTTLS", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := smtpOptions{dataDelay: 3 * time.Second}
			cfg := notify.SMTPConfig{Timeout: 300 * time.Millisecond}
			if tc.tls {
				serverTLS, pool := selfSigned(t)
				opts.tls = serverTLS
				cfg.TLSConfig = &tls.Config{RootCAs: pool}
			}
			srv := startSMTP(t, opts)
			cfg.URL = "smtp://" + srv.addr
			if !tc.tls {
				cfg.URL += "?starttls=off"
			}
			e := newEmail(t, cfg)
			start := time.Now()
			err := e.Send(t.Context(), testNotice(t))
			var re *notify.RetryableError
			if !errors.As(err, &re) || !strings.Contains(err.Error(), "timed out after 300ms during end of DATA") {
				t.Fatalf("Send = %v, want a RetryableError naming the timeout at the end of DATA", err)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("Send took %s with a 300ms timeout", took)
			}
		})
	}
}
