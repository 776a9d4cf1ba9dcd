package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/wxhub/wxhub/internal/harness"
)

// print writes every table.
func (e *env) print(w io.Writer) {
	r := e.report
	t := harness.Table{Title: fmt.Sprintf("user.lookup end to end (closed loop: in-flight = processes × concurrency; %v measured per cell)", e.o.measure),
		Header: []string{"sim lat", "procs", "conc", "in-flight", "jobs/s", "p50", "p99", "baseline/s", "base p99", "wxhub/base", "p99 added", "cpu wrk", "cpu nats", "cpu harn", "lost", "dup"}}
	for _, sc := range r.Scenarios {
		bRate, bP99, ratio, added := "-", "-", "-", "-"
		if b := sc.Baseline; b != nil {
			bRate, bP99 = harness.FormatRate(b.Throughput), b.Latency.P99.String()
			if b.Throughput > 0 {
				ratio = fmt.Sprintf("%.2f", sc.Result.Throughput/b.Throughput)
			}
			added = harness.FormatMs(time.Duration(sc.Result.Latency.P99) - time.Duration(b.Latency.P99))
		}
		t.Add(fmt.Sprintf("%dms", sc.LatencyMS), sc.Procs, sc.Concurrency, sc.InFlight, harness.FormatRate(sc.Result.Throughput),
			sc.Result.Latency.P50, sc.Result.Latency.P99, bRate, bP99, ratio, added,
			fmt.Sprintf("%.2f", sc.CPU.Workers), fmt.Sprintf("%.2f", sc.CPU.NATS), fmt.Sprintf("%.2f", sc.CPU.Harness),
			sc.Result.Outcome.Lost, sc.Result.Outcome.Duplicates)
	}
	t.Note("baseline: a plain Go HTTP client keeping the same number of user/info calls in flight against the same simulator, no NATS")
	t.Note("cpu in cores (%d on this machine); harness = simulator + load generator + result reader (one process)", r.Host.CPUs)
	t.Fprint(w)

	if m := r.Memory; m != nil {
		mt := harness.Table{Title: "worker memory (RSS of one worker process)", Header: []string{"concurrency", "idle", "under load (max)"}}
		for _, c := range []int{1, 16, 64, 256} {
			if m.IdleRSSByConc[c] == 0 && m.LoadRSSByConc[c] == 0 {
				continue
			}
			mt.Add(c, harness.FormatBytes(m.IdleRSSByConc[c]), harness.FormatBytes(m.LoadRSSByConc[c]))
		}
		mt.Fprint(w)
	}
	if len(r.Allocations) > 0 {
		at := harness.Table{Title: "allocations per job (go test -bench -benchmem)", Header: []string{"package", "benchmark", "ns/op", "B/op", "allocs/op"}}
		for _, a := range r.Allocations {
			at.Add(a.Package, a.Benchmark, fmt.Sprintf("%.0f", a.NsPerOp), a.BytesPerOp, a.AllocsPerOp)
		}
		at.Fprint(w)
	}
	if tk := r.Token; tk != nil {
		tt := harness.Table{Title: fmt.Sprintf("token path (%d holders, %d worker processes)", tk.Holders, tk.Workers), Header: []string{"figure", "value", "target"}}
		tt.Add("fetches at startup", tk.StartupFetches, "1")
		lf := make([]string, len(tk.LifetimeFetches))
		for i, n := range tk.LifetimeFetches {
			lf[i] = fmt.Sprint(n)
		}
		tt.Add("fetches per token lifetime", strings.Join(lf, ", "), "1 each")
		tt.Add(fmt.Sprintf("fetches for %d concurrent invalidation reports", tk.StormReports), tk.StormFetches, "1")
		tt.Add("storm → new token in KV", tk.StormToNewToken, "")
		tt.Add("rotation → every worker uses the new token: p50", tk.Rotation.P50, "")
		tt.Add("rotation → every worker uses the new token: p99", tk.Rotation.P99, "")
		tt.Add("rotation samples (rotations × workers) / missing", fmt.Sprintf("%d / %d", tk.Rotation.N, tk.RotationMissing), "")
		tt.Add("jobs during the phase: resolved / lost / dup", fmt.Sprintf("%d / %d / %d", tk.JobsDuring.Resolved, tk.JobsDuring.Lost, tk.JobsDuring.Duplicates), "0 lost, 0 dup")
		tt.Note("%s", tk.Method)
		tt.Fprint(w)
	}
	if len(r.Targets) > 0 {
		tg := harness.Table{Title: "targets", Header: []string{"target", "want", "got", "", "detail"}}
		for _, g := range r.Targets {
			mark := "ok"
			if !g.Met {
				mark = "MISSED"
			}
			tg.Add(g.Name, g.Want, g.Got, mark, g.Detail)
		}
		tg.Fprint(w)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	if len(r.Failures) > 0 {
		fmt.Fprintln(w, "\nFAILED hard assertions:")
		for _, f := range r.Failures {
			fmt.Fprintln(w, "  -", f)
		}
	}
}
