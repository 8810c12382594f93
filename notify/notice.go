package notify

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
)

// Notice tells a user that an API key was created for them and where to pick
// it up. It describes the key (id, prefix, last 4, times) and never holds the
// secret: the plaintext waits, sealed, until its owner reveals it once.
type Notice struct {
	// EventID identifies this notice and stays the same across retries, so a
	// receiver can drop duplicates. The webhook sends it as webhook-id; the
	// email uses it for its Message-ID. Required; by convention
	// "notice_<key id>".
	EventID string

	// KeyID is the key's public id (its KSUID). Required.
	KeyID string

	// UserID is the id of the user who owns the key. Required.
	UserID string

	// Prefix is the key's prefix, such as "sk" or "acme_live". The default
	// templates show the key as keys.Key's String does:
	// <Prefix>_<KeyID>_…<Last4>.
	Prefix string

	// Last4 is the last four characters of the key, to tell keys apart.
	Last4 string

	// CreatedAt is when the key was created.
	CreatedAt time.Time

	// ExpiresAt is when the key stops working; nil if it does not expire.
	ExpiresAt *time.Time

	// RevealURL is where the user picks the key up, once.
	RevealURL string

	// RevealExpiresAt is when the key stops waiting to be picked up.
	RevealExpiresAt time.Time

	// Email is the user's address. The email sink needs it; the others
	// ignore it. May be empty.
	Email string
}

// validate checks the fields every sink relies on.
func (n Notice) validate() error {
	switch {
	case n.EventID == "":
		return errors.New("notice has no EventID")
	case n.KeyID == "":
		return errors.New("notice has no KeyID")
	case n.UserID == "":
		return errors.New("notice has no UserID")
	}
	return nil
}

// Sender delivers a Notice to one sink. Implementations in this package are
// safe for concurrent use.
//
// Send returns nil once the sink has accepted the notice. Otherwise its error
// is, or wraps, a *RetryableError (try again later, honouring RetryAfter) or
// a *PermanentError (trying again will not help). Either way the message names
// the sink and what it answered, and never carries a secret.
type Sender interface {
	// Name names the sink: "webhook", "email" or "log".
	Name() string
	// Send delivers n, within ctx.
	Send(ctx context.Context, n Notice) error
}

// RetryableError reports a failure that may pass: a network error, a timeout,
// a webhook answering 408, 425, 429 or 5xx, an SMTP server answering 4xx.
type RetryableError struct {
	// Err describes the failure.
	Err error
	// RetryAfter is how long the sink asked us to wait (a webhook's
	// Retry-After, capped at MaxRetryAfter); zero when it did not say, in
	// which case the caller's own backoff applies.
	RetryAfter time.Duration
}

// Error implements error.
func (e *RetryableError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("%v: temporary failure, retry after %s", e.Err, e.RetryAfter)
	}
	return fmt.Sprintf("%v: temporary failure, will retry", e.Err)
}

// Unwrap returns Err.
func (e *RetryableError) Unwrap() error { return e.Err }

// PermanentError reports a failure that trying again will not fix: a webhook
// answering 3xx or 4xx (other than 408, 425, 429), an SMTP server answering
// 5xx, a user with no email address, an invalid notice.
type PermanentError struct {
	// Err describes the failure.
	Err error
}

// Error implements error.
func (e *PermanentError) Error() string {
	return fmt.Sprintf("%v: permanent failure, not retried", e.Err)
}

// Unwrap returns Err.
func (e *PermanentError) Unwrap() error { return e.Err }

func retryable(err error) error { return &RetryableError{Err: err} }

func permanent(err error) error { return &PermanentError{Err: err} }

// cleanText makes text from a peer (a response body, an SMTP reply) safe to
// put in an error message: control characters become spaces, runs of spaces
// collapse, and the result is cut to max bytes.
func cleanText(s string, max int) string {
	truncated := false
	if len(s) > max {
		s, truncated = s[:max], true
	}
	s = strings.ToValidUTF8(s, "")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if truncated {
		s += "…"
	}
	return s
}
