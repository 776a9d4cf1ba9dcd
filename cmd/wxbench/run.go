package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/harness"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

// The bench apps (simulator only).
var (
	benchApp = harness.App{AppID: "wxbench000000001", Secret: "bench-secret-not-real"}
	tokenApp = harness.App{AppID: "wxbenchtoken0001", Secret: "bench-token-secret-not-real"}
)

const followers = 1000

// env is what every phase shares.
type env struct {
	o      options
	tmp    string
	logs   string
	bins   harness.Binaries
	nats   *harness.NATS
	nc     *nats.Conn
	js     jetstream.JetStream
	quiet  *slog.Logger
	report *report
}

// report is bench-results.json.
type report struct {
	StartedAt   time.Time      `json:"started_at"`
	Host        hostInfo       `json:"host"`
	Scenarios   []scenario     `json:"scenarios"`
	Baselines   []baseline     `json:"baselines"`
	Targets     []target       `json:"targets"`
	Token       *tokenResult   `json:"token_path,omitempty"`
	Memory      *memoryResult  `json:"memory,omitempty"`
	Allocations []allocResult  `json:"allocations,omitempty"`
	Peer        *peerSection   `json:"peer,omitempty"`
	Failures    []string       `json:"failures"`
	Notes       []string       `json:"notes"`
	Elapsed     harness.Millis `json:"elapsed_ms"`
}

type hostInfo struct {
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"go"`
	OS        string `json:"os"`
}

func run(ctx context.Context, o options) (int, error) {
	start := time.Now()
	tmp, cleanup, err := harness.WorkDir("wxbench", o.keep)
	if err != nil {
		return 1, err
	}
	defer cleanup()
	e := &env{o: o, tmp: tmp, logs: filepath.Join(tmp, "logs"), quiet: slog.New(slog.DiscardHandler),
		report: &report{StartedAt: start, Host: hostInfo{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}, Failures: []string{}, Notes: []string{}}}
	root, err := os.Getwd()
	if err != nil {
		return 1, err
	}
	fmt.Println("wxbench: building wxhub and nats-server ...")
	e.bins, err = harness.BuildBinaries(ctx, root, filepath.Join(tmp, "bin"), harness.Binaries{WxHub: o.wxhub, NATSServer: o.nats})
	if err != nil {
		return 1, err
	}
	e.nats, err = harness.StartNATS(ctx, harness.NATSConfig{Bin: e.bins.NATSServer, Dir: filepath.Join(tmp, "nats"), Nodes: 1, LogDir: e.logs})
	if err != nil {
		return 1, err
	}
	defer e.nats.Stop()
	if err := harness.WaitJetStream(ctx, e.nats.URL(), 30*time.Second); err != nil {
		return 1, err
	}
	e.nc, e.js, err = harness.Connect(e.nats.URL(), "wxbench", 8192)
	if err != nil {
		return 1, err
	}
	defer e.nc.Close()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = broker.Provision(pctx, broker.LocalJetStreams(e.js, grants.Provision), broker.Topology{})
	cancel()
	if err != nil {
		return 1, err
	}

	if err := e.throughput(ctx); err != nil {
		return 1, fmt.Errorf("throughput: %w", err)
	}
	if !o.quick {
		if err := e.tokenPath(ctx); err != nil {
			e.report.Failures = append(e.report.Failures, "token path: "+err.Error())
		}
	}
	if !o.skipTest && !o.quick {
		e.allocations(ctx, root)
	}
	e.report.Elapsed = harness.Millis(time.Since(start))
	e.print(os.Stdout)
	return harness.Finish("wxbench", o.out, e.report, e.report.Failures, start)
}

// newSim starts a simulator with app and its followers o0..o999.
func (e *env) newSim(app harness.App, opts ...wechatsim.Option) (*harness.SimServer, error) {
	s, err := harness.StartSim(append([]wechatsim.Option{wechatsim.WithLogger(e.quiet)}, opts...)...)
	if err != nil {
		return nil, err
	}
	s.Sim.AddApp(app.AppID, app.Secret)
	s.Sim.SetTokenDailyLimit(app.AppID, 100000)
	for i := range followers {
		if err := s.Sim.AddFollower(app.AppID, wechatsim.Follower{OpenID: openID(i), SubscribeTime: 1700000000 + int64(i), Remark: "bench"}); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

func openID(i int) string { return fmt.Sprintf("obench%06d", i%followers) }

// lookupPayload returns a user.lookup job builder cycling over followers.
func lookupPayload(appid string) func(string) []byte {
	n := 0
	return func(id string) []byte {
		n++
		b, _ := json.Marshal(events.UserLookup{JobID: id, AppID: appid, OpenID: openID(n), Lang: "zh_CN"})
		return b
	}
}

// startWorkers starts n worker processes and waits until they all pull.
func (e *env) startWorkers(ctx context.Context, name string, n, conc int, app harness.App, baseURL func(i int) string) ([]*harness.Proc, error) {
	var procs []*harness.Proc
	for i := range n {
		p, err := harness.StartRole(harness.RoleConfig{Bin: e.bins.WxHub, Role: "worker", Name: fmt.Sprintf("%s-%d", name, i),
			NATSURL: e.nats.URL(), Apps: []harness.App{app}, WeChatBaseURL: baseURL(i), LogDir: e.logs,
			Args: []string{"--concurrency", fmt.Sprint(conc)}})
		if err != nil {
			stopAll(procs)
			return nil, err
		}
		procs = append(procs, p)
	}
	// Each worker keeps one batched pull request waiting when idle.
	if err := harness.WaitPulls(ctx, e.js, worker.ConsumerName(events.SubjectUserLookup), n, 60*time.Second, procs...); err != nil {
		stopAll(procs)
		return nil, err
	}
	return procs, nil
}

func stopAll(procs []*harness.Proc) {
	for _, p := range procs {
		_ = p.Stop(30 * time.Second)
	}
}

func pids(procs []*harness.Proc) []int {
	out := make([]int, 0, len(procs))
	for _, p := range procs {
		out = append(out, p.PID())
	}
	return out
}
