package accesstoken

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Sentinel reasons a token is rejected. Verify returns them wrapped in an
// *Error; compare with errors.Is.
var (
	// ErrMalformed: the token is not a compact JWS with JSON header and
	// claims: wrong segment count, bad base64url, bad JSON, a claim of the
	// wrong type, no exp claim, too large, or an unsupported critical
	// header.
	ErrMalformed = errors.New("malformed access token")
	// ErrAlgorithm: the header's alg is not one the Verifier accepts: not
	// HS256, RS256 or ES256 (none among them), a kind of key that is not
	// configured, or not the algorithm of the key its kid names.
	ErrAlgorithm = errors.New("access token algorithm not accepted")
	// ErrUnknownKey: the kid is missing or not in the key set, even after
	// refetching it.
	ErrUnknownKey = errors.New("access token signed by an unknown key")
	// ErrJWKSUnavailable: there is no key set to check RS256 and ES256
	// tokens with: it has never been fetched successfully, or its last
	// successful fetch is older than Config.JWKSMaxStaleness and refreshing
	// it fails. This is the server's problem, not the caller's (HTTP 503
	// rather than 401); the Cause says why the fetch failed.
	ErrJWKSUnavailable = errors.New("signing keys unavailable")
	// ErrSignature: the signature does not verify.
	ErrSignature = errors.New("access token signature invalid")
	// ErrExpired: exp has passed (beyond the leeway).
	ErrExpired = errors.New("access token expired")
	// ErrNotYetValid: nbf or iat is in the future (beyond the leeway).
	ErrNotYetValid = errors.New("access token not yet valid")
	// ErrAudience: aud is missing or does not contain the configured audience.
	ErrAudience = errors.New("access token audience not accepted")
	// ErrIssuer: iss does not equal the configured issuer.
	ErrIssuer = errors.New("access token issuer not accepted")
	// ErrSubject: sub is missing or not a user id (a non-nil UUID).
	ErrSubject = errors.New("access token has no user")
	// ErrRole: role is "anon": the project's anon key, not a user's session.
	ErrRole = errors.New("access token role not accepted")
)

// Error is the error Verify returns for every rejected token. Reason is one
// of the sentinel errors above; Detail says what exactly was wrong. Neither
// contains the token; Detail may quote short header or claim values (a kid, an
// audience), escaped and truncated.
type Error struct {
	// Reason is one of ErrMalformed, ErrAlgorithm, ErrUnknownKey,
	// ErrJWKSUnavailable, ErrSignature, ErrExpired, ErrNotYetValid,
	// ErrAudience, ErrIssuer, ErrSubject or ErrRole (from Verify), or
	// ErrNotUser or ErrAnonymous (from Policy.UserID).
	Reason error
	// Detail explains the rejection, for logs.
	Detail string
	// Cause, when set, is an underlying error (a failed key set fetch).
	Cause error
}

// Error returns "<reason>: <detail>", with the cause appended when set.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Reason != nil {
		b.WriteString(e.Reason.Error())
	} else {
		b.WriteString("access token rejected")
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.Cause != nil {
		b.WriteString(" (")
		b.WriteString(e.Cause.Error())
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns Reason and, when set, Cause, so errors.Is matches both.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Reason != nil {
		errs = append(errs, e.Reason)
	}
	if e.Cause != nil {
		errs = append(errs, e.Cause)
	}
	return errs
}

func reject(reason error, detail string) *Error {
	return &Error{Reason: reason, Detail: detail}
}

// quote renders a value taken from a token for an error message: escaped and
// at most 64 bytes, so a hostile token cannot flood or forge log lines.
func quote(s string) string {
	const limit = 64
	if len(s) > limit {
		// Cut on a rune boundary so the quote does not show a split rune.
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}
