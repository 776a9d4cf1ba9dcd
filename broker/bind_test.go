package broker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
)

// TestBindNamesWhatIsMissing: on an unprovisioned server every role's
// Bind fails naming each stream, bucket and consumer its grant uses; after
// the admin provisions, it succeeds.
func TestBindNamesWhatIsMissing(t *testing.T) {
	t.Parallel()
	srv, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := broker.Connect(broker.ConnConfig{URL: srv.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	want := map[grants.Role][]string{
		grants.Worker:  {"stream WX_JOBS", "stream WX_RESULTS", "stream WX_DEADLETTERS", "bucket wx_tokens", "bucket wx_oauth", "consumer wxhub-worker-user-lookup on WX_JOBS", "wxhub provision"},
		grants.Holder:  {"stream WX_TOKEN_EVENTS", "bucket wx_tokens", "bucket wx_leases", "bucket wx_quota"},
		grants.Gateway: {"bucket wx_tokens", "stream WX_RESULTS"},
	}
	for role, names := range want {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := broker.Bind(ctx, js, role)
		cancel()
		if !errors.Is(err, broker.ErrNotProvisioned) {
			t.Fatalf("%s: %v, want ErrNotProvisioned", role, err)
		}
		for _, n := range names {
			if !strings.Contains(err.Error(), n) {
				t.Errorf("%s: error does not name %q: %v", role, n, err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := broker.Provision(ctx, broker.LocalJetStreams(js, grants.Provision), broker.Topology{}); err != nil {
		t.Fatal(err)
	}
	for role := range want {
		if err := broker.Bind(ctx, js, role); err != nil {
			t.Errorf("%s after provisioning: %v", role, err)
		}
	}
}
