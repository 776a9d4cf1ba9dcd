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
	e.printPeer(w)
	if len(r.Scenarios) == 0 {
		e.printTargets(w)
		return
	}
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
	e.printTargets(w)
}

// printTargets writes the targets, notes and failures.
func (e *env) printTargets(w io.Writer) {
	r := e.report
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

// printPeer writes the side-by-side comparison and the scale figure.
func (e *env) printPeer(w io.Writer) {
	ps := e.report.Peer
	if ps == nil {
		return
	}
	t := harness.Table{Title: fmt.Sprintf("wxhub worker vs hand-written nats.go worker (peer): 1 process, medians of %d alternating rounds, %v measured per run (at a latency: long enough for about %d jobs, at most %v)",
		ps.Rounds, time.Duration(ps.Measure), peerMinJobs, peerMaxMeasure),
		Header: []string{"sim lat", "conc", "peer jobs/s", "wxhub jobs/s", "ratio", "peer p50/p99", "wxhub p50/p99", "peer µs CPU/job", "wxhub µs CPU/job", "ratio", "lost", "dup"}}
	for i, c := range ps.Cells {
		r := ps.Ratios[i]
		t.Add(fmt.Sprintf("%dms", c.LatencyMS), c.Concurrency, harness.FormatRate(c.Peer.JobsPerS), harness.FormatRate(c.WxHub.JobsPerS),
			fmt.Sprintf("%.2f", r.JobsPerS), fmt.Sprintf("%.1f / %.1f", c.Peer.P50MS, c.Peer.P99MS), fmt.Sprintf("%.1f / %.1f", c.WxHub.P50MS, c.WxHub.P99MS),
			fmt.Sprintf("%.0f", c.Peer.CPUUsPerJob), fmt.Sprintf("%.0f", c.WxHub.CPUUsPerJob), fmt.Sprintf("%.2f", r.CPUPerJob),
			c.Peer.Lost+c.WxHub.Lost, c.Peer.Duplicates+c.WxHub.Duplicates)
	}
	t.Note("ratio = wxhub ÷ peer; CPU per job is the worker process only (whole run ÷ jobs resolved)")
	t.Note("the simulator, the load generator and nats-server share the machine's %d cores with the worker", e.report.Host.CPUs)
	t.Fprint(w)
	if len(ps.Scale) == 0 {
		return
	}
	st := harness.Table{Title: "scale: wxhub worker processes at 50 ms, 256 in flight each",
		Header: []string{"procs", "in flight", "jobs/s", "p50 / p99", "ceiling C/L", "ceiling CPU (peer best at 0 ms)", "share of min", "cpu wrk", "cpu nats", "cpu harn"}}
	for _, s := range ps.Scale {
		st.Add(s.Procs, s.Procs*s.Concurrency, harness.FormatRate(s.Result.Throughput), fmt.Sprintf("%s / %s", s.Result.Latency.P50, s.Result.Latency.P99),
			harness.FormatRate(s.CeilingC), harness.FormatRate(s.CeilingCPU), harness.FormatPct(s.Share),
			fmt.Sprintf("%.2f", s.CPU.Workers), fmt.Sprintf("%.2f", s.CPU.NATS), fmt.Sprintf("%.2f", s.CPU.Harness))
	}
	st.Fprint(w)
}
