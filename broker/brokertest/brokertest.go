// Package brokertest starts a real embedded nats-server with JetStream for
// tests, provisioned with wxhub's streams and buckets.
package brokertest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
)

// Env is a running test server and a client connection to it.
type Env struct {
	Server *broker.Embedded
	URL    string
	NC     *nats.Conn
	JS     jetstream.JetStream
}

// Start starts an embedded server storing under t.TempDir(), provisions the
// default topology and registers cleanup.
func Start(tb testing.TB) *Env {
	tb.Helper()
	srv, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("start nats: %v", err)
	}
	tb.Cleanup(srv.Shutdown)
	env := &Env{Server: srv, URL: srv.ClientURL()}
	env.NC = env.Conn(tb)
	env.JS, err = jetstream.New(env.NC)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := broker.Provision(ctx, broker.LocalJetStreams(env.JS, grants.Provision), broker.Topology{}); err != nil {
		tb.Fatal(err)
	}
	return env
}

// Conn opens another connection, closed at cleanup.
func (e *Env) Conn(tb testing.TB) *nats.Conn {
	tb.Helper()
	nc, err := broker.Connect(broker.ConnConfig{URL: e.URL, Name: tb.Name()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// StartConfig starts an in-process nats-server from conf, the text of a
// nats-server configuration file (accounts, users, imports and exports:
// e.g. a slice of wxhub's accounts layout), with JetStream storing under
// tb.TempDir(), nothing provisioned. Each edit may change the options
// before the server starts. It returns the client URL.
func StartConfig(tb testing.TB, conf string, edit ...func(*server.Options)) string {
	tb.Helper()
	dir := tb.TempDir()
	file := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	o, err := server.ProcessConfigFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	o.JetStream, o.StoreDir, o.NoLog, o.NoSigs = true, filepath.Join(dir, "js"), true, true
	for _, e := range edit {
		e(o)
	}
	s, err := server.NewServer(o)
	if err != nil {
		tb.Fatal(err)
	}
	go s.Start()
	tb.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats-server not ready")
	}
	return s.ClientURL()
}
