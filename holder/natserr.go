package holder

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
)

// nats.go's JetStream publish, and so every KV write, wraps a refusal as
// "nats: %w" around a *jetstream.APIError that says "nats: API error: ..."
// itself. The holder's JetStream handle (natsJS) and buckets (natsKV) say
// "nats: " once in the errors they return (broker.TrimDoubledNATSPrefix),
// before the holder wraps them into what it logs and returns. The errors
// still unwrap to nats.go's: errors.Is and errors.As (cas.Lost, a
// *jetstream.APIError) match as before.

// natsJS is the holder's JetStream handle: its publishes say "nats: " once.
type natsJS struct{ jetstream.JetStream }

func (js natsJS) Publish(ctx context.Context, subject string, payload []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := js.JetStream.Publish(ctx, subject, payload, opts...)
	return ack, broker.TrimDoubledNATSPrefix(err)
}

func (js natsJS) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := js.JetStream.PublishMsg(ctx, msg, opts...)
	return ack, broker.TrimDoubledNATSPrefix(err)
}

// natsKV is one of the holder's buckets: its writes say "nats: " once.
type natsKV struct{ jetstream.KeyValue }

func (kv natsKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := kv.KeyValue.Put(ctx, key, value)
	return rev, broker.TrimDoubledNATSPrefix(err)
}

func (kv natsKV) PutString(ctx context.Context, key, value string) (uint64, error) {
	rev, err := kv.KeyValue.PutString(ctx, key, value)
	return rev, broker.TrimDoubledNATSPrefix(err)
}

func (kv natsKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	rev, err := kv.KeyValue.Create(ctx, key, value, opts...)
	return rev, broker.TrimDoubledNATSPrefix(err)
}

func (kv natsKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	rev, err := kv.KeyValue.Update(ctx, key, value, revision)
	return rev, broker.TrimDoubledNATSPrefix(err)
}

func (kv natsKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	return broker.TrimDoubledNATSPrefix(kv.KeyValue.Delete(ctx, key, opts...))
}

func (kv natsKV) Purge(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	return broker.TrimDoubledNATSPrefix(kv.KeyValue.Purge(ctx, key, opts...))
}
