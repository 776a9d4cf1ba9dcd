package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/harness"
	"github.com/wxhub/wxhub/wechat"
)

// scenario is one cell of the user.lookup matrix.
type scenario struct {
	LatencyMS   int                `json:"sim_latency_ms"`
	Procs       int                `json:"worker_processes"`
	Concurrency int                `json:"concurrency_per_worker"`
	InFlight    int                `json:"in_flight"`
	Result      harness.LoadResult `json:"result"`
	CeilingPerS float64            `json:"ceiling_per_s,omitempty"` // in-flight ÷ latency (latency > 0)
	CPU         cpuUse             `json:"cpu_cores"`
	WorkerRSS   int64              `json:"worker_rss_max_bytes"`
	Baseline    *baseline          `json:"-"`
}

type cpuUse struct {
	Workers float64 `json:"workers"`
	NATS    float64 `json:"nats"`
	Harness float64 `json:"harness"` // simulator + load generator + result reader
}

func (c cpuUse) total() float64 { return c.Workers + c.NATS + c.Harness }

// baseline is a plain Go program's figures: concurrency goroutines each
// calling the simulator's user/info over HTTP in a loop, no NATS.
type baseline struct {
	LatencyMS   int             `json:"sim_latency_ms"`
	Concurrency int             `json:"concurrency"`
	Calls       int             `json:"calls"`
	Throughput  float64         `json:"calls_per_s"`
	Latency     harness.Summary `json:"latency"`
	Errors      int64           `json:"errors"`
	CPU         float64         `json:"cpu_cores"`
}

type memoryResult struct {
	Concurrency   int           `json:"concurrency"`
	IdleRSS       int64         `json:"idle_rss_bytes"`
	LoadRSS       int64         `json:"load_rss_bytes"`
	IdleRSSByConc map[int]int64 `json:"idle_rss_by_concurrency"`
	LoadRSSByConc map[int]int64 `json:"load_rss_by_concurrency"`
}

// target is one of the targets and whether it was met.
type target struct {
	Name   string `json:"name"`
	Want   string `json:"want"`
	Got    string `json:"got"`
	Met    bool   `json:"met"`
	Detail string `json:"detail,omitempty"`
}

func (e *env) matrix() (procs, concs []int, lats []time.Duration) {
	return []int{1, 2, 4}, []int{1, 16, 64, 256}, []time.Duration{0, 50 * time.Millisecond}
}

