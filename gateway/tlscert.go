package gateway

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// certFiles serves the TLS certificate from TLSCert and TLSKey, read
// again when either file changes, so that a renewed certificate needs no
// restart. Each handshake stats both files (cheap next to the handshake
// itself); when the modification time or size of either differs from
// the last read, the pair is loaded again. A load that fails (a file
// missing, not PEM, a key of another certificate, say while the renewal
// has written one file of two) keeps the last good certificate and is
// logged, naming the files and the error, never their contents; the
// files are tried again once they change again.
type certFiles struct {
	certFile, keyFile string
	log               *slog.Logger

	mu          sync.Mutex
	cert        *tls.Certificate // the last good one
	certS, keyS fileStamp        // of the files when last read
}

// fileStamp is what tells a file changed: its modification time and
// size (missing: the zero stamp with ok false).
type fileStamp struct {
	mod  int64 // UnixNano
	size int64
	ok   bool
}

func stampOf(file string) fileStamp {
	fi, err := os.Stat(file)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{mod: fi.ModTime().UnixNano(), size: fi.Size(), ok: true}
}

// loadCertFiles reads the pair once: a gateway does not start without a
// good certificate.
func loadCertFiles(certFile, keyFile string, log *slog.Logger) (*certFiles, error) {
	c := &certFiles{certFile: certFile, keyFile: keyFile, log: log,
		certS: stampOf(certFile), keyS: stampOf(keyFile)}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("gateway: TLS certificate: %w", err)
	}
	c.cert = &cert
	return c, nil
}

// get is the tls.Config's GetCertificate.
func (c *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cs, ks := stampOf(c.certFile), stampOf(c.keyFile)
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs == c.certS && ks == c.keyS {
		return c.cert, nil
	}
	c.certS, c.keyS = cs, ks
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		c.log.Warn("gateway: TLS certificate not reloaded, serving the previous one until the files change again", "cert", c.certFile, "key", c.keyFile, "err", err)
		return c.cert, nil
	}
	c.cert = &cert
	attrs := []any{"cert", c.certFile}
	if cert.Leaf != nil {
		attrs = append(attrs, "subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter)
	}
	c.log.Info("gateway: TLS certificate reloaded", attrs...)
	return c.cert, nil
}
