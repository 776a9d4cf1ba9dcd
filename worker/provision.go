package worker

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
)

// Provision creates or updates the streams, buckets and durable consumers
// that workers configured as cfg bind to: broker.Provision of
// cfg.Topology with cfg's prefix and consumer settings. It needs admin
// rights; `wxhub run` and tests call it, Run never does.
func Provision(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	cfg.setDefaults()
	return broker.Provision(ctx, broker.LocalJetStreams(js, grants.Provision), cfg.Topology)
}
