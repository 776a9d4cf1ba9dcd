package main

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/benchloop"
	"github.com/wxhub/wxhub/internal/harness"
	"github.com/wxhub/wxhub/worker"
)

// BenchmarkPeerThroughput runs the hand-written nats.go worker (peer.go)
// through the loop BenchmarkWorkerThroughput (package worker) runs
// `wxhub worker` through: same server, simulator, cases and load, in one
// process. Compare their cpu-µs/job:
//
//	go test -run '^$' -bench Throughput -benchtime 20000x -count 6 ./worker ./cmd/wxbench
func BenchmarkPeerThroughput(b *testing.B) {
	for _, c := range benchloop.Cases {
		b.Run(c.Name(), func(b *testing.B) { benchloop.Run(b, c, startPeer) })
	}
}

func startPeer(ctx context.Context, tb testing.TB, env benchloop.Env) func() error {
	pctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runPeer(pctx, env.NATSURL, env.WeChatURL, benchloop.AppID, env.Concurrency) }()
	nc, err := nats.Connect(env.NATSURL)
	if err != nil {
		tb.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	if err := harness.WaitPulls(ctx, js, worker.ConsumerName(events.SubjectUserLookup), 1, 20*time.Second); err != nil {
		tb.Fatal(err)
	}
	return func() error {
		cancel()
		return <-done
	}
}

// The peer runs through the benchmark loop (make test runs no benchmarks).
func TestPeerThroughputBenchmarkRuns(t *testing.T) {
	c := benchloop.Case{Concurrency: 8}
	r := testing.Benchmark(func(b *testing.B) { benchloop.Run(b, c, startPeer) })
	if r.N == 0 || r.Extra["jobs/s"] <= 0 || r.Extra["cpu-µs/job"] <= 0 {
		t.Fatalf("benchmark result %+v: want jobs and both figures", r)
	}
}
