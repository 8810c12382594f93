// Package server is keyworker's one HTTP listener: the one-time key pick-up
// (POST /v1/keys/reveal), the River UI dashboard behind authentication
// (/riverui/), Prometheus metrics (/metrics), and health (/healthz, /readyz).
//
// It binds 127.0.0.1:8080 by default and refuses to serve the dashboard on a
// non-loopback address without credentials. It serves TLS when given a
// certificate and key; otherwise put a TLS-terminating proxy in front of any
// non-loopback address, since reveal responses carry a plaintext key.
//
// The server knows nothing of databases: the caller injects how tokens are
// verified and how a key is taken (RevealFunc), and what readiness means.
package server
