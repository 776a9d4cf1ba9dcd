package broker_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
)

// `wxhub provision --replicas 3` on a cluster of three, as production
// runs it: the first run, a second one (through another server) and a
// run with other settings (through the third) all succeed, and each
// leaves every stream, bucket and durable as the topology says, on three
// servers.
//
// Not tested here, as it takes 10 s: runs at once on a fresh cluster
// also succeed, but JetStream leaves all but one request to create a
// stream unanswered, so the others wait for their attempt's 10 s
// timeout (retry) and find it made.
func TestProvisionOnAClusterOfThreeIsIdempotentAndUpdates(t *testing.T) {
	urls := brokertest.StartCluster(t, 3)
	views := make([]*broker.JetStreams, len(urls))
	for i, u := range urls {
		nc, err := nats.Connect(u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		views[i] = broker.LocalJetStreams(js, grants.Provision)
	}
	provision := func(view *broker.JetStreams, topo broker.Topology) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return broker.Provision(ctx, view, topo)
	}
	r3 := broker.Topology{Replicas: 3}
	if err := provision(views[0], r3); err != nil {
		t.Fatalf("first run: %v", err)
	}
	check(t, views[0].Local(), r3)
	if err := provision(views[1], r3); err != nil {
		t.Fatalf("second run: %v", err)
	}
	check(t, views[0].Local(), r3)
	changed := broker.Topology{Replicas: 3, DuplicateWindow: 20 * time.Minute, JobMaxAge: 48 * time.Hour, ResultMaxAge: time.Hour,
		AckWait: 30 * time.Second, MaxDeliver: 7, MaxAckPending: 100}
	if err := provision(views[2], changed); err != nil {
		t.Fatalf("run with other settings: %v", err)
	}
	check(t, views[0].Local(), changed)
	// Run by hand without --replicas (1): refused, nothing scaled down.
	err := provision(views[0], broker.Topology{})
	if !errors.Is(err, broker.ErrScaleDown) || !strings.Contains(err.Error(), "--replicas 3") {
		t.Fatalf("provision with 1 replica over 3: %v, want ErrScaleDown naming --replicas 3", err)
	}
	check(t, views[0].Local(), changed)
}

// check compares what the cluster holds with what topo provisions.
func check(t *testing.T, js jetstream.JetStream, topo broker.Topology) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, want := range topo.StreamConfigs() {
		s, err := js.Stream(ctx, want.Name)
		if err != nil {
			t.Fatalf("stream %s: %v", want.Name, err)
		}
		got := s.CachedInfo().Config
		if got.Replicas != 3 || got.MaxAge != want.MaxAge || got.Duplicates != want.Duplicates || !slices.Equal(got.Subjects, want.Subjects) {
			t.Errorf("stream %s: replicas %d, max age %v, duplicates %v, subjects %v; want 3, %v, %v, %v",
				want.Name, got.Replicas, got.MaxAge, got.Duplicates, got.Subjects, want.MaxAge, want.Duplicates, want.Subjects)
		}
	}
	for _, want := range topo.BucketConfigs() {
		s, err := js.Stream(ctx, grants.KVStream(want.Bucket))
		if err != nil {
			t.Fatalf("bucket %s: %v", want.Bucket, err)
		}
		got := s.CachedInfo().Config
		if got.Replicas != 3 || got.MaxAge != want.TTL || got.MaxMsgsPerSubject != int64(want.History) {
			t.Errorf("bucket %s: replicas %d, ttl %v, history %d; want 3, %v, %d", want.Bucket, got.Replicas, got.MaxAge, got.MaxMsgsPerSubject, want.TTL, want.History)
		}
	}
	for _, want := range topo.ConsumerConfigs() {
		c, err := js.Consumer(ctx, events.StreamJobs, want.Durable)
		if err != nil {
			t.Fatalf("consumer %s: %v", want.Durable, err)
		}
		got := c.CachedInfo()
		if got.Config.AckWait != want.AckWait || got.Config.MaxDeliver != want.MaxDeliver || got.Config.MaxAckPending != want.MaxAckPending ||
			got.Cluster == nil || len(got.Cluster.Replicas) != 2 {
			t.Errorf("consumer %s: ack wait %v, max deliver %d, max ack pending %d, cluster %+v; want %v, %d, %d on three servers",
				want.Durable, got.Config.AckWait, got.Config.MaxDeliver, got.Config.MaxAckPending, got.Cluster, want.AckWait, want.MaxDeliver, want.MaxAckPending)
		}
	}
}
