package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
)

// TestReadinessSeesJetStreamGone: once the embedded server's JetStream is
// disabled (what nats-server does after a storage failure) clients stay
// connected, so the old check (connected: ok) passed while every publish
// timed out. The worker's, the holder's and run's own checks fail, naming
// JetStream.
func TestReadinessSeesJetStreamGone(t *testing.T) {
	t.Parallel()
	srv, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := broker.Provision(ctx, broker.LocalJetStreams(js, grants.Provision), broker.Topology{}); err != nil {
		t.Fatal(err)
	}
	role, err := embeddedServerRole(srv)(&process{js: js})
	if err != nil {
		t.Fatal(err)
	}
	checks := func() map[string]func() error {
		return map[string]func() error{
			"worker": workerJetStreamReady(broker.LocalJetStreams(js, grants.Worker)), "holder": holderJetStreamReady(broker.LocalJetStreams(js, grants.Holder)), "nats-server": role.Ready,
		}
	}
	for name, ready := range checks() {
		if err := ready(); err != nil {
			t.Fatalf("%s not ready on a healthy server: %v", name, err)
		}
	}

	srv.Server().DisableJetStream()
	if !nc.IsConnected() {
		t.Fatal("the client lost its connection: not the fault under test")
	}
	pctx, pcancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer pcancel()
	if _, err := js.Publish(pctx, "user.lookup", []byte(`{}`)); err == nil {
		t.Fatal("a publish succeeded without JetStream: not the fault under test")
	}
	for name, ready := range checks() {
		err := ready()
		if err == nil || !strings.Contains(err.Error(), "JetStream") {
			t.Errorf("%s ready = %v, want an error naming JetStream", name, err)
		}
	}
}
