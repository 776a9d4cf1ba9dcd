package broker_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
)

// TestBucketKeys: the keys of a bucket, listed without a consumer (so no
// consumer may exist afterwards), deleted and purged keys included.
func TestBucketKeys(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := env.JS.KeyValue(ctx, events.BucketTokens)
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := broker.BucketKeys(ctx, env.JS, events.BucketTokens); err != nil || len(keys) != 0 {
		t.Fatalf("empty bucket: %v %v", keys, err)
	}
	for _, k := range []string{"wxc", "wxa", "wxb", "wxa"} {
		if _, err := kv.Put(ctx, k, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "wxb"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "wxc"); err != nil {
		t.Fatal(err)
	}
	keys, err := broker.BucketKeys(ctx, env.JS, events.BucketTokens)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"wxa", "wxb", "wxc"}; !slices.Equal(keys, want) {
		t.Fatalf("keys %v, want %v (deleted and purged keys listed too)", keys, want)
	}
	if _, err := kv.Get(ctx, "wxb"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("get of a deleted key: %v", err)
	}
	s, err := env.JS.Stream(ctx, "KV_"+events.BucketTokens)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Consumers != 0 {
		t.Fatalf("consumers on the bucket's stream after listing: %v %v", info.State.Consumers, err)
	}
	if _, err := broker.BucketKeys(ctx, env.JS, "wx_nosuch"); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("missing bucket: %v, want ErrBucketNotFound", err)
	}
}
