package server

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyworker/keyworker/internal/testenv"
)

func TestServesTLSWithACertificate(t *testing.T) {
	t.Parallel()
	c := testenv.SelfSigned(t, "keyworker test")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, c.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, c.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	s := testServer(t, Config{Addr: "127.0.0.1:0", TLSCertFile: certFile, TLSKeyFile: keyFile})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.Pool}}}
	resp, err := client.Get("https://" + s.Addr() + "/healthz")
	if err != nil {
		t.Fatalf("HTTPS request: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("status %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	// Plain HTTP to the TLS port does not get the service.
	if resp, err := http.Get("http://" + s.Addr() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP answered 200 on the TLS port")
		}
	}

	// Unreadable files fail Start, naming the problem.
	bad := testServer(t, Config{Addr: "127.0.0.1:0", TLSCertFile: filepath.Join(dir, "nope.pem"), TLSKeyFile: keyFile})
	if err := bad.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "loading TLS certificate") {
		t.Fatalf("missing certificate: %v", err)
	}
	if _, err := New(Config{TLSCertFile: certFile}); err == nil || !strings.Contains(err.Error(), "TLSKeyFile") {
		t.Fatalf("certificate without key: %v", err)
	}
}
