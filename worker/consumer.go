package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers"
)

// ConsumerName is the durable consumer shared by every worker process for
// a bare job subject, e.g. "wxhub-worker-user-lookup"
// (events.WorkerConsumer).
func ConsumerName(bareSubject string) string { return events.WorkerConsumer(bareSubject) }

// MaxWaiting is the durable consumers' limit on waiting pull requests (a
// process keeps one or two per job subject; broker.MaxWaiting).
const MaxWaiting = broker.MaxWaiting

// ensureConsumers binds to the durable consumers the admin provisioned
// and checks they deliver the way this worker expects.
func (w *Worker) ensureConsumers(ctx context.Context) error {
	w.consumers = map[string]jetstream.Consumer{}
	for _, js := range []struct{ bare, subject string }{
		{events.SubjectUserLookup, w.subjects.UserLookup},
		{events.SubjectOAuthCodeReceived, w.subjects.OAuthCodeReceived},
		{events.SubjectOAuthUserInfo, w.subjects.OAuthUserInfo},
	} {
		name := ConsumerName(js.bare)
		c, err := w.jobsJS().Consumer(ctx, events.StreamJobs, name)
		if err != nil {
			return fmt.Errorf("worker: consumer %s on %s: %w (run `wxhub provision` with admin credentials first)", name, events.StreamJobs, err)
		}
		got := c.CachedInfo().Config
		if got.FilterSubject != js.subject || got.AckWait != w.cfg.AckWait || got.MaxDeliver != w.cfg.MaxDeliver {
			return fmt.Errorf("worker: consumer %s on %s has filter %s, ack_wait %v, max_deliver %d but this worker has %s, %v, %d: provision with the workers' settings (`wxhub provision --ack-wait %v --max-deliver %d`)",
				name, events.StreamJobs, got.FilterSubject, got.AckWait, got.MaxDeliver, js.subject, w.cfg.AckWait, w.cfg.MaxDeliver, w.cfg.AckWait, w.cfg.MaxDeliver)
		}
		w.consumers[js.subject] = c
	}
	return nil
}

// jobSubscriber is the Watermill message.Subscriber of the job subjects.
// Each Subscribe runs one nats.go Consume on the topic's durable consumer
// (batched pulls of up to pullBatch messages), and every subscription of
// the process draws from one in-flight budget of Concurrency slots: a
// delivery takes a slot before it goes to the router and gives it back
// when it is settled (acked or nak'd in settleMiddleware).
//
// The Consume callback blocks while no slot is free, and nats.go counts a
// message as delivered (and pulls more) only when the callback returns,
// so a process holds at most Concurrency jobs in work plus pullBatch per
// job subject waiting for a slot. A waiting delivery's AckWait runs, so
// when a job starts later than extendAfter after it was delivered or
// published, its AckWait is restarted (InProgress) first: a job's AckWait
// always covers its JobTimeout + FinishTimeout.
type jobSubscriber struct {
	w           *Worker
	consumers   map[string]jetstream.Consumer // by subject, on the job connection
	slots       chan struct{}                 // the in-flight budget: one token per job being worked on
	pullBatch   int
	extendAfter time.Duration

	stopOnce  sync.Once
	stopCh    chan struct{} // closed by drain: no new jobs
	closeOnce sync.Once
	closing   chan struct{} // closed by Close: deliveries waiting for the router give up

	mu     sync.RWMutex // held for reading while a delivery is sent to the router
	closed bool
	outs   []chan *message.Message
	ccs    []jetstream.ConsumeContext
}

var _ message.Subscriber = (*jobSubscriber)(nil)

// newJobSubscriber binds the durable consumers (made by ensureConsumers)
// on the job connection conn.
func newJobSubscriber(ctx context.Context, w *Worker, conn *nats.Conn) (*jobSubscriber, error) {
	js := w.jobsJS()
	consumers := map[string]jetstream.Consumer{}
	for subject, made := range w.consumers {
		c, err := js.Consumer(ctx, events.StreamJobs, made.CachedInfo().Name)
		if err != nil {
			return nil, fmt.Errorf("worker: bind consumer for %s: %w", subject, err)
		}
		consumers[subject] = c
	}
	s := &jobSubscriber{
		w:           w,
		consumers:   consumers,
		slots:       make(chan struct{}, w.cfg.Concurrency),
		pullBatch:   max(1, w.cfg.Concurrency/2),
		extendAfter: max((w.cfg.AckWait-w.cfg.JobTimeout-w.cfg.FinishTimeout)/2, time.Millisecond),
		stopCh:      make(chan struct{}),
		closing:     make(chan struct{}),
	}
	return s, nil
}

