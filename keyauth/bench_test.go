package keyauth_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/keyworker/keyworker/keyauth"
)

// BenchmarkMiddleware measures one request through the middleware with a
// valid key checked by verify_api_key on a local Postgres, without the
// cache (every request queries) and with it (after the first).
func BenchmarkMiddleware(b *testing.B) {
	f := setup(b)
	key, _ := f.newKey(b)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	for _, bc := range []struct {
		name string
		o    keyauth.Options
	}{
		{"no_cache", keyauth.Options{}},
		{"cache_1m", keyauth.Options{CacheTTL: time.Minute}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := keyauth.Middleware(keyauth.Postgres(f.db, "keyworker"), bc.o)(ok)
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.Header.Set("Authorization", "Bearer "+key)
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("status %d", w.Code)
				}
			}
		})
	}
}
