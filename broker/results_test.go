package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
)

// A deployment provisioned before results were stored first (WX_RESULTS
// on user.profile, WX_JOBS capped at 64 KiB) is upgraded in place: the
// results it kept stay readable under their subjects, new results are
// stored under the same public subjects and republished, and WX_JOBS
// takes large jobs.
func TestProvisionUpgradesStreamsFromPublicResultSubjects(t *testing.T) {
	srv, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := events.NewSubjects("")
	for _, sc := range []jetstream.StreamConfig{
		{Name: events.StreamJobs, Subjects: s.Jobs(), Retention: jetstream.WorkQueuePolicy, MaxMsgSize: 64 << 10, Duplicates: 10 * time.Minute},
		{Name: events.StreamResults, Subjects: s.Results(), Duplicates: 10 * time.Minute},
		{Name: events.StreamDeadLetters, Subjects: []string{s.DeadLetterPrefix + ">"}, Duplicates: 10 * time.Minute},
	} {
		if _, err := js.CreateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish(ctx, s.UserProfile, []byte(`{"job_id":"old-1"}`), jetstream.WithMsgID("old-1")); err != nil {
		t.Fatal(err)
	}
	if err := broker.Provision(ctx, broker.LocalJetStreams(js, grants.Provision), broker.Topology{}); err != nil {
		t.Fatalf("provision over the old streams: %v", err)
	}
	core, err := nc.SubscribeSync(s.UserProfile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, s.StoredUserProfile, []byte(`{"job_id":"new-1"}`), jetstream.WithMsgID("new-1")); err != nil {
		t.Fatal(err)
	}
	if m, err := core.NextMsg(5 * time.Second); err != nil || string(m.Data) != `{"job_id":"new-1"}` {
		t.Fatalf("core subscriber: %v %v", m, err)
	}
	stream, err := js.Stream(ctx, events.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	for seq, want := range map[uint64]string{1: `{"job_id":"old-1"}`, 2: `{"job_id":"new-1"}`} {
		raw, err := stream.GetMsg(ctx, seq)
		if err != nil || raw.Subject != s.UserProfile || string(raw.Data) != want {
			t.Fatalf("result %d: %+v %v", seq, raw, err)
		}
	}
	if _, err := js.Publish(ctx, s.UserLookup, make([]byte, 512<<10)); err != nil {
		t.Fatalf("a 512 KiB job: %v", err)
	}
}
