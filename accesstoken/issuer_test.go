package accesstoken

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestIssuerFromJWKSURL(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ jwks, want string }{
		{"https://abcdefghijklmnop.supabase.co/auth/v1/.well-known/jwks.json", "https://abcdefghijklmnop.supabase.co/auth/v1"},
		{"http://127.0.0.1:54321/auth/v1/.well-known/jwks.json", "http://127.0.0.1:54321/auth/v1"},
		{"https://auth.example.com/auth/v1/.well-known/jwks.json", "https://auth.example.com/auth/v1"},
		{"https://example.com/.well-known/jwks.json", "https://example.com"},
		{"https://example.com/keys.json", ""},
		{"https://example.com/auth/v1/.well-known/jwks.json?v=2", ""},
	} {
		if got := issuerFromJWKSURL(tt.jwks); got != tt.want {
			t.Errorf("issuerFromJWKSURL(%q) = %q, want %q", tt.jwks, got, tt.want)
		}
	}
}

// TestIssuerDerivedFromJWKSURL: with a JWKS URL and no Issuer, tokens must
// carry the issuer Supabase Auth puts beside that key set, whatever their
// algorithm; another iss, or none, is refused.
func TestIssuerDerivedFromJWKSURL(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	f := setup(t, func(c *Config) { c.Issuer = "" })
	ctx := context.Background()
	derived := f.jwks.srv.URL + "/auth/v1"
	now := f.clock.Now()

	for _, tt := range []struct {
		name    string
		token   string
		wantErr error
	}{
		{"RS256 with the derived iss", signToken(t, rs256("rsa-1"), with(userClaims(now), "iss", derived), keys.rsa1), nil},
		{"HS256 with the derived iss", signToken(t, hs256(""), with(userClaims(now), "iss", derived), []byte(testSecret)), nil},
		{"RS256 from another project", signToken(t, rs256("rsa-1"), userClaims(now), keys.rsa1), ErrIssuer},
		{"HS256 from another project", signToken(t, hs256(""), userClaims(now), []byte(testSecret)), ErrIssuer},
		{"ES256 without iss", signToken(t, es256("ec-1"), with(userClaims(now), "iss", nil), keys.ec1), ErrIssuer},
		{"iss with a trailing slash", signToken(t, hs256(""), with(userClaims(now), "iss", derived+"/"), []byte(testSecret)), ErrIssuer},
		{"iss not a string", signToken(t, hs256(""), with(userClaims(now), "iss", 1), []byte(testSecret)), ErrIssuer},
	} {
		_, err := f.v.Verify(ctx, tt.token)
		if tt.wantErr == nil {
			if err != nil {
				t.Errorf("%s: Verify: %v", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: Verify error = %v, want %v", tt.name, err, tt.wantErr)
		}
	}
}

func TestIssuerRequiredWhenItCannotBeDerived(t *testing.T) {
	t.Parallel()
	_, err := New(Config{JWKSURL: "https://keys.example.com/jwks"})
	if err == nil || !strings.Contains(err.Error(), "Issuer is required") {
		t.Fatalf("New without a derivable issuer: error = %v, want one naming Issuer", err)
	}
	if _, err := New(Config{JWKSURL: "https://keys.example.com/jwks", Issuer: testIssuer}); err != nil {
		t.Fatalf("New with Issuer set: %v", err)
	}
}
