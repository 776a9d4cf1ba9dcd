package broker

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSOnceJetStream returns js with publishes whose errors say "nats: "
// once (TrimDoubledNATSPrefix). Trimming has to happen where the error
// leaves nats.go: once a caller wraps it ("holder: store token: nats:
// nats: ..."), the doubled prefix is no longer at the start.
// A handle wrapped already is returned as it is.
func NATSOnceJetStream(js jetstream.JetStream) jetstream.JetStream {
	if _, ok := js.(natsOnceJS); ok {
		return js
	}
	return natsOnceJS{js}
}

// NATSOnceKeyValue returns kv with writes whose errors say "nats: " once
// (TrimDoubledNATSPrefix); errors.Is and errors.As match as before.
// A bucket wrapped already is returned as it is.
func NATSOnceKeyValue(kv jetstream.KeyValue) jetstream.KeyValue {
	if _, ok := kv.(natsOnceKV); ok {
		return kv
	}
	return natsOnceKV{kv}
}

type natsOnceJS struct{ jetstream.JetStream }

func (js natsOnceJS) Publish(ctx context.Context, subject string, payload []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := js.JetStream.Publish(ctx, subject, payload, opts...)
	return ack, TrimDoubledNATSPrefix(err)
}

func (js natsOnceJS) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := js.JetStream.PublishMsg(ctx, msg, opts...)
	return ack, TrimDoubledNATSPrefix(err)
}

type natsOnceKV struct{ jetstream.KeyValue }

func (kv natsOnceKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := kv.KeyValue.Put(ctx, key, value)
	return rev, TrimDoubledNATSPrefix(err)
}

func (kv natsOnceKV) PutString(ctx context.Context, key, value string) (uint64, error) {
	rev, err := kv.KeyValue.PutString(ctx, key, value)
	return rev, TrimDoubledNATSPrefix(err)
}

func (kv natsOnceKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	rev, err := kv.KeyValue.Create(ctx, key, value, opts...)
	return rev, TrimDoubledNATSPrefix(err)
}

func (kv natsOnceKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	rev, err := kv.KeyValue.Update(ctx, key, value, revision)
	return rev, TrimDoubledNATSPrefix(err)
}

func (kv natsOnceKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	return TrimDoubledNATSPrefix(kv.KeyValue.Delete(ctx, key, opts...))
}

func (kv natsOnceKV) Purge(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	return TrimDoubledNATSPrefix(kv.KeyValue.Purge(ctx, key, opts...))
}