// throughput runs the matrix and the baselines.
func (e *env) throughput(ctx context.Context) error {
	sim, err := e.newSim(benchApp)
	if err != nil {
		return err
	}
	defer sim.Close()
	holder, err := harness.StartRole(harness.RoleConfig{Bin: e.bins.WxHub, Role: "holder", Name: "holder", NATSURL: e.nats.URL(),
		Apps: []harness.App{benchApp}, WeChatBaseURL: sim.URL, LogDir: e.logs})
	if err != nil {
		return err
	}
	defer holder.Stop(10 * time.Second)
	if _, _, err := harness.WaitToken(ctx, e.js, benchApp.AppID, 0, 30*time.Second); err != nil {
		return fmt.Errorf("%w\n%s", err, holder.LogTail(3000))
	}
	if err := e.peerCompare(ctx, sim); err != nil {
		return fmt.Errorf("peer comparison: %w", err)
	}
	if e.o.quick {
		return nil
	}
	procsList, concs, lats := e.matrix()
	mem := &memoryResult{Concurrency: 64, IdleRSSByConc: map[int]int64{}, LoadRSSByConc: map[int]int64{}}
	self := os.Getpid()
	for _, np := range procsList {
		for _, conc := range concs {
			fmt.Printf("wxbench: %d worker process(es) × concurrency %d ...\n", np, conc)
			workers, err := e.startWorkers(ctx, fmt.Sprintf("worker-p%dc%d", np, conc), np, conc, benchApp, func(int) string { return sim.URL })
			if err != nil {
				return err
			}
			if np == 1 {
				// Idle: ready, token loaded, no jobs yet.
				if rss, err := harness.ReadRSS(workers[0].PID()); err == nil {
					mem.IdleRSSByConc[conc] = rss
				}
			}
			for _, lat := range lats {
				sim.Sim.SetLatency(lat)
				var rssMax atomic.Int64
				sampler := harness.StartSampler(200*time.Millisecond, func() {
					for _, p := range workers {
						if r, err := harness.ReadRSS(p.PID()); err == nil && r > rssMax.Load() {
							rssMax.Store(r)
						}
					}
				})
				cw, cn, ch := harness.StartCPU(pids(workers)...), harness.StartCPU(e.nats.PIDs()...), harness.StartCPU(self)
				tr := harness.NewTracker(e.js, "", fmt.Sprintf("b-l%d-p%d-c%d", lat.Milliseconds(), np, conc))
				if err := tr.Start(ctx); err != nil {
					sampler.Stop()
					stopAll(workers)
					return err
				}
				inflight := np * conc
				res, err := harness.ClosedLoop(ctx, tr, harness.LoadConfig{Subject: events.SubjectUserLookup, Payload: lookupPayload(benchApp.AppID),
					Window: inflight, Warmup: e.o.warmup, Measure: e.o.measure, Drain: 60 * time.Second})
				cpu := cpuUse{Workers: cw.Cores(), NATS: cn.Cores(), Harness: ch.Cores()}
				tr.Stop()
				sampler.Stop()
				if err != nil {
					stopAll(workers)
					return err
				}
				sc := scenario{LatencyMS: int(lat.Milliseconds()), Procs: np, Concurrency: conc, InFlight: inflight, Result: res, CPU: cpu, WorkerRSS: rssMax.Load()}
				if lat > 0 {
					sc.CeilingPerS = float64(inflight) / lat.Seconds()
				}
				if np == 1 && rssMax.Load() > mem.LoadRSSByConc[conc] {
					mem.LoadRSSByConc[conc] = rssMax.Load()
				}
				e.report.Scenarios = append(e.report.Scenarios, sc)
				fmt.Printf("  latency %3dms: %s, p50 %s, p99 %s, cpu %.2f cores (lost %d, dup %d)\n", sc.LatencyMS, harness.FormatRate(res.Throughput),
					res.Latency.P50, res.Latency.P99, cpu.total(), res.Outcome.Lost, res.Outcome.Duplicates)
			}
			stopAll(workers)
		}
	}
	mem.IdleRSS, mem.LoadRSS = mem.IdleRSSByConc[64], mem.LoadRSSByConc[64]
	e.report.Memory = mem

	// Baselines at every in-flight count the matrix used.
	var ins []int
	for _, sc := range e.report.Scenarios {
		if !slices.Contains(ins, sc.InFlight) {
			ins = append(ins, sc.InFlight)
		}
	}
	slices.Sort(ins)
	token := sim.Sim.ValidToken(benchApp.AppID)
	for _, lat := range lats {
		sim.Sim.SetLatency(lat)
		for _, c := range ins {
			b := runBaseline(ctx, sim.URL, token, c, e.o.warmup, e.o.measure)
			b.LatencyMS = int(lat.Milliseconds())
			e.report.Baselines = append(e.report.Baselines, b)
			fmt.Printf("wxbench: baseline latency %dms concurrency %d: %s, p99 %s\n", b.LatencyMS, c, harness.FormatRate(b.Throughput), b.Latency.P99)
		}
	}
	for i := range e.report.Scenarios {
		sc := &e.report.Scenarios[i]
		for j := range e.report.Baselines {
			b := &e.report.Baselines[j]
			if b.LatencyMS == sc.LatencyMS && b.Concurrency == sc.InFlight {
				sc.Baseline = b
			}
		}
	}
	e.judge()
	return nil
}

