// Command wxbench measures wxhub (make bench): user.lookup throughput and
// publish→result latency over a matrix of simulator latency, worker
// concurrency and worker processes, against a plain HTTP baseline at the
// same concurrency; the token path (fetches per token lifetime with 3
// holders and 8 workers, fetches caused by 1,000 concurrent invalidation
// reports, time until every worker uses a rotated token); worker memory;
// and allocations per job in the handler path (go test -bench -benchmem).
//
// Everything runs on 127.0.0.1: a single nats-server process (JetStream),
// wxhub holder and worker processes, and the WeChat simulator in this
// process. It prints tables, writes bench-results.json, and exits 1 when a
// hard assertion fails (token fetch counts ≠ 1). Targets missed are marked
// MISSED, not failures.
//
//	go run ./cmd/wxbench [-quick] [-rounds 5] [-measure 3s] [-out bench-results.json]
package main

import (
	"context"
	"flag"
	"os"
	"time"

	"github.com/wxhub/wxhub/internal/harness"
)

type options struct {
	out      string
	quick    bool
	warmup   time.Duration
	measure  time.Duration
	keep     bool
	wxhub    string
	nats     string
	skipTest bool
	rounds   int
}

func main() {
	var o options
	flag.StringVar(&o.out, "out", "bench-results.json", "JSON results `file`")
	flag.BoolVar(&o.quick, "quick", false, "only the peer comparison and the scale figure, 2 s per run (a minute or two)")
	flag.IntVar(&o.rounds, "rounds", 0, "rounds of the peer comparison (0: 5, or 3 with -quick)")
	flag.DurationVar(&o.warmup, "warmup", 700*time.Millisecond, "load before each measurement")
	flag.DurationVar(&o.measure, "measure", 3*time.Second, "measured span of each scenario")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary folder (logs, stores)")
	flag.StringVar(&o.wxhub, "wxhub", "", "prebuilt wxhub `binary` (default: build ./cmd/wxhub)")
	flag.StringVar(&o.nats, "nats-server", "", "prebuilt nats-server `binary` (default: build from the module cache)")
	flag.BoolVar(&o.skipTest, "skip-allocs", false, "skip the go test -bench allocation figures")
	if len(os.Args) > 1 && os.Args[1] == peerCommand {
		os.Exit(runPeerCommand(os.Args[2:]))
	}
	flag.Parse()

	harness.Main("wxbench", func(ctx context.Context) (int, error) { return run(ctx, o) })
}
