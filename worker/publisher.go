package worker

import (
	"fmt"

	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publisher is a Watermill message.Publisher that publishes to JetStream
// on the topic as the subject, copies every metadata entry into a header
// (so Nats-Msg-Id dedupes and Wx-Correlation-Id travels), and waits for
// the stream's acknowledgement under the message's context.
//
// watermill-nats' own JetStream publisher is not used for results: with a
// custom stream configurator it publishes to the stream's name instead of
// the topic, and its default one expects a stream per topic. The streams
// exist already (broker.Provision), so this publisher never touches them.
type Publisher struct {
	js jetstream.JetStream
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher returns a Publisher on js.
func NewPublisher(js jetstream.JetStream) *Publisher { return &Publisher{js: js} }

// Publish publishes msgs in order and stops at the first failure.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		nm := nats.NewMsg(topic)
		nm.Data = m.Payload
		for k, v := range m.Metadata {
			nm.Header.Set(k, v)
		}
		nm.Header.Set(wmnats.WatermillUUIDHdr, m.UUID)
		if _, err := p.js.PublishMsg(m.Context(), nm); err != nil {
			return fmt.Errorf("worker: publish to %s: %w", topic, err)
		}
	}
	return nil
}

// Close does nothing: the connection belongs to the caller.
func (p *Publisher) Close() error { return nil }
