// Package keyauth checks keyworker API keys in applications: a Checker
// that asks keyworker (Remote, over HTTP) or the database (Postgres, the
// SQL function verify_api_key), and net/http middleware that lets through
// only requests carrying a valid key.
//
// # Usage
//
//	checker := keyauth.Postgres(pool, "keyworker") // or keyauth.Remote(keyworkerURL, verifyToken)
//	requireKey := keyauth.Middleware(checker, keyauth.Options{CacheTTL: 30 * time.Second})
//	mux.Handle("/api/", requireKey(api))
//	// in api's handlers:
//	userID, _ := keyauth.UserID(r.Context())
//
// Clients send the key as Authorization: Bearer <key> (or in
// Options.APIKeyHeader). A request without a valid key gets 401 with a
// WWW-Authenticate challenge and one body, whatever the reason:
//
//	{"error":"a valid API key is required","code":"invalid_api_key"}
//
// so a caller cannot tell an unknown key from a revoked, expired or
// disabled one. A check that cannot be made (database or keyworker down)
// gets 503 with code key_check_unavailable, never a pass.
//
// # Which Checker
//
// Postgres suits an app that already connects to the database keyworker
// uses: one query per check, through any role with EXECUTE on
// <schema>.verify_api_key (Supabase's service_role has it). Remote suits
// any other app: it calls POST /v1/keys/verify with a service token from
// keyworker's verify tokens, under a timeout. Both answer not_found for a
// string that is not a well-formed key without asking anyone, and neither
// puts the key or the token in an error.
//
// # Caching and staleness
//
// Options.CacheTTL (at most 5 minutes; 0, the default, turns it off) keeps
// valid results, under the SHA-256 of the key, in a bounded in-memory cache
// of each process. It saves the query or request for a key used again; the
// price is that revoking, disabling or expiring a key takes effect in the
// app up to CacheTTL late: a key refused by keyworker from time T on may
// still be accepted until T+CacheTTL, and by no request after. Refusals are
// never cached, so the cache does not shield the database from a flood of
// wrong keys: rate-limit those in front of the middleware.
//
// # Dependencies
//
// keyauth imports net/http, pgx's Row interface and keyworker's pure keys
// package; it does not pull in River or the daemon.
package keyauth
