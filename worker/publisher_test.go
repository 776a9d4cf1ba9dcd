package worker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers"
	"github.com/wxhub/wxhub/worker"
)

// A result the stream refuses (here: larger than its max_msg_size) fails
// with "nats: " said once: nats.go's publish wraps JetStream's
// "nats: API error: ..." in a "nats: " of its own. The error is still
// the *jetstream.APIError underneath.
func TestPublisherRefusedSaysNATSOnce(t *testing.T) {
	env := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := env.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "SMALL", Subjects: []string{"small.>"}, MaxMsgSize: 8}); err != nil {
		t.Fatal(err)
	}
	_, err := worker.NewPublisher(env.JS).Publish(ctx, "small.result", []byte("more than eight bytes"), handlers.Header{MsgID: "j1"})
	if err == nil {
		t.Fatal("the stream stored a message over its max_msg_size")
	}
	if n := strings.Count(err.Error(), "nats: "); n != 1 {
		t.Errorf("error %q says \"nats: \" %d times, want once", err, n)
	}
	var api *jetstream.APIError
	if !errors.As(err, &api) || api.ErrorCode != jetstream.JSErrCodeStreamMessageExceedsMaximum {
		t.Errorf("errors.As(*jetstream.APIError) = %v, want err_code %d", api, jetstream.JSErrCodeStreamMessageExceedsMaximum)
	}
}

// A done record the bucket refuses says "nats: " once too (the worker's
// stores wrap their bucket in broker.NATSOnceKeyValue).
func TestDoneStoreRefusedSaysNATSOnce(t *testing.T) {
	env := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := env.JS.Stream(ctx, "KV_"+events.BucketDone)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxMsgSize = 8
	if _, err := env.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	err = worker.NewKVDoneStore(env.JS).MarkDone(ctx, events.DoneRecord{JobID: "j1", ResultSubject: events.SubjectUserProfile})
	if err == nil {
		t.Fatal("the bucket stored a record over its max_msg_size")
	}
	if n := strings.Count(err.Error(), "nats: "); n != 1 {
		t.Errorf("error %q says \"nats: \" %d times, want once", err, n)
	}
	var api *jetstream.APIError
	if !errors.As(err, &api) || api.ErrorCode != jetstream.JSErrCodeStreamMessageExceedsMaximum {
		t.Errorf("errors.As(*jetstream.APIError) = %v, want err_code %d", api, jetstream.JSErrCodeStreamMessageExceedsMaximum)
	}
}
