package listener

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// CheckTLS returns a warning when a connection string lets the connection
// to a host other than this machine go without a verified certificate:
// sslmode disable (plaintext), allow or prefer (the default when sslmode is
// unset: unverified TLS that falls back to plaintext) or require without
// sslrootcert (unverified TLS). Anyone on the path can then read the
// traffic, the password and the keys' metadata, or pose as the server. The
// warning names the host and the fix; it never contains the password. It
// returns "" for verify-full, verify-ca, require with sslrootcert, Unix
// sockets and loopback hosts, and for a string that does not parse (the
// connection reports that).
func CheckTLS(connString string) string {
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return ""
	}
	type target struct {
		host string
		tls  []*tls.Config
	}
	var targets []*target
	add := func(host string, t *tls.Config) {
		for _, x := range targets {
			if x.host == host {
				x.tls = append(x.tls, t)
				return
			}
		}
		targets = append(targets, &target{host: host, tls: []*tls.Config{t}})
	}
	add(cfg.Host, cfg.TLSConfig)
	for _, fb := range cfg.Fallbacks {
		add(fb.Host, fb.TLSConfig)
	}
	for _, t := range targets {
		if isLocalHost(t.host) {
			continue
		}
		how := describeTLS(t.tls)
		if how == "" {
			continue
		}
		return fmt.Sprintf("ConnString connects to %s %s: anyone on the network path can read or change the traffic, the database password included. "+
			"Set sslmode=verify-full and sslrootcert to the server's CA certificate (Supabase: Project Settings → Database → SSL Configuration → Download certificate), "+
			"e.g. ...?sslmode=verify-full&sslrootcert=/etc/keyworker/supabase-ca.crt", t.host, how)
	}
	return ""
}

// describeTLS says how the attempts pgx makes to one host fall short of a
// verified certificate, or "" when every attempt verifies it.
func describeTLS(attempts []*tls.Config) string {
	plain, unverified := false, false
	for _, c := range attempts {
		switch {
		case c == nil:
			plain = true
		case c.InsecureSkipVerify && c.VerifyPeerCertificate == nil:
			unverified = true
		}
	}
	switch {
	case plain && unverified && attempts[0] != nil:
		return "with TLS that does not verify the server's certificate, falling back to plaintext (sslmode unset or prefer)"
	case plain && unverified:
		return "in plaintext, falling back to TLS that does not verify the server's certificate (sslmode=allow)"
	case plain:
		return "in plaintext (sslmode=disable)"
	case unverified:
		return "with TLS that does not verify the server's certificate (sslmode=require without sslrootcert)"
	}
	return ""
}

// isLocalHost reports whether host is a Unix socket directory or a
// loopback name or address.
func isLocalHost(host string) bool {
	if strings.HasPrefix(host, "/") || strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