// growStack grows the calling goroutine's stack to 16 KiB in one step
// while it is shallow. The router runs each job on a goroutine of its own
// whose stack starts small; the handler path (HTTP client, JSON, NATS
// requests) would otherwise grow it two or three times per job, each time
// copying and adjusting every frame of a deep stack (runtime.copystack:
// about 6% of the worker's CPU at 50 ms). One copy of a shallow stack is
// cheap, and 16 KiB stacks come from the runtime's per-P cache.
//
//go:noinline
func growStack(i int) byte {
	var frame [12 << 10]byte
	return frame[i]
}

// Subscribe starts pulling topic's jobs; the channel closes with Close.
func (s *jobSubscriber) Subscribe(_ context.Context, topic string) (<-chan *message.Message, error) {
	c, ok := s.consumers[topic]
	if !ok {
		return nil, fmt.Errorf("worker: no consumer for %s", topic)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("worker: subscriber closed")
	}
	// Buffered: a delivery holds a slot before it is sent, so the buffer
	// never holds more than Concurrency and the send never blocks; the
	// Consume callback returns at once instead of waiting for the router
	// to take the message (one goroutine hand-off fewer per job: 2-3% of
	// the worker's CPU per job, BenchmarkWorkerThroughput).
	out := make(chan *message.Message, s.w.cfg.Concurrency)
	cc, err := c.Consume(func(m jetstream.Msg) { s.deliver(m, out) },
		jetstream.PullMaxMessages(s.pullBatch),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			s.w.log.Warn("pulling jobs", "subject", topic, "err", err)
		}))
	if err != nil {
		return nil, fmt.Errorf("worker: consume %s: %w", topic, err)
	}
	s.outs = append(s.outs, out)
	s.ccs = append(s.ccs, cc)
	return out, nil
}

// drain stops pulling; deliveries that arrive or wait for a slot are
// nak'd at once for another process.
func (s *jobSubscriber) drain() {
	s.stopOnce.Do(func() { close(s.stopCh) })
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, cc := range s.ccs {
		cc.Drain()
	}
}

// Close stops pulling and closes the router's channels. Every router
// handler calls it (concurrently) as the router closes; the first call
// does the work.
func (s *jobSubscriber) Close() error {
	s.drain()
	s.closeOnce.Do(func() {
		close(s.closing) // unblocks deliveries waiting to reach the router
		s.mu.Lock()
		defer s.mu.Unlock()
		s.closed = true
		for _, cc := range s.ccs {
			cc.Stop()
		}
		for _, out := range s.outs {
			close(out)
		}
	})
	return nil
}

// deliver is the Consume callback: it waits for a slot, restarts the
// AckWait of a job that waited, and hands the job to the router.
func (s *jobSubscriber) deliver(m jetstream.Msg, out chan<- *message.Message) {
	w := s.w
	w.inflight.add(1)
	if w.stopping.Load() && !s.lastDelivery(m) {
		s.refuse(m)
		return
	}
	arrived := time.Now()
	select {
	case s.slots <- struct{}{}:
		w.working.Add(1)
	case <-s.stopCh:
		if !s.lastDelivery(m) {
			s.refuse(m)
			return
		}
		if !s.waitSlotStopping(m) {
			return
		}
	}
	// A slot freed as the stop began: select chose at random between the
	// two, and a job taken now would start after the stop (unless it is
	// the job's last delivery, see lastDelivery).
	select {
	case <-s.stopCh:
		if !s.lastDelivery(m) {
			<-s.slots
			w.working.Add(-1)
			s.refuse(m)
			return
		}
	default:
	}
	wm, md := s.message(m)
	if time.Since(arrived) > s.extendAfter || (md != nil && time.Since(md.Timestamp) > s.extendAfter) {
		_ = m.InProgress()
	}
	d := &delivery{Context: w.hardStop, m: m, s: s}
	wm.SetContext(d)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		d.settle(false, 0)
		return
	}
	select {
	case out <- wm:
	case <-s.closing:
		d.settle(false, 0)
	}
}

// lastDelivery reports whether m is its job's last delivery
// (NumDelivered has reached MaxDeliver). A stopping worker does not nak
// such a delivery for another process: JetStream counted it already, so
// the nak would end the job untried (a timeout failure from the reaper).
// It runs here instead, within the shutdown grace. Only the stop path
// asks, so the metadata is parsed again only then.
func (s *jobSubscriber) lastDelivery(m jetstream.Msg) bool {
	md, err := m.Metadata()
	return err == nil && md.NumDelivered >= uint64(s.w.cfg.MaxDeliver)
}

// waitSlotStopping waits, while the worker stops, for a slot for a job's
// last delivery, and reports whether it got one. It gives up (nak'd) when
// the grace ran out (hardStop) or the subscriber closed.
func (s *jobSubscriber) waitSlotStopping(m jetstream.Msg) bool {
	select {
	case s.slots <- struct{}{}:
		s.w.working.Add(1)
		return true
	case <-s.w.hardStop.Done():
	case <-s.closing:
	}
	s.refuse(m)
	return false
}

