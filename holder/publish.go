package holder

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// publish sends a token event through JetStream (stream WX_TOKEN_EVENTS).
// msgID, when set, dedupes republishing. A failure is logged, not
// returned: events report what happened, they do not decide it. It waits
// up to 5 s for the stream's ack, also while the holder stops.
func (a *app) publish(ctx context.Context, subject, msgID string, payload any) {
	data, err := json.Marshal(payload)
	if err != nil {
		a.log.Error("encode event", "subject", subject, "error", err)
		return
	}
	// Not cut by a stop: the event tells of something that happened
	// already (a token stored, a refresh failed), so a holder that stops
	// while it waits for the stream's ack still finishes announcing it.
	// Before, a stop between the publish and its ack logged a failed
	// publish of an event that was stored, or lost one that was not.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := a.h.js.Publish(ctx, subject, data, opts...); err != nil {
		a.log.Warn("publish event failed", "subject", subject, "error", err)
	}
}
