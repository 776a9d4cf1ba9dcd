package broker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/internal/cas"
)

// Every write of a wrapped bucket and every publish of a wrapped
// JetStream handle that JetStream refuses says "nats: " once, and still
// unwraps to nats.go's error; a lost compare-and-swap still reads as
// one.
func TestNATSOnceWrappersSayNATSOnce(t *testing.T) {
	env := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	raw, err := env.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "once", MaxValueSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	rawCAS, err := env.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "cas"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rawCAS.Put(ctx, "taken", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if _, err := env.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "ONCE", Subjects: []string{"once.>"}, MaxMsgSize: 8}); err != nil {
		t.Fatal(err)
	}
	kv, casKV := broker.NATSOnceKeyValue(raw), broker.NATSOnceKeyValue(rawCAS)
	js := broker.NATSOnceJetStream(env.JS)
	big := []byte("more than eight bytes")
	tests := []struct {
		name string
		call func() error
		lost bool // a lost compare-and-swap, not a refusal
	}{
		{"Put", func() error { _, err := kv.Put(ctx, "k", big); return err }, false},
		{"PutString", func() error { _, err := kv.PutString(ctx, "k", string(big)); return err }, false},
		{"Create", func() error { _, err := kv.Create(ctx, "k", big); return err }, false},
		{"Update", func() error { _, err := kv.Update(ctx, "k", big, 0); return err }, false},
		{"Create over a key", func() error { _, err := casKV.Create(ctx, "taken", []byte("w")); return err }, true},
		{"Update at a stale revision", func() error { _, err := casKV.Update(ctx, "taken", []byte("w"), 99); return err }, true},
		{"Delete at a stale revision", func() error { return casKV.Delete(ctx, "taken", jetstream.LastRevision(99)) }, true},
		{"Publish", func() error { _, err := js.Publish(ctx, "once.x", big); return err }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if err == nil {
				t.Fatal("no error")
			}
			if strings.HasPrefix(err.Error(), "nats: nats: ") || !strings.HasPrefix(err.Error(), "nats: ") {
				t.Errorf("error %q: want \"nats: \" once", err)
			}
			if tt.lost {
				if !cas.Lost(err) {
					t.Errorf("cas.Lost(%v) is false", err)
				}
				return
			}
			var api *jetstream.APIError
			if !errors.As(err, &api) || api.ErrorCode != jetstream.JSErrCodeStreamMessageExceedsMaximum {
				t.Errorf("errors.As(*jetstream.APIError) lost: %v", err)
			}
		})
	}
}
