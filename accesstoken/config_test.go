package accesstoken

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	secret := []byte(testSecret)
	const jwksURL = "https://abcdefghijklmnop.supabase.co/auth/v1/.well-known/jwks.json"

	tests := []struct {
		name string
		cfg  Config
		// wantErr lists substrings of the error; nil means valid.
		wantErr []string
	}{
		{name: "JWT secret only", cfg: Config{JWTSecret: secret}},
		{name: "JWKS URL only", cfg: Config{JWKSURL: jwksURL}},
		{name: "both", cfg: Config{JWTSecret: secret, JWKSURL: jwksURL}},
		{name: "http on localhost (supabase start)", cfg: Config{JWKSURL: "http://localhost:54321/auth/v1/.well-known/jwks.json"}},
		{name: "http on 127.0.0.1", cfg: Config{JWKSURL: "http://127.0.0.1:54321/auth/v1/.well-known/jwks.json"}},
		{name: "http on [::1]", cfg: Config{JWKSURL: "http://[::1]:54321/auth/v1/.well-known/jwks.json"}},
		{name: "bounds are inclusive", cfg: Config{JWTSecret: secret, Leeway: MaxLeeway, JWKSRefresh: MaxJWKSRefresh, JWKSTimeout: MaxJWKSTimeout, JWKSMaxStaleness: MaxJWKSMaxStaleness}},
		{
			name:    "neither secret nor URL names both settings",
			cfg:     Config{},
			wantErr: []string{"JWTSecret", "JWKSURL", "required"},
		},
		{
			name:    "short secret",
			cfg:     Config{JWTSecret: []byte("too-short")},
			wantErr: []string{"JWTSecret", "at least 32 bytes, got 9"},
		},
		{
			name:    "http on a public host",
			cfg:     Config{JWKSURL: "http://abcdefghijklmnop.supabase.co/auth/v1/.well-known/jwks.json"},
			wantErr: []string{"JWKSURL", "https"},
		},
		{
			name:    "other scheme",
			cfg:     Config{JWKSURL: "ftp://example.com/jwks.json"},
			wantErr: []string{"JWKSURL", `"ftp"`},
		},
		{
			name:    "relative URL",
			cfg:     Config{JWKSURL: "/auth/v1/.well-known/jwks.json"},
			wantErr: []string{"JWKSURL", "absolute https URL"},
		},
		{
			name:    "unparsable URL",
			cfg:     Config{JWKSURL: "https://exa mple.com/%zz"},
			wantErr: []string{"JWKSURL", "not a URL"},
		},
		{
			name:    "URL with credentials",
			cfg:     Config{JWKSURL: "https://user:pass@example.com/jwks.json"},
			wantErr: []string{"JWKSURL", "credentials"},
		},
		{
			name:    "negative leeway",
			cfg:     Config{JWTSecret: secret, Leeway: -time.Second},
			wantErr: []string{"Leeway must be between 0s and 5m0s, got -1s"},
		},
		{
			name:    "leeway too large",
			cfg:     Config{JWTSecret: secret, Leeway: time.Hour},
			wantErr: []string{"Leeway must be between 0s and 5m0s, got 1h0m0s"},
		},
		{
			name:    "refresh shorter than the refetch interval",
			cfg:     Config{JWKSURL: jwksURL, JWKSRefresh: time.Second},
			wantErr: []string{"JWKSRefresh must be between 30s and 24h0m0s, got 1s"},
		},
		{
			name:    "staleness shorter than the refresh",
			cfg:     Config{JWKSURL: jwksURL, JWKSMaxStaleness: 5 * time.Minute},
			wantErr: []string{"JWKSMaxStaleness must", "between the JWKS refresh interval (JWKSRefresh, 10m0s) and 168h0m0s, got 5m0s"},
		},
		{
			name:    "staleness too long",
			cfg:     Config{JWKSURL: jwksURL, JWKSMaxStaleness: 30 * 24 * time.Hour},
			wantErr: []string{"JWKSMaxStaleness must", "got 720h0m0s"},
		},
		{
			name:    "negative timeout",
			cfg:     Config{JWKSURL: jwksURL, JWKSTimeout: -time.Second},
			wantErr: []string{"JWKSTimeout must be between", "got -1s"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tt.cfg)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New: got nil error, want one containing %q", tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("New error %q does not contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "pass") && strings.Contains(tt.cfg.JWKSURL, "pass") {
				t.Errorf("New error %q repeats the URL's password", err)
			}
		})
	}
}

func TestConfigWithDefaults(t *testing.T) {
	t.Parallel()
	secret := []byte(testSecret)
	c := Config{JWTSecret: secret}.withDefaults()
	if c.Audience != DefaultAudience || c.Leeway != DefaultLeeway || c.JWKSRefresh != DefaultJWKSRefresh ||
		c.JWKSTimeout != DefaultJWKSTimeout || c.JWKSMaxStaleness != DefaultJWKSMaxStaleness || c.HTTPClient == nil || c.Now == nil || c.Issuer != "" {
		t.Errorf("withDefaults left a field unset: %+v", c)
	}
	// The secret is copied: the caller may wipe or reuse its slice.
	secret[0] = 'X'
	if c.JWTSecret[0] == 'X' {
		t.Error("withDefaults shares the caller's JWTSecret slice")
	}

	set := Config{Audience: "a", Leeway: time.Second, JWKSRefresh: time.Minute, JWKSTimeout: time.Second}.withDefaults()
	if set.Audience != "a" || set.Leeway != time.Second || set.JWKSRefresh != time.Minute || set.JWKSTimeout != time.Second {
		t.Errorf("withDefaults overwrote set fields: %+v", set)
	}
}
