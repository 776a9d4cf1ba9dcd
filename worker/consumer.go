package worker

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers"
)

// ConsumerName is the durable consumer shared by every worker process for
// a bare job subject, e.g. "wxhub-worker-user-lookup".
func ConsumerName(bareSubject string) string {
	return "wxhub-worker-" + strings.ReplaceAll(bareSubject, ".", "-")
}

// MaxWaiting is the durable consumers' limit on waiting pull requests:
// Concurrency × processes must stay below it. JetStream cannot update it
// on an existing consumer, so it never changes.
const MaxWaiting = 4096

// consumerConfig is the durable pull consumer of one job subject.
func (w *Worker) consumerConfig(bare, subject string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName(bare),
		Description:   "wxhub workers: " + subject,
		FilterSubject: subject,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.cfg.AckWait,
		MaxDeliver:    w.cfg.MaxDeliver,
		MaxAckPending: w.cfg.MaxAckPending,
		// Every idle slot of every process is one waiting pull request.
		// The server refuses to change MaxWaiting later, so it is a
		// constant: room for 64 processes at the default Concurrency.
		MaxWaiting: MaxWaiting,
	}
}

// ensureConsumers creates or updates the durable consumers (idempotent).
func (w *Worker) ensureConsumers(ctx context.Context) error {
	w.consumers = map[string]jetstream.Consumer{}
	for _, js := range []struct{ bare, subject string }{
		{events.SubjectUserLookup, w.subjects.UserLookup},
		{events.SubjectOAuthCodeReceived, w.subjects.OAuthCodeReceived},
		{events.SubjectOAuthUserInfo, w.subjects.OAuthUserInfo},
	} {
		cfg := w.consumerConfig(js.bare, js.subject)
		c, err := w.js.CreateOrUpdateConsumer(ctx, events.StreamJobs, cfg)
		if err != nil {
			return fmt.Errorf("worker: consumer %s: %w", cfg.Durable, err)
		}
		w.consumers[js.subject] = c
	}
	return nil
}

// resourceInitializer hands watermill-nats the durable consumer made by
// ensureConsumers (watermill-nats' own initializers ignore
// ConfigureConsumer), wrapped so the worker sees every delivery.
func (w *Worker) resourceInitializer(_ context.Context, _ jetstream.JetStream, topic string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
	c, ok := w.consumers[topic]
	if !ok {
		return nil, nil, fmt.Errorf("worker: no consumer for %s", topic)
	}
	return &trackedConsumer{Consumer: c, w: w}, nil, nil
}

// trackedConsumer wraps every delivery: it counts the callbacks in flight
// (the ack or nak is sent inside the callback, so zero in flight means
// every delivery is settled), refuses new deliveries while stopping (nak
// at once, so another process takes them), and remembers each consume
// context so Run can stop pulling.
type trackedConsumer struct {
	jetstream.Consumer
	w *Worker
}

func (c *trackedConsumer) Consume(handler jetstream.MessageHandler, opts ...jetstream.PullConsumeOpt) (jetstream.ConsumeContext, error) {
	cc, err := c.Consumer.Consume(func(m jetstream.Msg) {
		c.w.inflight.add(1)
		defer c.w.inflight.add(-1)
		if c.w.stopping.Load() {
			_ = m.Nak()
			return
		}
		dm := &deliveryMsg{Msg: m, w: c.w}
		defer func() {
			if dm.uuid != "" {
				c.w.deliveries.Delete(dm.uuid)
			}
		}()
		handler(dm)
	}, opts...)
	if err != nil {
		return nil, err
	}
	c.w.ccMu.Lock()
	c.w.consumeCtxs = append(c.w.consumeCtxs, cc)
	c.w.ccMu.Unlock()
	return cc, nil
}

// deliveryMsg is one delivery; NakWithDelay uses the delay its handler
// asked for (handlers.RetryError) instead of watermill-nats' fixed one.
type deliveryMsg struct {
	jetstream.Msg
	w     *Worker
	uuid  string
	delay atomic.Int64 // time.Duration
}

func (m *deliveryMsg) NakWithDelay(time.Duration) error {
	d := time.Duration(m.delay.Load())
	if d <= 0 || m.w.stopping.Load() {
		return m.Msg.Nak()
	}
	return m.Msg.NakWithDelay(d)
}

// handlerDelay makes watermill-nats call NakWithDelay on every nak, so
// deliveryMsg decides the delay.
type handlerDelay struct{}

func (handlerDelay) WaitTime(uint64) time.Duration { return time.Nanosecond }

// unmarshaler turns a delivery into a Watermill message with a fresh UUID
// per delivery (jobs from business systems carry none), the headers as
// metadata, and the delivery facts the handlers need.
type unmarshaler struct{ w *Worker }

func (u unmarshaler) Unmarshal(m jetstream.Msg) (*message.Message, error) {
	wm := message.NewMessage(watermill.NewUUID(), m.Data())
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
	if md, err := m.Metadata(); err == nil {
		wm.Metadata.Set(handlers.MetaDelivered, strconv.FormatUint(md.NumDelivered, 10))
		wm.Metadata.Set(handlers.MetaStreamSeq, strconv.FormatUint(md.Sequence.Stream, 10))
	}
	if dm, ok := m.(*deliveryMsg); ok {
		dm.uuid = wm.UUID
		u.w.deliveries.Store(wm.UUID, dm)
	}
	return wm, nil
}

// settleMiddleware gives each job a context that is also cancelled when
// the shutdown grace runs out, and passes a handler's retry delay to the
// delivery before the router naks it.
func (w *Worker) settleMiddleware(next message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx, cancel := context.WithCancel(msg.Context())
		stop := context.AfterFunc(w.hardStop, cancel)
		defer stop()
		defer cancel()
		msg.SetContext(ctx)
		out, err := next(msg)
		if err == nil {
			return out, nil
		}
		d, retry := handlers.RetryDelay(err)
		if !retry {
			d = w.h.NakDelayMin()
		}
		if v, found := w.deliveries.Load(msg.UUID); found {
			v.(*deliveryMsg).delay.Store(int64(d))
		}
		if retry {
			// An ordinary retry, already logged by the handler: nak here
			// so the router does not log it as a handler error (its
			// later Ack is then ignored).
			msg.Nack()
			return nil, nil
		}
		return out, err
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

var _ wmjs.Delay = handlerDelay{}
