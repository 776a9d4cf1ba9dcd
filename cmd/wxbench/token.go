package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/holder"
	"github.com/wxhub/wxhub/internal/harness"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

const (
	tokenHolders  = 3
	tokenWorkers  = 8
	lifetimes     = 3
	stormReports  = 1000
	observeWindow = 3 * time.Second
)

type tokenResult struct {
	Holders         int             `json:"holders"`
	Workers         int             `json:"workers"`
	StartupFetches  int64           `json:"startup_fetches"`
	LifetimeFetches []int64         `json:"fetches_per_lifetime"`
	StormReports    int             `json:"storm_reports"`
	StormFetches    int64           `json:"storm_fetches"`
	StormToNewToken harness.Millis  `json:"storm_to_new_token_ms"`
	Rotation        harness.Summary `json:"rotation_to_worker_use"`
	RotationMissing int             `json:"rotation_samples_missing"`
	Rotations       int             `json:"rotations"`
	JobsDuring      harness.Outcome `json:"jobs_during"`
	Method          string          `json:"method"`
}

// tokenPath measures the token path with 3 holders and 8 worker
// processes against a simulator whose clock the bench moves.
//
// The holders run in this process (holder.Config.Now follows the
// simulator's ManualClock, which a wxhub process cannot): each has its own
// NATS connection, id and lease, exactly as separate processes would. The
// workers are wxhub processes, each calling the simulator under its own
// URL prefix, so every user/info call is attributed to its worker.
func (e *env) tokenPath(ctx context.Context) error {
	fmt.Println("wxbench: token path (3 holders, 8 workers) ...")
	clock := wechatsim.NewManualClock(time.Now())
	sim, err := e.newSim(tokenApp, wechatsim.WithClock(clock))
	if err != nil {
		return err
	}
	defer sim.Close()
	res := &tokenResult{Holders: tokenHolders, Workers: tokenWorkers, StormReports: stormReports,
		Method: "rotation → worker use: from the simulator answering /cgi-bin/token with the new token to each worker's first user/info call carrying it (workers under continuous load, 64 jobs in flight); one sample per worker per rotation"}
	e.report.Token = res

	hctx, stopHolders := context.WithCancel(ctx)
	var hwg sync.WaitGroup
	defer func() { stopHolders(); hwg.Wait() }()
	hlog, err := os.Create(filepath.Join(e.logs, "holders.log"))
	if err != nil {
		return err
	}
	defer hlog.Close()
	for i := range tokenHolders {
		nc, _, err := harness.Connect(e.nats.URL(), fmt.Sprintf("bench-holder-%d", i), 0)
		if err != nil {
			return err
		}
		defer nc.Close()
		wc, err := wechat.NewClient(wechat.Config{BaseURL: sim.URL})
		if err != nil {
			return err
		}
		h, err := holder.New(holder.Config{Conn: nc, WeChat: wc, ID: fmt.Sprintf("bench-holder-%d", i),
			Apps: []holder.App{{AppID: tokenApp.AppID, Secret: tokenApp.Secret}}, Now: clock.Now,
			MaxClockSkew: -1, // the simulated clock jumps hours ahead of the NATS server's
			Logger:       slog.New(slog.NewTextHandler(hlog, &slog.HandlerOptions{Level: slog.LevelWarn})).With("holder", i)})
		if err != nil {
			return err
		}
		hwg.Add(1)
		go func() {
			defer hwg.Done()
			if err := h.Run(hctx); err != nil && hctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "wxbench: holder %d: %v\n", i, err)
			}
		}()
	}
	rec, _, err := harness.WaitToken(ctx, e.js, tokenApp.AppID, 0, 30*time.Second)
	if err != nil {
		return err
	}
	workers, err := e.startWorkers(ctx, "token-worker", tokenWorkers, 16, tokenApp, sim.WorkerURL)
	if err != nil {
		return err
	}
	defer stopAll(workers)
	res.StartupFetches = sim.TokenCalls(tokenApp.AppID)

	// Continuous load for the whole phase.
	tr := harness.NewTracker(e.js, "", "tok")
	if err := tr.Start(ctx); err != nil {
		return err
	}
	defer tr.Stop()
	stopLoad := make(chan struct{})
	loadDone := make(chan error, 1)
	go func() {
		_, err := harness.ClosedLoop(ctx, tr, harness.LoadConfig{Subject: events.SubjectUserLookup, Payload: lookupPayload(tokenApp.AppID),
			Window: 64, Measure: 10 * time.Minute, Stop: stopLoad, Drain: 60 * time.Second})
		loadDone <- err
	}()
	loadStopped := false
	endLoad := func() error {
		if loadStopped {
			return nil
		}
		loadStopped = true
		close(stopLoad)
		return <-loadDone
	}
	defer endLoad()
	// Let every worker make calls with the current token first.
	if err := harness.WaitFor(ctx, 20*time.Second, 20*time.Millisecond, func() bool { return tr.Outcome().Resolved >= 500 }); err != nil {
		return fmt.Errorf("no load through the workers: %w", err)
	}

	var samples []time.Duration
	rotation := func() {
		iss := sim.Issued()
		if len(iss) == 0 {
			return
		}
		last := iss[len(iss)-1]
		use := sim.FirstUse(last.FP)
		res.Rotations++
		for w := range tokenWorkers {
			t, ok := use[w]
			if !ok {
				res.RotationMissing++
				continue
			}
			samples = append(samples, t.Sub(last.At))
		}
	}

	// Lifetimes: move the simulator's (and holders') clock to 5 minutes
	// before the token expires; the scheduled refresh (10 min margin) is
	// due, and exactly one holder must fetch exactly once.
	for range lifetimes {
		before := sim.TokenCalls(tokenApp.AppID)
		clock.Set(rec.ExpiresAt.Add(-5 * time.Minute))
		next, _, err := harness.WaitToken(ctx, e.js, tokenApp.AppID, rec.Version, 20*time.Second)
		if err != nil {
			return fmt.Errorf("scheduled refresh: %w", err)
		}
		rec = next
		// Watch for extra fetches for a while (and for every worker to
		// switch to the new token).
		observe(ctx, observeWindow)
		res.LifetimeFetches = append(res.LifetimeFetches, sim.TokenCalls(tokenApp.AppID)-before)
		rotation()
	}

	// Storm: 1,000 concurrent reports against the current version.
	before := sim.TokenCalls(tokenApp.AppID)
	body, _ := json.Marshal(events.TokenInvalidated{AppID: tokenApp.AppID, Version: rec.Version, ErrCode: 40001, Reporter: "bench"})
	subject := events.NewSubjects("").TokenInvalidated
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for range stormReports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			_ = e.nc.Publish(subject, body)
		}()
	}
	t0 := time.Now()
	close(gate)
	wg.Wait()
	if err := e.nc.FlushTimeout(10 * time.Second); err != nil {
		return err
	}
	_, seen, err := harness.WaitToken(ctx, e.js, tokenApp.AppID, rec.Version, 20*time.Second)
	if err != nil {
		return fmt.Errorf("storm refresh: %w", err)
	}
	res.StormToNewToken = harness.Millis(seen.Sub(t0))
	observe(ctx, observeWindow)
	res.StormFetches = sim.TokenCalls(tokenApp.AppID) - before
	rotation()

	if err := endLoad(); err != nil {
		return err
	}
	res.JobsDuring = tr.Outcome()
	res.Rotation = harness.Summarize(samples)

	for i, n := range res.LifetimeFetches {
		if n != 1 {
			e.report.Failures = append(e.report.Failures, fmt.Sprintf("token lifetime %d: %d fetches, want exactly 1", i+1, n))
		}
	}
	if res.StartupFetches != 1 {
		e.report.Failures = append(e.report.Failures, fmt.Sprintf("startup with %d holders: %d fetches, want exactly 1", tokenHolders, res.StartupFetches))
	}
	if res.StormFetches != 1 {
		e.report.Failures = append(e.report.Failures, fmt.Sprintf("%d invalidation reports: %d fetches, want exactly 1", stormReports, res.StormFetches))
	}
	if o := res.JobsDuring; o.Lost > 0 || o.Duplicates > 0 {
		e.report.Failures = append(e.report.Failures, fmt.Sprintf("jobs during token rotations: %d lost, %d duplicates", o.Lost, o.Duplicates))
	}
	return nil
}

// observe waits d (or until ctx ends): a fixed observation window during
// which extra token fetches would show; nothing is synchronised on it.
func observe(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
