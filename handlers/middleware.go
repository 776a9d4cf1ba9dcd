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
//
// The handlers apply the same rule themselves to a message without one,
// so the middleware is optional in front of them; package worker does
// not add it (it would scan every job's body a second time).
func CorrelationID(next message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		if msg.Metadata.Get(events.HeaderCorrelationID) == "" {
			seq := DeliveryOf(msg, "").StreamSeq
			msg.Metadata.Set(events.HeaderCorrelationID, defaultCorrelationID(msg, ResultID(msg.Payload, msg.Metadata.Get(MetaMsgID), seq), seq))
		}
		return next(msg)
	}
}

// defaultCorrelationID is the correlation id of a message whose publisher
// sent none: its result id, or its UUID when it did not come from a
// stream and has no usable id.
func defaultCorrelationID(msg *message.Message, resultID string, streamSeq uint64) string {
	if streamSeq == 0 && strings.HasPrefix(resultID, "invalid-") {
		return msg.UUID
	}
	return resultID
}
