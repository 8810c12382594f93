// Package server is keyworker's one HTTP listener: the HTTP API under /v1/
// (the one-time key pick-up POST /v1/keys/reveal; end users' own keys at
// /v1/keys; POST /v1/keys/verify for backends; its OpenAPI 3.1 document at
// /v1/openapi.json), the River UI dashboard behind authentication
// (/riverui/), Prometheus metrics (/metrics), and health (/healthz, /readyz).
//
// It binds 127.0.0.1:8080 by default and refuses to serve the dashboard (or
// /metrics) on a non-loopback address without credentials. It serves TLS when
// given a certificate and key; otherwise put a TLS-terminating proxy in front
// of any non-loopback address, since reveal, create and rotate answers carry
// a plaintext key.
//
// The API's operations are one table (apiRoutes) that feeds the mux, the
// Allow headers, CORS and the test holding openapi.json to the routes. Every
// API answer is JSON with Cache-Control: no-store; every error, the mux's
// 404 and 405 included, has the shape {"error": "...", "code": "..."} with a
// stable code. The user endpoints take the user's Supabase access token
// (Config.VerifyToken) and act through Config.Keys, a KeyService, on that
// user's keys only; verify takes a service token (Config.VerifyTokens),
// never a user's.
//
// Every request passes a guard first: on a loopback address the Host header
// must name this machine or the public URL's host (DNS rebinding, 421
// otherwise); request bodies are bounded (MaxRequestBody, MaxDashboardBody);
// and cross-origin browser writes are refused (http.CrossOriginProtection),
// which leaves curl and Go clients, which send neither Origin nor
// Sec-Fetch-Site, untouched. The API's user endpoints trust, beyond that, the
// browser apps of Config.CORSOrigins: their preflights are answered and their
// answers carry Access-Control-Allow-Origin (never -Allow-Credentials);
// verify never answers CORS, and the dashboard does not trust those origins.
// Wrong dashboard credentials and wrong service tokens are throttled per
// client address, and reveal and the keys API are limited per user and per
// client address (IPv6 per /64), with token buckets that forget idle
// clients. The client address is the connection's peer, or behind
// TrustedProxies the right-most untrusted hop of X-Forwarded-For.
//
// /metrics is served on its own listener (MetricsAddr) without credentials,
// or on the main one behind the dashboard's credentials.
//
// The server knows nothing of databases: the caller injects how tokens are
// verified, how a key is taken (RevealFunc) and what is done with keys
// (KeyService), and what readiness means.
package server
