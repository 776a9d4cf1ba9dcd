package holder

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// publish sends a token event through JetStream (stream WX_TOKEN_EVENTS).
// msgID, when set, dedupes republishing. A failure is logged, not
// returned: events report what happened, they do not decide it.
func (a *app) publish(ctx context.Context, subject, msgID string, payload any) {
	data, err := json.Marshal(payload)
	if err != nil {
		a.log.Error("encode event", "subject", subject, "error", err)
		return
	}
	if ctx.Err() != nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := a.h.js.Publish(ctx, subject, data, opts...); err != nil {
		a.log.Warn("publish event failed", "subject", subject, "error", err)
	}
}
