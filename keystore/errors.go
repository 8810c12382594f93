package keystore

import (
	"errors"
	"fmt"
)

// Sentinel errors, for errors.Is. Returned errors wrap them with context (the
// key id or user id, never a key).
var (
	// ErrNotFound means there is no key with the given id.
	ErrNotFound = errors.New("api key not found")

	// ErrUserNotFound means the user a key was to be made for does not exist
	// in the users table.
	ErrUserNotFound = errors.New("user not found")

	// ErrRevoked means the key is revoked (at or before now), so it cannot be
	// rotated, disabled or enabled.
	ErrRevoked = errors.New("api key is revoked")

	// ErrRevocationScheduled means a user asked to rotate a key whose
	// revocation is already scheduled (it was rotated, and is in its
	// overlap): rotating it again would leave two successors, so the
	// successor is the one to rotate. Operators (Store.Rotate) may.
	ErrRevocationScheduled = errors.New("api key's revocation is already scheduled")

	// ErrLimitReached means the user has as many live keys as the limit
	// allows (UserKeys.CreateTx, UserKeys.RotateTx). The error that wraps it
	// says how many and what to do, and names no key, so its message may be
	// shown to the user as it is: "live key limit reached: user has 5 live
	// keys, the limit is 5: revoke one first".
	ErrLimitReached = errors.New("live key limit reached")

	// ErrNothingToReveal means the user has no key waiting to be picked up:
	// none was made, it was already picked up, it was revoked, or its pick-up
	// window has passed.
	ErrNothingToReveal = errors.New("no api key is waiting to be revealed")

	// ErrRevealExpired is returned by Reveal instead of a bare
	// ErrNothingToReveal when the user has nothing to pick up but a key's
	// pick-up window has passed and its sealed secret is not purged yet. It
	// wraps ErrNothingToReveal, so callers that only test for that are right.
	ErrRevealExpired = fmt.Errorf("%w: the pick-up window has passed", ErrNothingToReveal)

	// ErrInvalid means an argument is malformed: a user id that is not a
	// uuid, an empty or too long name, an unknown source or actor, an expiry
	// in the past.
	ErrInvalid = errors.New("invalid argument")
)

// invalid returns an error wrapping ErrInvalid.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// limitReached returns the error wrapping ErrLimitReached for a user with
// live keys and the limit max.
func limitReached(live, max int) error {
	return fmt.Errorf("%w: user has %d live keys, the limit is %d: revoke one first", ErrLimitReached, live, max)
}
