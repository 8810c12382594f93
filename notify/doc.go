// Package notify tells a user what happened to one of their API keys: it
// was made for them (and waits to be picked up, once), rotated, revoked,
// disabled, is about to expire or has expired. Notice.Type is one of the
// Event constants (Standard Webhooks event types such as "api_key.created");
// EventID gives each (type, key) notice a stable id. A Notice carries the
// key's id, prefix, last 4, times and, for a created key, where to pick it
// up; it never carries the secret.
//
// The pick-up link: the API's reveal endpoint (Notice.RevealURL) accepts
// POST only, so emails never link it. They link Notice.PickupURL, the
// application's own pick-up page, when there is one, and otherwise tell the
// user to sign in to the application to pick the key up. Webhook payloads,
// read by backends, carry reveal_url and, when set, pickup_url.
//
// Three senders implement Sender:
//
//   - Webhook (NewWebhook, WebhookConfig) POSTs a JSON event signed as the
//     Standard Webhooks specification says (https://www.standardwebhooks.com):
//     headers webhook-id, webhook-timestamp and webhook-signature
//     ("v1,<base64 HMAC-SHA256>"). VerifyWebhook checks such a request
//     independently of the signing code, for receivers and tests.
//   - Email (NewEmail, SMTPConfig) sends a multipart/alternative message,
//     text and HTML from templates (one per format, covering every event
//     type; Subject gives the subject), over SMTP with implicit TLS, required
//     STARTTLS, or (for loopback or explicitly trusted relays) plain SMTP,
//     and AUTH PLAIN when the URL has credentials.
//   - Log (NewLog) writes one log line per notice.
//
// All of them are safe for concurrent use.
//
// # Errors
//
// Send's errors tell the caller (a River job) what to do next; test them with
// errors.As:
//
//   - *RetryableError: try again. Network errors, timeouts, a webhook
//     answering 408, 425, 429 or 5xx, an SMTP reply 4xx. RetryAfter holds the
//     webhook's Retry-After (delta-seconds or HTTP-date, at most
//     MaxRetryAfter) when it sent one.
//   - *PermanentError: give up and record why. A webhook answering 3xx
//     (redirects are not followed) or another 4xx, an SMTP reply 5xx, an SMTP
//     server that does not offer a required STARTTLS, a user with no email
//     address, an invalid notice.
//
// Messages name the sink, its address (webhook URLs without credentials or
// query string) and what it answered, with at most 1 KiB of its answer,
// control characters removed, and never a secret: no signing secret, header
// value, SMTP password or, for email, the recipient's address.
//
// # Retries
//
// The webhook payload is the same bytes on every attempt, its "timestamp" is
// the key's creation time, and webhook-id is the notice's EventID, so a
// receiver can drop duplicates. Only webhook-timestamp and the signature
// change per attempt. The email's Message-ID is derived from the EventID for
// the same reason.
package notify
