package worker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/brokertest"
)

// Every router handler closes the shared subscriber as the router closes,
// at the same time: only the first Close does the work, none panics.
func TestJobSubscriberCloseConcurrently(t *testing.T) {
	for range 2000 {
		s := &jobSubscriber{w: &Worker{}, stopCh: make(chan struct{}), closing: make(chan struct{})}
		out := make(chan *message.Message)
		s.outs = append(s.outs, out)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { _ = s.Close() })
		}
		wg.Wait()
		if _, open := <-out; open {
			t.Fatal("router channel still open after Close")
		}
	}
}

// A delivery that arrives after the stop began, while a slot is free, is
// refused: the select between the free slot and the stop picks at
// random, so without deliver's second look at the stop about half of
// these would reach the router and start after the stop.
func TestDeliverAfterStopIsRefused(t *testing.T) {
	const n = 64
	ctx := context.Background()
	nc := brokertest.Start(t).Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "STOPTEST", Subjects: []string{"stoptest"}})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "w", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := js.Publish(ctx, "stoptest", fmt.Appendf(nil, "job %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}

	w := &Worker{cfg: Config{Concurrency: n}, inflight: newCounter(), hardStop: ctx, log: slog.New(slog.DiscardHandler)}
	s := &jobSubscriber{w: w, slots: make(chan struct{}, n), stopCh: make(chan struct{}), closing: make(chan struct{}), extendAfter: time.Hour}
	close(s.stopCh) // the stop began; w.stopping is not set yet
	out := make(chan *message.Message, n)
	got := 0
	for m := range batch.Messages() {
		s.deliver(m, out)
		got++
	}
	if got != n {
		t.Fatalf("fetched %d of %d jobs", got, n)
	}
	if len(out) != 0 || len(s.slots) != 0 || w.working.Load() != 0 || w.inflight.load() != 0 {
		t.Fatalf("after the stop: %d jobs reached the router, %d slots held, working %d, in flight %d; want none", len(out), len(s.slots), w.working.Load(), w.inflight.load())
	}
	// Every refused job was nak'd for another process at once: all come
	// back, redelivered, long before an AckWait (30 s).
	redelivered := 0
	deadline := time.Now().Add(10 * time.Second)
	for redelivered < n && time.Now().Before(deadline) {
		again, err := cons.Fetch(n-redelivered, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range again.Messages() {
			if md, err := m.Metadata(); err != nil || md.NumDelivered != 2 {
				t.Fatalf("a job came back with metadata %+v (%v); want its second delivery", md, err)
			}
			redelivered++
		}
	}
	if redelivered != n {
		t.Fatalf("%d of %d refused jobs redelivered within 10 s; want all (nak'd)", redelivered, n)
	}
}
