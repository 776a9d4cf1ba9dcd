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
// these would reach the router and start after the stop. Unless it is
// the job's last delivery: a nak would end that job untried, so it is
// taken and runs within the grace.
func TestDeliverAfterStopIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name       string
		maxDeliver int
		taken      bool
	}{
		{"deliveries left: refused, nak'd for another process", 5, false},
		{"last delivery: taken", 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) { deliverAfterStop(t, tc.maxDeliver, tc.taken) })
	}
}

func deliverAfterStop(t *testing.T, maxDeliver int, taken bool) {
	const n = 64
	ctx := context.Background()
	cons := testJobs(t, n)
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}

	w := &Worker{cfg: Config{Concurrency: n, MaxDeliver: maxDeliver}, inflight: newCounter(), hardStop: ctx, log: slog.New(slog.DiscardHandler)}
	s := &jobSubscriber{w: w, slots: make(chan struct{}, n), stopCh: make(chan struct{}), closing: make(chan struct{}), extendAfter: time.Hour}
	close(s.stopCh) // the stop began; w.stopping is not set yet
	// All of the batch first: a nak while the pull is still open would
	// put the job back into the same batch.
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != n {
		t.Fatalf("fetched %d of %d jobs (%v)", len(msgs), n, batch.Error())
	}
	out := make(chan *message.Message, n)
	for _, m := range msgs {
		s.deliver(m, out)
	}
	if taken {
		if len(out) != n || len(s.slots) != n || w.working.Load() != n || w.inflight.load() != n {
			t.Fatalf("last deliveries after the stop: %d reached the router, %d slots held, working %d, in flight %d; want all %d", len(out), len(s.slots), w.working.Load(), w.inflight.load(), n)
		}
		return
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

// A stopping worker keeps the delay a failed job asked for (another
// process would meet the same trouble at once); only a job cut when the
// grace ran out goes back at once.
func TestSettleWhileStoppingKeepsTheDelay(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cut       bool // the grace ran out (hardStop cancelled)
		redeliver bool // back within a second
	}{
		{"failed within the grace: its 30 s delay holds", false, false},
		{"cut by the end of the grace: at once", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			cons := testJobs(t, 1)
			m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
			if err != nil {
				t.Fatal(err)
			}
			hardStop, hardCancel := context.WithCancel(ctx)
			defer hardCancel()
			if tc.cut {
				hardCancel()
			}
			w := &Worker{cfg: Config{Concurrency: 1, MaxDeliver: 5}, inflight: newCounter(), hardStop: hardStop, log: slog.New(slog.DiscardHandler)}
			w.stopping.Store(true)
			s := &jobSubscriber{w: w, slots: make(chan struct{}, 1), stopCh: make(chan struct{}), closing: make(chan struct{})}
			s.slots <- struct{}{}
			w.working.Add(1)
			w.inflight.add(1)
			d := &delivery{Context: hardStop, m: m, s: s}
			d.settle(false, 30*time.Second)
			_, err = cons.Next(jetstream.FetchMaxWait(time.Second))
			if got := err == nil; got != tc.redeliver {
				t.Fatalf("redelivered within 1 s: %v (%v), want %v", got, err, tc.redeliver)
			}
		})
	}
}

// testJobs is a durable pull consumer (explicit acks, AckWait 30 s) on
// a stream of its own on an embedded server, holding n published jobs.
func testJobs(t *testing.T, n int) jetstream.Consumer {
	t.Helper()
	ctx := context.Background()
	js, err := jetstream.New(brokertest.Start(t).Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "JOBSTEST", Subjects: []string{"jobstest"}})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "w", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := js.Publish(ctx, "jobstest", fmt.Appendf(nil, "job %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	return cons
}
