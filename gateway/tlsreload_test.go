package gateway_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// TestTLSCertificateIsReloaded: a certificate renewed on disk is served
// from the next handshake on, without a restart; a reload that fails
// (files not PEM, a key of another certificate, a file missing) keeps
// the last good certificate and says so in the log, never with the key;
// once the files are good again, they are served.
func TestTLSCertificateIsReloaded(t *testing.T) {
	t.Parallel()
	a, b := newTestCert(t, "cert A"), newTestCert(t, "cert B")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	// replace puts content in place as renewal tools do: a new file
	// renamed over the old one.
	replace := func(file string, content []byte) {
		t.Helper()
		tmp := file + ".new"
		if err := os.WriteFile(tmp, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	replace(certFile, a.certPEM)
	replace(keyFile, a.keyPEM)
	e := startEnv(t, func(c *gateway.Config) { c.TLSCert, c.TLSKey = certFile, keyFile })

	pool := x509.NewCertPool()
	pool.AddCert(a.cert)
	pool.AddCert(b.cert)
	// A new connection, so a new handshake, for every call.
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
	served := func() string {
		t.Helper()
		resp, err := hc.Get(e.url + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].Subject.CommonName
	}
	if got := served(); got != "cert A" {
		t.Fatalf("served %q, want cert A", got)
	}

	replace(keyFile, b.keyPEM)
	replace(certFile, b.certPEM)
	wxhubtest.Eventually(t, 10*time.Second, "the renewed certificate served", func() bool { return served() == "cert B" })

	failures := func() int { return strings.Count(e.logs.String(), "TLS certificate not reloaded") }
	broken := []struct {
		name string
		do   func()
	}{
		{"certificate not PEM", func() { replace(certFile, []byte("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")) }},
		{"key of another certificate", func() { replace(certFile, a.certPEM) }},
		{"certificate missing", func() { os.Remove(certFile) }},
		{"key empty", func() { replace(certFile, b.certPEM); replace(keyFile, nil) }},
	}
	for _, c := range broken {
		before := failures()
		c.do()
		wxhubtest.Eventually(t, 10*time.Second, c.name+": the failed reload logged", func() bool {
			served()
			return failures() > before
		})
		if got := served(); got != "cert B" {
			t.Fatalf("%s: served %q, want the last good cert B", c.name, got)
		}
	}
	replace(keyFile, a.keyPEM)
	replace(certFile, a.certPEM)
	wxhubtest.Eventually(t, 10*time.Second, "good files served again", func() bool { return served() == "cert A" })

	logs := e.logs.String()
	for _, k := range [][]byte{a.keyPEM, b.keyPEM} {
		for _, line := range strings.Split(string(k), "\n") {
			if len(line) > 20 && strings.Contains(logs, line) {
				t.Fatalf("the log holds a line of a private key: %s", line)
			}
		}
	}
}
