package keyauth_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/keyworker/keyworker/keyauth"
	"github.com/keyworker/keyworker/keys"
)

// TestPostgresCheckerStatuses checks every kind of presented key gets the
// status verify_api_key gives it, with the owner's ids only when the secret
// was right, through the role an app connects as (service_role).
func TestPostgresCheckerStatuses(t *testing.T) {
	t.Parallel()
	f := setup(t)
	valid, validID := f.newKey(t)
	revoked, revokedID := f.newKey(t)
	f.revoke(t, revokedID, time.Now().Add(-time.Second))
	scheduled, scheduledID := f.newKey(t)
	f.revoke(t, scheduledID, time.Now().Add(time.Hour))
	expired, expiredID := f.newKey(t)
	f.expire(t, expiredID)

	q := &countingQuerier{db: f.servicePool(t)}
	c := keyauth.Postgres(q, "") // "" is the default schema, keyworker
	for _, tc := range []struct {
		name    string
		key     string
		want    keys.Status
		keyID   string
		queried bool
	}{
		{"valid", valid, keys.StatusValid, validID, true},
		{"scheduled revocation still valid", scheduled, keys.StatusValid, scheduledID, true},
		{"revoked", revoked, keys.StatusRevoked, revokedID, true},
		{"expired", expired, keys.StatusExpired, expiredID, true},
		{"unknown id", unknownKey(t), keys.StatusNotFound, "", true},
		{"wrong secret", f.wrongSecretKey(t), keys.StatusNotFound, "", true},
		{"empty", "", keys.StatusNotFound, "", false},
		{"garbage", "hello", keys.StatusNotFound, "", false},
		{"checksum broken", valid[:len(valid)-1] + flip(valid[len(valid)-1]), keys.StatusNotFound, "", false},
		{"whitespace around", " " + valid, keys.StatusNotFound, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := q.n.Load()
			r, err := c.Check(context.Background(), tc.key)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if r.Status != tc.want || r.KeyID != tc.keyID || r.Valid() != (tc.want == keys.StatusValid) {
				t.Fatalf("Check = %+v, want status %s, key id %q", r, tc.want, tc.keyID)
			}
			if wantUser := tc.keyID != ""; (r.UserID == f.user) != wantUser || (!wantUser && r.UserID != "") {
				t.Errorf("UserID = %q, want %q only when the secret is right", r.UserID, f.user)
			}
			if queried := q.n.Load() > before; queried != tc.queried {
				t.Errorf("queried the database: %v, want %v (a malformed key needs no lookup)", queried, tc.queried)
			}
		})
	}

	t.Run("disabled", func(t *testing.T) {
		key, id := f.newKey(t)
		if !f.disableKey(t, id) {
			t.Skip("api_keys.disabled_at does not exist yet (migration 006)")
		}
		r, err := c.Check(context.Background(), key)
		if err != nil || r.Status != keys.StatusDisabled || r.KeyID != id || r.UserID != f.user {
			t.Fatalf("Check = %+v, %v; want disabled with the ids", r, err)
		}
	})
}

// TestPostgresCheckerErrors checks a check that cannot be made is an error
// that names what failed and never contains the key.
func TestPostgresCheckerErrors(t *testing.T) {
	t.Parallel()
	f := setup(t)
	key, id := f.newKey(t)

	_, err := keyauth.Postgres(f.db, "nosuchschema").Check(context.Background(), key)
	if err == nil || !strings.Contains(err.Error(), "nosuchschema") || !strings.Contains(err.Error(), id) {
		t.Errorf("wrong schema: err = %v, want one naming the schema and the key id", err)
	}
	noKey(t, err, key)

	// A schema name is quoted, never spliced: this one is not an injection.
	_, err = keyauth.Postgres(f.db, `keyworker".verify_api_key($1); --`).Check(context.Background(), key)
	if err == nil {
		t.Error("a schema name with a quote ran a query")
	}
	noKey(t, err, key)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = keyauth.Postgres(f.db, "keyworker").Check(ctx, key)
	if err == nil {
		t.Error("Check with a cancelled context succeeded")
	}
	noKey(t, err, key)
}

// noKey fails the test when err's message contains secret.
func noKey(t *testing.T, err error, secret string) {
	t.Helper()
	if err != nil && secret != "" && strings.Contains(err.Error(), secret) {
		t.Errorf("error contains the secret: %v", err)
	}
}

// flip returns another base62 character than c.
func flip(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}
