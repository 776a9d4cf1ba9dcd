// Command wxchaos checks that wxhub loses nothing under faults (make
// chaos). On a 3-node NATS JetStream cluster on 127.0.0.1 (nats-server
// processes built from the module cache; streams and buckets with 3
// replicas), with 2 wxhub holders and 3 wxhub workers as processes and the
// WeChat simulator in this process, it publishes 10,000 jobs (user.lookup
// and oauth.code.received mixed) at a steady rate while, one after
// another: a worker is SIGKILLed, the leading holder is SIGKILLed, one NATS
// node is SIGKILLed and restarted on its store, and the simulator answers
// -1 to 5% of calls and delays 1% by 2 s.
//
// It prints jobs published, results, failures by kind, duplicates, lost
// jobs, token fetches and the time to recover after each fault, writes
// chaos-results.json, and exits 1 if any job was lost or duplicated.
//
//	go run ./cmd/wxchaos [-jobs 10000] [-rate 70] [-out chaos-results.json]
package main

import (
	"context"
	"flag"
	"time"

	"github.com/wxhub/wxhub/internal/harness"
)

type options struct {
	out     string
	jobs    int
	rate    float64
	oauth   float64
	latency time.Duration
	keep    bool
	wxhub   string
	nats    string
}

func main() {
	var o options
	flag.StringVar(&o.out, "out", "chaos-results.json", "JSON results `file`")
	flag.IntVar(&o.jobs, "jobs", 10000, "jobs to publish")
	flag.Float64Var(&o.rate, "rate", 70, "jobs published per second")
	flag.Float64Var(&o.oauth, "oauth-share", 0.2, "share of oauth.code.received jobs")
	flag.DurationVar(&o.latency, "sim-latency", 20*time.Millisecond, "simulated WeChat round trip")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary folder (logs, stores)")
	flag.StringVar(&o.wxhub, "wxhub", "", "prebuilt wxhub `binary` (default: build ./cmd/wxhub)")
	flag.StringVar(&o.nats, "nats-server", "", "prebuilt nats-server `binary` (default: build from the module cache)")
	flag.Parse()

	harness.Main("wxchaos", func(ctx context.Context) (int, error) { return run(ctx, o) })
}
