package deploy_test

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

// TestCrossAccountPaths: the paths the roles use across accounts work on
// the shipped config: the admin creates a bucket in HOLDER and a stream
// and durable in CORE through its imports, a holder writes the token, a
// worker and a gateway read it through $JS.HOLDER.API, a client's job
// reaches a worker's pull through $JS.CORE.API and is acked, and the
// worker's stored result reaches the client.
func TestCrossAccountPaths(t *testing.T) {
	t.Parallel()
	s := startServer(t, shippedOptions(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := connectAs(t, s, grants.Provision)
	as := func(u *user) *broker.JetStreams {
		j, err := broker.NewJetStreams(u.nc, u.role, true)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	ajs := as(admin)
	if _, err := ajs.Bucket(events.BucketTokens).CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: events.BucketTokens}); err != nil {
		t.Fatalf("admin creates wx_tokens in HOLDER: %v", err)
	}
	if _, err := ajs.For(events.StreamJobs).CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamJobs, Subjects: []string{events.SubjectUserLookup}}); err != nil {
		t.Fatalf("admin creates WX_JOBS in CORE: %v", err)
	}
	durable := "wxhub-worker-user-lookup"
	if _, err := ajs.For(events.StreamJobs).CreateOrUpdateConsumer(ctx, events.StreamJobs, jetstream.ConsumerConfig{Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: events.SubjectUserLookup}); err != nil {
		t.Fatal(err)
	}
	if _, err := ajs.For(events.StreamResults).CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamResults, Subjects: []string{"wxhub.result.user.profile"}}); err != nil {
		t.Fatal(err)
	}

	holder := connectAs(t, s, grants.Holder)
	hkv, err := as(holder).Bucket(events.BucketTokens).KeyValue(ctx, events.BucketTokens)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hkv.Put(ctx, "wxapp", []byte(`{"access_token":"T1","version":1}`)); err != nil {
		t.Fatal(err)
	}
	for _, r := range []grants.Role{grants.Worker, grants.Gateway} {
		u := connectAs(t, s, r)
		kv, err := as(u).Bucket(events.BucketTokens).KeyValue(ctx, events.BucketTokens)
		if err != nil {
			t.Fatalf("%s binds wx_tokens: %v", r, err)
		}
		e, err := kv.Get(ctx, "wxapp")
		if err != nil || string(e.Value()) != `{"access_token":"T1","version":1}` {
			t.Fatalf("%s reads the token: %v", r, err)
		}
	}

	client := connectAs(t, s, grants.Client)
	cjs, _ := jetstream.New(client.nc)
	if _, err := cjs.Publish(ctx, events.SubjectUserLookup, []byte(`{"job_id":"j1"}`)); err != nil {
		t.Fatalf("client publishes a job: %v", err)
	}
	worker := connectAs(t, s, grants.Worker)
	wjs := as(worker)
	cons, err := wjs.For(events.StreamJobs).Consumer(ctx, events.StreamJobs, durable)
	if err != nil {
		t.Fatalf("worker binds its durable: %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got jetstream.Msg
	for m := range batch.Messages() {
		got = m
	}
	if got == nil || string(got.Data()) != `{"job_id":"j1"}` {
		t.Fatalf("worker pulls the job: %v %v", got, batch.Error())
	}
	sub, err := client.nc.SubscribeSync("user.profile")
	if err != nil {
		t.Fatal(err)
	}
	_ = sub
	if _, err := wjs.Local().Publish(ctx, "wxhub.result.user.profile", []byte(`{"job_id":"j1"}`), jetstream.WithMsgID("j1")); err != nil {
		t.Fatalf("worker stores a result in CORE: %v", err)
	}
	if err := got.DoubleAck(ctx); err != nil {
		t.Fatalf("worker acks across accounts: %v", err)
	}
	info, err := cons.Info(ctx)
	if err != nil || info.NumAckPending != 0 || info.NumPending != 0 {
		t.Fatalf("after the ack: %+v %v", info, err)
	}
	_ = nats.ErrTimeout
}
