package worker_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/internal/benchloop"
	"github.com/wxhub/wxhub/worker"
)

// BenchmarkWorkerThroughput runs one real Worker against an embedded
// JetStream server and the in-process simulator and pushes b.N
// user.lookup jobs through it (package benchloop); one op is one job from
// publish to its user.profile. BenchmarkPeerThroughput in cmd/wxbench
// runs the hand-written nats.go worker through the same loop: the two
// cpu-µs/job figures differ by what the workers cost. The nats-server
// runs in the same process, so a CPU profile (-cpuprofile) shows the
// worker's and the server's costs side by side.
//
//	go test -run '^$' -bench WorkerThroughput -benchtime 20000x -cpuprofile cpu.out ./worker/
//	go tool pprof -top cpu.out
func BenchmarkWorkerThroughput(b *testing.B) {
	for _, c := range benchloop.Cases {
		b.Run(c.Name(), func(b *testing.B) { benchloop.Run(b, c, startWorker) })
	}
}

func startWorker(_ context.Context, tb testing.TB, env benchloop.Env) func() error {
	nc, err := nats.Connect(env.NATSURL, nats.Name("bench worker"))
	if err != nil {
		tb.Fatal(err)
	}
	w, err := worker.New(worker.Config{
		Conn: nc, WeChat: env.WeChat, Apps: []worker.App{{AppID: benchloop.AppID, Secret: benchloop.Secret}},
		ID: "bench", Concurrency: env.Concurrency, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for !w.Ready() { // no event for readiness; poll with a deadline
		if time.Now().After(deadline) {
			tb.Fatal("worker not ready")
		}
		select {
		case err := <-done:
			tb.Fatalf("worker stopped: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	return func() error {
		stop()
		err := <-done
		nc.Close()
		return err
	}
}

// The benchmark loop itself works: every job published gets its result and
// the figures are reported (make test runs no benchmarks).
func TestThroughputBenchmarkRuns(t *testing.T) {
	c := benchloop.Case{Concurrency: 8}
	r := testing.Benchmark(func(b *testing.B) { benchloop.Run(b, c, startWorker) })
	if r.N == 0 || r.Extra["jobs/s"] <= 0 || r.Extra["cpu-µs/job"] <= 0 {
		t.Fatalf("benchmark result %+v: want jobs and both figures", r)
	}
}
