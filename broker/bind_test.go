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
	bindAs := func(role grants.Role) *broker.JetStreams {
		j, err := broker.NewJetStreams(nc, role, false)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	want := map[grants.Role][]string{
		grants.Worker:  {"stream WX_JOBS", "stream WX_RESULTS", "stream WX_DEADLETTERS", "bucket wx_tokens", "bucket wx_oauth", "consumer wxhub-worker-user-lookup on WX_JOBS", "wxhub provision"},
		grants.Holder:  {"stream WX_TOKEN_EVENTS", "bucket wx_tokens", "bucket wx_leases", "bucket wx_quota"},
		grants.Gateway: {"bucket wx_tokens", "stream WX_RESULTS"},
	}
	for role, names := range want {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := broker.Bind(ctx, bindAs(role))
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
		if err := broker.Bind(ctx, bindAs(role)); err != nil {
			t.Errorf("%s after provisioning: %v", role, err)
		}
	}
}

// TestBindNamesTheWrongLayout: a role told --nats-accounts on a server
// without wxhub's accounts finds nothing through the imported API
// prefixes; Bind says to unset the flag instead of to provision.
func TestBindNamesTheWrongLayout(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t) // provisioned, without accounts
	nc := env.NC
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		role grants.Role
		want []string
	}{
		{grants.Worker, []string{"stream WX_JOBS", "bucket wx_tokens", "unset --nats-accounts"}},
		{grants.Gateway, []string{"bucket wx_tokens", "unset --nats-accounts"}},
	} {
		streams, err := broker.NewJetStreams(nc, tc.role, true)
		if err != nil {
			t.Fatal(err)
		}
		bctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err = broker.Bind(bctx, streams)
		cancel()
		if !errors.Is(err, broker.ErrWrongLayout) {
			t.Fatalf("%s: %v, want ErrWrongLayout", tc.role, err)
		}
		for _, n := range tc.want {
			if !strings.Contains(err.Error(), n) {
				t.Errorf("%s: error does not name %q: %v", tc.role, n, err)
			}
		}
	}
	// The holder's streams are its own in both layouts: nothing to hint.
	holder, _ := broker.NewJetStreams(nc, grants.Holder, true)
	if err := broker.Bind(ctx, holder); err != nil {
		t.Errorf("holder with accounts: %v", err)
	}
}