// runBaseline keeps c user/info calls in flight for warmup+measure.
func runBaseline(ctx context.Context, base, token string, c int, warmup, measure time.Duration) baseline {
	client := wechat.NewHTTPClient()
	defer client.CloseIdleConnections()
	from := time.Now().Add(warmup)
	to := from.Add(measure)
	var mu sync.Mutex
	var lat []time.Duration
	var errs atomic.Int64
	cpu := harness.StartCPU(os.Getpid())
	var wg sync.WaitGroup
	for g := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for n := 0; ; n++ {
				t0 := time.Now()
				if !t0.Before(to) || ctx.Err() != nil {
					break
				}
				q := url.Values{"access_token": {token}, "openid": {openID(g*7919 + n)}, "lang": {"zh_CN"}}
				resp, err := client.Get(base + "/cgi-bin/user/info?" + q.Encode())
				if err != nil {
					errs.Add(1)
					continue
				}
				var body struct {
					ErrCode int    `json:"errcode"`
					OpenID  string `json:"openid"`
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err := jsonUnmarshal(b, &body); err != nil || body.ErrCode != 0 || resp.StatusCode != http.StatusOK {
					errs.Add(1)
					continue
				}
				if !t0.Before(from) {
					mine = append(mine, time.Since(t0))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	span := time.Since(from)
	if span > measure+5*time.Second || span <= 0 {
		span = measure
	}
	return baseline{Concurrency: c, Calls: len(lat), Throughput: harness.Rate(len(lat), measure), Latency: harness.Summarize(lat), Errors: errs.Load(), CPU: cpu.Cores()}
}

// judge evaluates the throughput and latency targets.
func (e *env) judge() {
	r := e.report
	var best *scenario
	for i := range r.Scenarios {
		sc := &r.Scenarios[i]
		if sc.LatencyMS == 0 && (best == nil || sc.Result.Throughput > best.Result.Throughput) {
			best = sc
		}
	}
	if best != nil {
		r.Targets = append(r.Targets, target{Name: "user.lookup jobs/s at latency 0", Want: "≥ 5000/s",
			Got: harness.FormatRate(best.Result.Throughput), Met: best.Result.Throughput >= 5000,
			Detail: fmt.Sprintf("best cell: %d process(es) × concurrency %d", best.Procs, best.Concurrency)})
	}
	for i := range r.Scenarios {
		sc := &r.Scenarios[i]
		if sc.LatencyMS == 0 {
			continue
		}
		share := sc.Result.Throughput / sc.CeilingPerS
		r.Targets = append(r.Targets, target{Name: fmt.Sprintf("latency %dms, %d×%d: share of ceiling", sc.LatencyMS, sc.Procs, sc.Concurrency),
			Want: "≥ 90% of " + harness.FormatRate(sc.CeilingPerS), Got: harness.FormatPct(share), Met: share >= 0.9})
	}
	// p99 added latency over the baseline, below saturation: cells with
	// simulator latency (at latency 0 a closed loop has no idle time, so
	// it always runs at saturation) whose processes (workers, NATS,
	// harness) used under 80% of the machine.
	limit := 0.8 * float64(r.Host.CPUs)
	for i := range r.Scenarios {
		sc := &r.Scenarios[i]
		if sc.Baseline == nil || sc.LatencyMS == 0 || sc.CPU.total() >= limit {
			continue
		}
		added := time.Duration(sc.Result.Latency.P99) - time.Duration(sc.Baseline.Latency.P99)
		r.Targets = append(r.Targets, target{Name: fmt.Sprintf("p99 added over baseline, latency %dms, %d×%d", sc.LatencyMS, sc.Procs, sc.Concurrency),
			Want: "≤ 5ms", Got: harness.FormatMs(added), Met: added <= 5*time.Millisecond,
			Detail: fmt.Sprintf("cpu %.2f of %d cores", sc.CPU.total(), r.Host.CPUs)})
	}
}
