package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

// BenchmarkWorkerThroughput runs one real Worker (Concurrency 64) against
// an embedded JetStream server and the in-process simulator (no added
// latency) and pushes b.N user.lookup jobs through it; one op is one job
// from publish to its user.profile. The nats-server runs in the same
// process, so a CPU profile (-cpuprofile) shows the worker's and the
// server's costs side by side, as the two share the machine in make bench.
//
//	go test -run '^$' -bench WorkerThroughput -benchtime 20000x -cpuprofile cpu.out ./worker/
//	go tool pprof -top cpu.out
func BenchmarkWorkerThroughput(b *testing.B) {
	for _, conc := range []int{64} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) { benchThroughput(b, conc) })
	}
}

func benchThroughput(b *testing.B, concurrency int) {
	const followers = 100
	env := brokertest.Start(b)
	sim := wechatsim.New(wechatsim.WithLogger(slog.New(slog.DiscardHandler)))
	sim.AddApp(testApp, testSecret)
	for i := range followers {
		if err := sim.AddFollower(testApp, wechatsim.Follower{OpenID: openID(i), SubscribeTime: 1700000000}); err != nil {
			b.Fatal(err)
		}
	}
	srv := httptest.NewServer(sim)
	b.Cleanup(srv.Close)
	wc, err := wechat.NewClient(wechat.Config{BaseURL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := wc.Token(ctx, testApp, testSecret)
	if err != nil {
		b.Fatal(err)
	}
	kv, err := env.JS.KeyValue(ctx, events.BucketTokens)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	rec, _ := json.Marshal(events.TokenRecord{AppID: testApp, AccessToken: tok.Token, ExpiresAt: now.Add(tok.ExpiresIn),
		FetchedAt: now, Version: 1, Mode: events.ModeToken, Holder: "bench"})
	if _, err := kv.Put(ctx, testApp, rec); err != nil {
		b.Fatal(err)
	}

	w, err := worker.New(worker.Config{
		Conn: env.Conn(b), WeChat: wc, Apps: []worker.App{{AppID: testApp, Secret: testSecret}},
		ID: "bench", Concurrency: concurrency, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	b.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			b.Errorf("worker: %v", err)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !w.Ready() { // no event for readiness; poll with a deadline
		if time.Now().After(deadline) {
			b.Fatal("worker not ready")
		}
		select {
		case err := <-done:
			b.Fatalf("worker stopped: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}

	// Results are counted on a core subscription of the result subject.
	var got atomic.Int64
	want := int64(b.N)
	all := make(chan struct{})
	resNC := env.Conn(b)
	sub, err := resNC.Subscribe(events.SubjectUserProfile, func(*nats.Msg) {
		if got.Add(1) == want {
			close(all)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	sub.SetPendingLimits(-1, -1)
	if err := resNC.Flush(); err != nil {
		b.Fatal(err)
	}
	failed, err := resNC.Subscribe(events.SubjectUserProfileFailed, func(m *nats.Msg) {
		b.Errorf("job failed: %s", m.Data)
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = failed.Unsubscribe() }()

	pubJS, err := jetstream.New(env.Conn(b), jetstream.WithPublishAsyncMaxPending(1024))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	go func() {
		for i := range b.N {
			m := nats.NewMsg(events.SubjectUserLookup)
			id := fmt.Sprintf("bench-%d", i)
			m.Data, _ = json.Marshal(events.UserLookup{JobID: id, AppID: testApp, OpenID: openID(i % followers)})
			m.Header.Set(events.HeaderMsgID, id)
			if _, err := pubJS.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
				b.Errorf("publish: %v", err)
				return
			}
		}
	}()
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d results", got.Load(), want)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "jobs/s")
	_ = sub.Unsubscribe()
}
