package worker

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers"
)

// Publisher is the handlers.Publisher on JetStream: it publishes to the
// subject with exactly the headers it is given (Nats-Msg-Id, so the
// stream deduplicates; Wx-Correlation-Id; a dead letter's reason) and no
// others, and waits for the stream's acknowledgement under ctx. A
// refused publish's error says "nats: " once (broker.NATSOnceJetStream)
// and unwraps to nats.go's: a *jetstream.APIError when the stream refused
// it. A dead letter (a DeadLetterReason is set) that would not fit in the server's
// max_payload is stored with its body cut to fit and
// HeaderDeadLetterTruncated: a job that fit once its dead-letter headers
// are added ends as one invalid_job failure instead of failing the
// publish on every delivery.
//
// watermill-nats' JetStream publisher is not used for results: it adds
// its internal _watermill_message_uuid header, which would reach every
// subscriber, and with a custom stream configurator it publishes to the
// stream's name instead of the topic. The streams exist already
// (broker.Provision), so this publisher never touches them.
type Publisher struct {
	js jetstream.JetStream
}

var _ handlers.Publisher = (*Publisher)(nil)

// NewPublisher returns a Publisher on js.
func NewPublisher(js jetstream.JetStream) *Publisher {
	return &Publisher{js: broker.NATSOnceJetStream(js)}
}

// Publish implements handlers.Publisher.
func (p *Publisher) Publish(ctx context.Context, subject string, data []byte, header handlers.Header) (handlers.Stored, error) {
	nm := &nats.Msg{Subject: subject, Data: data, Header: natsHeader(header)}
	if header.DeadLetterReason != "" {
		fitDeadLetter(nm, p.js.Conn().MaxPayload())
	}
	ack, err := p.js.PublishMsg(ctx, nm)
	if err != nil {
		return handlers.Stored{}, fmt.Errorf("worker: publish to %s: %w", subject, err)
	}
	return handlers.Stored{Seq: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// natsHeader returns h's non-empty fields as NATS headers. The values
// share one backing array: one allocation for all of them.
func natsHeader(h handlers.Header) nats.Header {
	fields := [...]struct{ key, value string }{
		{events.HeaderMsgID, h.MsgID},
		{events.HeaderCorrelationID, h.CorrelationID},
		{events.HeaderDeadLetterReason, h.DeadLetterReason},
	}
	n := 0
	for _, f := range fields {
		if f.value != "" {
			n++
		}
	}
	out := make(nats.Header, n)
	vals := make([]string, 0, n)
	for _, f := range fields {
		if f.value != "" {
			vals = append(vals, f.value)
			out[f.key] = vals[len(vals)-1 : len(vals) : len(vals)]
		}
	}
	return out
}
