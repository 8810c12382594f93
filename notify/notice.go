package notify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
)

// Event types: the "type" of a webhook payload, Notice.Type, and what the
// default email templates and subjects are chosen by. They follow the
// Standard Webhooks naming (resource.event); never rename one.
const (
	// EventCreated: a key was made for the user. A signup key waits to be
	// picked up once.
	EventCreated = "api_key.created"
	// EventRotated: the key was replaced by another (Notice.RotatedTo); it
	// keeps working until Notice.RevokedAt.
	EventRotated = "api_key.rotated"
	// EventRevoked: the key was revoked (Notice.RevokedAt).
	EventRevoked = "api_key.revoked"
	// EventDisabled: the key was disabled (Notice.DisabledAt); it works
	// again once enabled.
	EventDisabled = "api_key.disabled"
	// EventExpiring: the key expires soon (Notice.ExpiresAt).
	EventExpiring = "api_key.expiring"
	// EventExpired: the key has expired (Notice.ExpiresAt).
	EventExpired = "api_key.expired"
)

// EventTypes lists every event type, in the order above.
func EventTypes() []string {
	return []string{EventCreated, EventRotated, EventRevoked, EventDisabled, EventExpiring, EventExpired}
}

// KnownEventType reports whether t is one of the event types.
func KnownEventType(t string) bool {
	switch t {
	case EventCreated, EventRotated, EventRevoked, EventDisabled, EventExpiring, EventExpired:
		return true
	}
	return false
}

// EventID returns the stable id of the notice of event type eventType for
// key keyID: "notice_<key id>" for EventCreated (and an empty type), which
// receivers of earlier versions already dedupe on, and "<event>_<key id>"
// for the others ("rotated_<key id>", "expired_<key id>", ...). A key has at
// most one notice per event type that happens once (all but EventDisabled),
// so the id is the same on every retry and differs between events; a
// repeatable event's notices take OccurrenceEventID.
func EventID(eventType, keyID string) string {
	if eventType == "" || eventType == EventCreated {
		return "notice_" + keyID
	}
	return strings.TrimPrefix(eventType, "api_key.") + "_" + keyID
}

// OccurrenceEventID returns the stable id of the notice of one occurrence
// of an event that can happen to a key more than once (EventDisabled: each
// disable after an enable): EventID(eventType, keyID) + "_" + occurrence,
// or EventID(eventType, keyID) when occurrence is empty. keyworker's
// occurrence of a disable is its disabled_at in unix microseconds
// ("disabled_<key id>_1767225600000000"), so each disable's notice has its
// own id, the same on every retry.
func OccurrenceEventID(eventType, keyID, occurrence string) string {
	if occurrence == "" {
		return EventID(eventType, keyID)
	}
	return EventID(eventType, keyID) + "_" + occurrence
}

// Notice tells a user that something happened to one of their API keys: it
// was created (and where to pick it up), rotated, revoked, disabled, is
// about to expire or has expired. It describes the key (id, prefix, last 4,
// times) and never holds the secret: the plaintext of a signup key waits,
// sealed, until its owner reveals it once.
type Notice struct {
	// Type is the event, one of the Event constants. Empty means
	// EventCreated (the only notice of earlier versions). Senders pass the
	// normalised type on: a custom email template sees .Type set.
	Type string

	// EventID identifies this notice and stays the same across retries, so a
	// receiver can drop duplicates. The webhook sends it as webhook-id; the
	// email uses it for its Message-ID. Required; by convention
	// EventID(Type, KeyID), or OccurrenceEventID for an event that repeats.
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

	// OccurredAt is when the event happened: the webhook payload's
	// "timestamp", which must be the same on every retry. Zero means
	// CreatedAt (right for EventCreated).
	OccurredAt time.Time

	// ExpiresAt is when the key stops working; nil if it does not expire.
	ExpiresAt *time.Time

	// RevokedAt is when the key was, or (after a rotation) will be,
	// revoked; nil if it is not.
	RevokedAt *time.Time

	// DisabledAt is when the key was disabled; nil if it is enabled. In an
	// EventDisabled notice it is the time of that disable, even if the key
	// has been enabled (or disabled again) since.
	DisabledAt *time.Time

	// RotatedTo is the id of the key that replaced this one, for
	// EventRotated; empty otherwise.
	RotatedTo string

	// RevealURL is the API endpoint a backend calls (POST, with the user's
	// access token) to pick a signup key up: webhook payloads carry it as
	// reveal_url. It accepts POST only, so emails never link it.
	RevealURL string

	// PickupURL is the application's own page where the user picks this
	// key up, once; empty when the application has none, in which case the
	// default email tells the user to sign in to the application to pick
	// the key up. Created notices only.
	PickupURL string

	// RevealExpiresAt is when the key stops waiting to be picked up. Zero
	// when there is nothing to pick up: a key made through the API or by an
	// operator, whose plaintext was shown when it was made, and every event
	// other than EventCreated.
	RevealExpiresAt time.Time

	// Email is the user's address. The email sink needs it; the others
	// ignore it. May be empty.
	Email string
}

// normalized returns n with Type set (EventCreated when empty) and
// OccurredAt set (CreatedAt when zero).
func (n Notice) normalized() Notice {
	n.Type = cmp.Or(n.Type, EventCreated)
	if n.OccurredAt.IsZero() {
		n.OccurredAt = n.CreatedAt
	}
	return n
}

// PickUp reports whether the notice offers a key to pick up: a created
// notice with a pick-up window. Templates use it as {{if .PickUp}}.
func (n Notice) PickUp() bool {
	return (n.Type == "" || n.Type == EventCreated) && !n.RevealExpiresAt.IsZero()
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
	case n.Type != "" && !KnownEventType(n.Type):
		return fmt.Errorf("notice has unknown Type %q (want one of %s)", n.Type, strings.Join(EventTypes(), ", "))
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
