package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
)

func TestProvisionIsIdempotent(t *testing.T) {
	env := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := broker.Provision(ctx, broker.LocalJetStreams(env.JS, grants.Provision), broker.Topology{}); err != nil {
		t.Fatalf("second provision: %v", err)
	}
	for _, name := range []string{events.StreamJobs, events.StreamResults, events.StreamTokenEvents, events.StreamDeadLetters} {
		if _, err := env.JS.Stream(ctx, name); err != nil {
			t.Errorf("stream %s: %v", name, err)
		}
	}
	kv, err := env.JS.KeyValue(ctx, events.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	// A per-key TTL needs LimitMarkerTTL on the bucket.
	if _, err := kv.Create(ctx, "app", []byte("h1"), jetstream.KeyTTL(time.Minute)); err != nil {
		t.Fatalf("create with TTL: %v", err)
	}
}

func TestConnConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  broker.ConnConfig
		ok   bool
	}{
		{"url only", broker.ConnConfig{URL: "nats://127.0.0.1:4222"}, true},
		{"no url", broker.ConnConfig{}, false},
		{"cert without key", broker.ConnConfig{URL: "nats://x", TLSCert: "c.pem"}, false},
		{"password without user", broker.ConnConfig{URL: "nats://x", Password: "p"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestEmbeddedWithoutStoreDirIsPrivate(t *testing.T) {
	// Two servers without a StoreDir must not share JetStream data.
	a, err := broker.StartEmbedded(broker.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	b, err := broker.StartEmbedded(broker.EmbeddedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()
	da, db := a.Server().StoreDir(), b.Server().StoreDir()
	if da == "" || da == db {
		t.Fatalf("store dirs %q and %q", da, db)
	}
}

func TestProvisionConcurrently(t *testing.T) {
	// Every role provisions at start, often at the same moment.
	srv, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	errs := make(chan error, 6)
	for range 6 {
		go func() {
			nc, err := broker.Connect(broker.ConnConfig{URL: srv.ClientURL()})
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			errs <- broker.Provision(ctx, broker.LocalJetStreams(js, grants.Provision), broker.Topology{})
		}()
	}
	for range 6 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent provision: %v", err)
		}
	}
}

func TestProvisionGivesUpAtTheDeadline(t *testing.T) {
	// A server without JetStream never answers the JetStream API.
	srv, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := broker.Connect(broker.ConnConfig{URL: srv.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.NewWithDomain(nc, "nowhere")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := broker.Provision(ctx, broker.LocalJetStreams(js, grants.Provision), broker.Topology{}); err == nil {
		t.Fatal("want an error once the deadline passes")
	}
}
