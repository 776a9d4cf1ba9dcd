package handlers

import (
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wxhub/wxhub/events"
)

// CorrelationID is a middleware that makes sure every job message carries
// a correlation id (metadata Wx-Correlation-Id, from the header of the
// same name): the publisher's if it sent one, else the job's result id
// (ResultID: its job_id, else its Nats-Msg-Id, else invalid-<seq>), else,
// for a message that did not come from a stream, its UUID. Handlers copy
// it onto every result.
func CorrelationID(next message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		if msg.Metadata.Get(events.HeaderCorrelationID) == "" {
			seq := DeliveryOf(msg, "").StreamSeq
			id := ResultID(msg.Payload, msg.Metadata.Get(MetaMsgID), seq)
			if seq == 0 && strings.HasPrefix(id, "invalid-") {
				id = msg.UUID
			}
			msg.Metadata.Set(events.HeaderCorrelationID, id)
		}
		return next(msg)
	}
}