// refuse naks a delivery that gets no slot (the worker is stopping).
func (s *jobSubscriber) refuse(m jetstream.Msg) {
	_ = m.Nak()
	s.w.inflight.add(-1)
}

// message turns a delivery into a Watermill message with a fresh id per
// delivery (jobs from business systems carry none), the headers as
// metadata, and the delivery facts the handlers need.
func (s *jobSubscriber) message(m jetstream.Msg) (*message.Message, *jetstream.MsgMetadata) {
	wm := message.NewMessage(nuid.Next(), m.Data())
	for k, v := range m.Headers() {
		if len(v) == 0 || strings.HasPrefix(k, "Nats-") || k == "_watermill_message_uuid" {
			continue
		}
		wm.Metadata.Set(k, v[0])
	}
	wm.Metadata.Set(handlers.MetaSubject, m.Subject())
	if id := m.Headers().Get(events.HeaderMsgID); id != "" {
		wm.Metadata.Set(handlers.MetaMsgID, id)
	}
	md, err := m.Metadata()
	if err != nil {
		return wm, nil
	}
	wm.Metadata.Set(handlers.MetaDelivered, strconv.FormatUint(md.NumDelivered, 10))
	wm.Metadata.Set(handlers.MetaStreamSeq, strconv.FormatUint(md.Sequence.Stream, 10))
	return wm, md
}

// delivery is one job in work: the Watermill message's context (w.hardStop,
// cancelled when the shutdown grace runs out), and what settles it.
type delivery struct {
	context.Context
	m       jetstream.Msg
	s       *jobSubscriber
	settled atomic.Bool
}

type deliveryKey struct{}

func (d *delivery) Value(key any) any {
	if key == (deliveryKey{}) {
		return d
	}
	return d.Context.Value(key)
}

// settle acks (ok) or naks the delivery, with delay unless the job was
// cut by the end of the shutdown grace, then frees its slot. Only the
// first call counts.
func (d *delivery) settle(ok bool, delay time.Duration) {
	if !d.settled.CompareAndSwap(false, true) {
		return
	}
	w := d.s.w
	var err error
	switch {
	case ok:
		// A plain ack: the job's done record is written, so a lost ack
		// costs one redelivery that ends at the done record.
		err = d.m.Ack()
	case delay <= 0 || w.hardStop.Err() != nil:
		// No delay asked, or the job was cut when the shutdown grace ran
		// out: to another process at once. A delay the handler asked for
		// (WeChat's trouble, a rate limit) holds while the worker stops
		// too: another process would meet the same, and the redelivery
		// would spend an attempt for nothing.
		err = d.m.Nak()
	default:
		err = d.m.NakWithDelay(delay)
	}
	if err != nil {
		w.log.Warn("settling a job delivery failed; it will be redelivered after AckWait", "ack", ok, "err", err)
	}
	<-d.s.slots
	w.working.Add(-1)
	w.inflight.add(-1)
}

// settleMiddleware settles each job as its handler returns: ack on
// success, nak with the handler's retry delay (handlers.RetryError), else
// with NakDelayMin; a panicking handler's job is nak'd at once.
func (w *Worker) settleMiddleware(next message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) (out []*message.Message, err error) {
		d, _ := msg.Context().Value(deliveryKey{}).(*delivery)
		if d == nil {
			return next(msg)
		}
		defer d.settle(false, 0) // after a panic; no-op once settled
		// The job's contexts hang off the delivery itself, not off the
		// router's values (handler and topic names nobody reads): every
		// ctx.Value lookup on the job's path (net/http makes several per
		// request) walks the chain, so shorter is cheaper.
		msg.SetContext(d)
		growStack(0)
		out, err = next(msg)
		if err == nil {
			d.settle(true, 0)
			return out, nil
		}
		delay, retry := handlers.RetryDelay(err)
		if !retry {
			d.settle(false, w.h.NakDelayMin())
			return out, err
		}
		// An ordinary retry, already logged by the handler: not a
		// handler error for the router to log.
		d.settle(false, delay)
		return nil, nil
	}
}

// counter counts deliveries in flight and lets Run wait for zero.
type counter struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed while n == 0
}

func newCounter() *counter {
	c := &counter{zero: make(chan struct{})}
	close(c.zero)
	return c
}

func (c *counter) add(d int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == 0 && d > 0 {
		c.zero = make(chan struct{})
	}
	c.n += d
	if c.n == 0 {
		close(c.zero)
	}
}

func (c *counter) wait() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.zero
}

func (c *counter) load() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}
