package broker

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig configures an in-process nats-server with JetStream.
type EmbeddedConfig struct {
	// Host to listen on; "" means 127.0.0.1.
	Host string
	// Port to listen on; 0 picks a free port (server.RANDOM_PORT), -1 is
	// also accepted with the same meaning.
	Port int
	// StoreDir is the JetStream storage folder. Empty means a fresh
	// temporary folder, removed by Shutdown (data is then not kept).
	StoreDir string
	// ServerName names the server; "" lets the server pick one.
	ServerName string
	// Logging turns on the server's own log output (stderr).
	Logging bool
}

// Embedded is a running in-process NATS server.
type Embedded struct {
	srv    *server.Server
	tmpDir string // removed at Shutdown when we created it
}

// StartEmbedded starts a nats-server with JetStream in this process and
// waits until it accepts connections. The server never installs signal
// handlers (NoSigs), so SIGTERM stays with the program.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port := cfg.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if port > 0 {
		if err := checkPortFree(net.JoinHostPort(host, strconv.Itoa(port))); err != nil {
			return nil, err
		}
	}
	var tmpDir string
	if cfg.StoreDir == "" {
		d, err := os.MkdirTemp("", "wxhub-nats-")
		if err != nil {
			return nil, fmt.Errorf("broker: temporary JetStream folder: %w", err)
		}
		tmpDir, cfg.StoreDir = d, d
	}
	opts := &server.Options{
		ServerName: cfg.ServerName,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		NoLog:      !cfg.Logging,
		// Jobs and results are small; 8 MiB is the default max payload.
		MaxPayload: 1 << 20,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		if tmpDir != "" {
			os.RemoveAll(tmpDir)
		}
		return nil, fmt.Errorf("broker: embedded nats-server: %w", err)
	}
	if cfg.Logging {
		srv.ConfigureLogger()
	}
	go srv.Start()
	e := &Embedded{srv: srv, tmpDir: tmpDir}
	if !srv.ReadyForConnections(10 * time.Second) {
		e.Shutdown()
		if port > 0 {
			// Taken between the check and the server's listen?
			if err := checkPortFree(net.JoinHostPort(host, strconv.Itoa(port))); err != nil {
				return nil, err
			}
		}
		return nil, errors.New("broker: embedded nats-server not ready after 10s")
	}
	if !srv.JetStreamEnabled() {
		e.Shutdown()
		return nil, fmt.Errorf("broker: embedded nats-server started without JetStream (store %s)", cfg.StoreDir)
	}
	return e, nil
}

// ClientURL returns the nats:// URL clients connect to.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Server returns the underlying nats-server.
func (e *Embedded) Server() *server.Server { return e.srv }

// Shutdown stops the server and waits until it is down. JetStream data in
// a configured StoreDir is flushed and kept; a temporary one is removed.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	if e.tmpDir != "" {
		os.RemoveAll(e.tmpDir)
	}
}
