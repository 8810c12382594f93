// Package server is keyworker's one HTTP listener: the one-time key pick-up
// (POST /v1/keys/reveal), the River UI dashboard behind authentication
// (/riverui/), Prometheus metrics (/metrics), and health (/healthz, /readyz).
//
// It binds 127.0.0.1:8080 by default and refuses to serve the dashboard (or
// /metrics) on a non-loopback address without credentials. It serves TLS when
// given a certificate and key; otherwise put a TLS-terminating proxy in front
// of any non-loopback address, since reveal responses carry a plaintext key.
//
// Every request passes a guard first: on a loopback address the Host header
// must name this machine or the public URL's host (DNS rebinding, 421
// otherwise); request bodies are bounded (MaxRequestBody, MaxDashboardBody);
// and cross-origin browser writes are refused (http.CrossOriginProtection),
// which leaves curl and Go clients, which send neither Origin nor
// Sec-Fetch-Site, untouched. Wrong dashboard credentials are throttled per
// client address, and reveal is limited per user and per client address
// (IPv6 per /64), with token buckets that forget idle clients. The client
// address is the connection's peer, or behind TrustedProxies the right-most
// untrusted hop of X-Forwarded-For.
//
// /metrics is served on its own listener (MetricsAddr) without credentials,
// or on the main one behind the dashboard's credentials.
//
// The server knows nothing of databases: the caller injects how tokens are
// verified and how a key is taken (RevealFunc), and what readiness means.
package server
