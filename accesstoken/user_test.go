package accesstoken

import (
	"errors"
	"strings"
	"testing"
)

// TestPolicyUserID: only a signed-in user's session names a user who may
// use keys; an anonymous user only when the policy admits them; a refusal
// is an *Error with its own sentinel, tells the holder what to do, and names
// no server setting.
func TestPolicyUserID(t *testing.T) {
	t.Parallel()
	user := Claims{Subject: testUserID, Role: RoleAuthenticated}
	anonymous := Claims{Subject: testUserID, Role: RoleAuthenticated, IsAnonymous: true}
	for _, c := range []struct {
		name   string
		policy Policy
		claims Claims
		want   error  // nil: admitted
		says   string // in the refusal
	}{
		{"signed-in user", Policy{}, user, nil, ""},
		{"anonymous user, admitted", Policy{IncludeAnonymous: true}, anonymous, nil, ""},
		{"anonymous user", Policy{}, anonymous, ErrAnonymous, "sign in with an account"},
		{"service role", Policy{IncludeAnonymous: true}, Claims{Subject: testUserID, Role: "service_role"}, ErrNotUser, `role "service_role" may not use keys: sign in as the user`},
		{"no role", Policy{}, Claims{Subject: testUserID}, ErrNotUser, `role ""`},
		{"long role", Policy{}, Claims{Subject: testUserID, Role: strings.Repeat("r", 200)}, ErrNotUser, `"... may not use keys`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			id, err := c.policy.UserID(c.claims)
			if c.want == nil {
				if err != nil || id != c.claims.Subject {
					t.Fatalf("UserID = %q, %v; want %q", id, err, c.claims.Subject)
				}
				return
			}
			var rejected *Error
			if !errors.Is(err, c.want) || !errors.As(err, &rejected) || id != "" {
				t.Fatalf("UserID = %q, %v; want an *Error wrapping %v", id, err, c.want)
			}
			if !strings.Contains(err.Error(), c.says) {
				t.Errorf("refusal %q does not say %q", err, c.says)
			}
			if strings.Contains(err.Error(), "KEYWORKER_") || strings.Contains(err.Error(), "IncludeAnonymous") {
				t.Errorf("refusal %q names a server setting", err)
			}
			if len(err.Error()) > 200 {
				t.Errorf("refusal is %d bytes: a claim value was not cut", len(err.Error()))
			}
		})
	}
}
