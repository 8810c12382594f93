package accesstoken

import "errors"

// RoleAuthenticated is the role claim of a signed-in user's session.
const RoleAuthenticated = "authenticated"

// Reasons Policy.UserID refuses a verified token. It returns them wrapped in
// an *Error; compare with errors.Is.
var (
	// ErrNotUser: the role claim is not "authenticated": the token is a
	// service's (service_role) or another role's, not a signed-in user's
	// session, so it names nobody whose keys it may use.
	ErrNotUser = errors.New("access token is not a signed-in user's")
	// ErrAnonymous: the user signed in anonymously and the Policy does not
	// admit anonymous users.
	ErrAnonymous = errors.New("anonymous users may not use keys")
)

// Policy says which holders of a verified token may use keys: signed-in
// users (role "authenticated"), and those who signed in anonymously only
// when IncludeAnonymous is set. The zero Policy admits signed-in users with
// an account. A Policy is a value; it is safe for concurrent use.
type Policy struct {
	// IncludeAnonymous admits users who signed in anonymously
	// (Claims.IsAnonymous). Defaults to false: such users get no signup
	// key, so they may not make keys either.
	IncludeAnonymous bool
}

// UserID returns the id of the user claims name (Claims.Subject) when that
// user may use keys, or an *Error wrapping ErrNotUser or ErrAnonymous. The
// refusals speak to the token's holder (sign in as the user, with an
// account) and name no server setting.
func (p Policy) UserID(c Claims) (string, error) {
	if c.Role != RoleAuthenticated {
		return "", reject(ErrNotUser, "role "+quote(c.Role)+" may not use keys: sign in as the user")
	}
	if c.IsAnonymous && !p.IncludeAnonymous {
		return "", reject(ErrAnonymous, "sign in with an account")
	}
	return c.Subject, nil
}
