package handlers

import (
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wxhub/wxhub/events"
)

// CorrelationID is a middleware that makes sure every job message carries
// a correlation id (metadata Wx-Correlation-Id, from the header of the
// same name): the publisher's if it sent one, else the job_id, else the
// message UUID. Handlers copy it onto every result.
func CorrelationID(next message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		if msg.Metadata.Get(events.HeaderCorrelationID) == "" {
			id, _ := events.PeekJobIdentity(msg.Payload)
			if id == "" {
				id = msg.UUID
			}
			msg.Metadata.Set(events.HeaderCorrelationID, id)
		}
		return next(msg)
	}
}
