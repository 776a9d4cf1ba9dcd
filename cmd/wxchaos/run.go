package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/harness"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

var app = harness.App{AppID: "wxchaos000000001", Secret: "chaos-secret-not-real"}

const (
	followers   = 500
	nHolders    = 2
	nWorkers    = 3
	concurrency = 16
	ackWait     = 15 * time.Second
	leaseTTL    = 5 * time.Second
)

// report is chaos-results.json.
type report struct {
	StartedAt     time.Time       `json:"started_at"`
	CPUs          int             `json:"cpus"`
	Jobs          int             `json:"jobs_planned"`
	Rate          float64         `json:"rate_per_s"`
	Outcome       harness.Outcome `json:"outcome"`
	ByJobSubject  map[string]int  `json:"published_by_subject"`
	TokenFetches  int64           `json:"token_fetches"`
	Steady        harness.Summary `json:"steady_latency"`
	Threshold     harness.Millis  `json:"recovery_threshold_ms"`
	Faults        []*fault        `json:"faults"`
	Latency       harness.Summary `json:"latency_all"`
	Failures      []string        `json:"failures"`
	Notes         []string        `json:"notes"`
	Elapsed       harness.Millis  `json:"elapsed_ms"`
	RecountErrors string          `json:"recount_error,omitempty"`
}

// fault is one injected fault and what followed it.
type fault struct {
	Name string `json:"name"`
	// At is when the fault was injected; From is where recovery is
	// measured from (At, or when the fault was lifted).
	At           time.Time       `json:"at"`
	From         time.Time       `json:"recovery_from"`
	Until        time.Time       `json:"phase_end"`
	Detail       string          `json:"detail"`
	TokenFetches int64           `json:"token_fetches_before"`
	Jobs         int             `json:"jobs_published_in_phase"`
	Latency      harness.Summary `json:"latency_in_phase"`
	Affected     int             `json:"affected_jobs"`
	RecoverNew   harness.Millis  `json:"recover_new_jobs_ms"`
	AllDone      harness.Millis  `json:"all_affected_done_ms"`
	Err          string          `json:"error,omitempty"`
}

type env struct {
	o      options
	logs   string
	bins   harness.Binaries
	nats   *harness.NATS
	js     jetstream.JetStream
	sim    *harness.SimServer
	hold   map[string]*harness.Proc // holder id → process
	work   []*harness.Proc
	report *report
}

func run(ctx context.Context, o options) (int, error) {
	start := time.Now()
	tmp, cleanup, err := harness.WorkDir("wxchaos", o.keep)
	if err != nil {
		return 1, err
	}
	defer cleanup()
	e := &env{o: o, logs: filepath.Join(tmp, "logs"), hold: map[string]*harness.Proc{},
		report: &report{StartedAt: start, CPUs: runtime.NumCPU(), Jobs: o.jobs, Rate: o.rate, ByJobSubject: map[string]int{}, Failures: []string{}, Notes: []string{}}}
	root, err := os.Getwd()
	if err != nil {
		return 1, err
	}
	fmt.Println("wxchaos: building wxhub and nats-server ...")
	if e.bins, err = harness.BuildBinaries(ctx, root, filepath.Join(tmp, "bin"), harness.Binaries{WxHub: o.wxhub, NATSServer: o.nats}); err != nil {
		return 1, err
	}
	fmt.Println("wxchaos: starting a 3-node NATS cluster ...")
	if e.nats, err = harness.StartNATS(ctx, harness.NATSConfig{Bin: e.bins.NATSServer, Dir: filepath.Join(tmp, "nats"), Nodes: 3, LogDir: e.logs}); err != nil {
		return 1, err
	}
	defer e.nats.Stop()
	if err := harness.WaitJetStream(ctx, e.nats.URL(), 60*time.Second); err != nil {
		return 1, err
	}
	nc, js, err := harness.Connect(e.nats.URL(), "wxchaos", 0)
	if err != nil {
		return 1, err
	}
	defer nc.Close()
	e.js = js
	// The meta leader may still be settling: retry provisioning.
	if err := harness.WaitFor(ctx, 60*time.Second, 500*time.Millisecond, func() bool {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return broker.Provision(pctx, broker.LocalJetStreams(js, grants.Provision), broker.Topology{Replicas: 3, AckWait: ackWait}) == nil
	}); err != nil {
		return 1, fmt.Errorf("provision with 3 replicas: %w", err)
	}

	e.sim, err = harness.StartSim(wechatsim.WithLogger(slog.New(slog.DiscardHandler)), wechatsim.WithLatency(o.latency))
	if err != nil {
		return 1, err
	}
	defer e.sim.Close()
	e.sim.Sim.AddApp(app.AppID, app.Secret)
	for i := range followers {
		if err := e.sim.Sim.AddFollower(app.AppID, wechatsim.Follower{OpenID: openID(i), UnionID: fmt.Sprintf("uchaos%06d", i), Nickname: "chaos"}); err != nil {
			return 1, err
		}
	}
	if err := e.startRoles(ctx); err != nil {
		return 1, err
	}
	defer func() {
		for _, p := range append(e.work, slices.Collect(maps.Values(e.hold))...) {
			_ = p.Stop(20 * time.Second)
		}
	}()

	if err := e.load(ctx); err != nil {
		e.report.Failures = append(e.report.Failures, err.Error())
	}
	e.report.TokenFetches = e.sim.TokenCalls(app.AppID)
	e.report.Elapsed = harness.Millis(time.Since(start))
	e.print()
	return harness.Finish("wxchaos", o.out, e.report, e.report.Failures, start)
}

func openID(i int) string { return fmt.Sprintf("ochaos%06d", i%followers) }

// startRoles starts the holders, waits for a token, then the workers.
func (e *env) startRoles(ctx context.Context) error {
	for i := range nHolders {
		id := fmt.Sprintf("holder-%d", i)
		p, err := harness.StartRole(harness.RoleConfig{Bin: e.bins.WxHub, Role: "holder", Name: id, NATSURL: e.nats.URL(), Apps: []harness.App{app},
			WeChatBaseURL: e.sim.URL, LogDir: e.logs, Args: []string{"--holder-id", id, "--lease-ttl", leaseTTL.String()}})
		if err != nil {
			return err
		}
		e.hold[id] = p
	}
	if _, _, err := harness.WaitToken(ctx, e.js, app.AppID, 0, 60*time.Second); err != nil {
		return fmt.Errorf("%w\n%s", err, e.hold["holder-0"].LogTail(3000))
	}
	for i := range nWorkers {
		p, err := harness.StartRole(harness.RoleConfig{Bin: e.bins.WxHub, Role: "worker", Name: fmt.Sprintf("worker-%d", i), NATSURL: e.nats.URL(),
			Apps: []harness.App{app}, WeChatBaseURL: e.sim.URL, LogDir: e.logs,
			Args: []string{"--concurrency", fmt.Sprint(concurrency), "--ack-wait", ackWait.String()}})
		if err != nil {
			return err
		}
		e.work = append(e.work, p)
	}
	// Every role must still be running once the workers are ready: a
	// holder that exited at start would make the takeover fault meaningless.
	alive := append(slices.Collect(maps.Values(e.hold)), e.work...)
	// Each worker keeps one batched pull request waiting when idle.
	return harness.WaitPulls(ctx, e.js, worker.ConsumerName(events.SubjectUserLookup), nWorkers, 90*time.Second, alive...)
}

// load publishes the jobs at a steady rate while the faults run, then
// waits for every result and counts.
func (e *env) load(ctx context.Context) error {
	tr := harness.NewTracker(e.js, "", fmt.Sprintf("chaos%d", time.Now().Unix()))
	if err := tr.Start(ctx); err != nil {
		return err
	}
	defer tr.Stop()
	total := time.Duration(float64(e.o.jobs) / e.o.rate * float64(time.Second))
	start := time.Now()
	fmt.Printf("wxchaos: publishing %d jobs over %s with faults ...\n", e.o.jobs, total.Round(time.Second))
	faultsDone := make(chan struct{})
	go func() {
		defer close(faultsDone)
		e.faults(ctx, start, total)
	}()
	subj := events.NewSubjects("")
	for i := range e.o.jobs {
		due := start.Add(time.Duration(float64(i) / e.o.rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
			}
		}
		subject, payload := subj.UserLookup, lookupPayload(i)
		if float64(i%100) < e.o.oauth*100 {
			code, err := e.sim.Sim.IssueCode(app.AppID, openID(i), []string{wechatsim.ScopeBase, wechatsim.ScopeUserInfo}[i%2])
			if err != nil {
				return err
			}
			subject, payload = subj.OAuthCodeReceived, oauthPayload(code)
		}
		if _, err := tr.Publish(ctx, subject, 30*time.Second, payload); err != nil {
			fmt.Fprintf(os.Stderr, "wxchaos: job %d not accepted: %v\n", i, err)
		} else {
			e.report.ByJobSubject[subject]++
		}
	}
	<-faultsDone
	fmt.Println("wxchaos: all published; waiting for every result ...")
	if err := tr.WaitResolved(ctx, 4*time.Minute); err != nil {
		e.report.Notes = append(e.report.Notes, "live reader: "+err.Error())
	}
	// A late second result would show within the stream's next seconds.
	observe(ctx, 5*time.Second)
	if err := tr.Recount(ctx, 2*time.Minute); err != nil {
		e.report.RecountErrors = err.Error()
		e.report.Failures = append(e.report.Failures, "recount of WX_RESULTS: "+err.Error())
	}
	out := tr.Outcome()
	e.report.Outcome = out
	e.report.Failures = append(e.report.Failures, out.Failures()...)
	e.analyse(tr.Jobs())
	return nil
}

func lookupPayload(i int) func(string) []byte {
	return func(id string) []byte {
		b, _ := json.Marshal(events.UserLookup{JobID: id, AppID: app.AppID, OpenID: openID(i), Lang: "zh_CN"})
		return b
	}
}

func oauthPayload(code string) func(string) []byte {
	return func(id string) []byte {
		b, _ := json.Marshal(events.OAuthCodeReceived{JobID: id, AppID: app.AppID, Code: code, State: "chaos"})
		return b
	}
}

// faults injects the faults one after another, spread over the
// publishing time.
func (e *env) faults(ctx context.Context, start time.Time, total time.Duration) {
	at := func(frac float64) bool {
		t := time.NewTimer(time.Until(start.Add(time.Duration(frac * float64(total)))))
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	steps := []struct {
		frac float64
		name string
		do   func(f *fault) error
	}{
		{0.12, "worker SIGKILL", e.killWorker},
		{0.32, "leading holder SIGKILL", e.killLeader},
		{0.52, "NATS node SIGKILL + restart", e.killNATS},
		{0.72, "simulator -1 on 5%, 2s delay on 1%", e.simFaults},
	}
	for _, s := range steps {
		if !at(s.frac) {
			return
		}
		f := &fault{Name: s.name, At: time.Now(), TokenFetches: e.sim.TokenCalls(app.AppID)}
		f.From = f.At
		fmt.Printf("wxchaos: %6.1fs  %s\n", time.Since(start).Seconds(), s.name)
		if err := s.do(f); err != nil {
			f.Err = err.Error()
			e.report.Failures = append(e.report.Failures, fmt.Sprintf("%s: %v", s.name, err))
		}
		if f.Detail != "" {
			fmt.Printf("           %s\n", f.Detail)
		}
		e.report.Faults = append(e.report.Faults, f)
	}
}

func (e *env) killWorker(f *fault) error {
	p := e.work[0]
	if err := p.Kill(); err != nil {
		return err
	}
	f.Detail = fmt.Sprintf("%s (pid %d) killed, not restarted; the jobs it held are redelivered after AckWait %s", p.Name, p.PID(), ackWait)
	return nil
}

func (e *env) killLeader(f *fault) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, events.BucketLeases)
	if err != nil {
		return err
	}
	entry, err := kv.Get(ctx, app.AppID)
	if err != nil {
		return fmt.Errorf("lease of %s: %w", app.AppID, err)
	}
	leader := string(entry.Value())
	p, ok := e.hold[leader]
	if !ok {
		return fmt.Errorf("lease held by unknown holder %q", leader)
	}
	w, err := kv.Watch(ctx, app.AppID, jetstream.UpdatesOnly())
	if err != nil {
		return err
	}
	defer w.Stop()
	killed := time.Now()
	if err := p.Kill(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			var standby []string
			for id, h := range e.hold {
				if id == leader {
					continue
				}
				state := "running"
				if h.Exited() {
					state = fmt.Sprintf("exited (%v): %s", h.Err(), h.LogTail(5))
				}
				standby = append(standby, id+" "+state)
			}
			return fmt.Errorf("no holder took over from %s within 60s; standbys: %s", leader, strings.Join(standby, "; "))
		case en := <-w.Updates():
			if en == nil || en.Operation() != jetstream.KeyValuePut || string(en.Value()) == leader {
				continue
			}
			f.Detail = fmt.Sprintf("leader %s killed; %s took the lease after %s (lease TTL %s)", leader, string(en.Value()), time.Since(killed).Round(time.Millisecond), leaseTTL)
			return nil
		}
	}
}

func (e *env) killNATS(f *fault) error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	victim, leader := 0, ""
	if s, err := e.js.Stream(ctx, events.StreamJobs); err == nil {
		if info, err := s.Info(ctx); err == nil && info.Cluster != nil {
			leader = info.Cluster.Leader
			fmt.Sscanf(leader, "n%d", &victim)
		}
	}
	if victim < 0 || victim >= e.nats.Nodes() {
		victim = 0
	}
	if err := e.nats.Kill(victim); err != nil {
		return err
	}
	down := time.Now()
	observe(ctx, 5*time.Second)
	if err := e.nats.Restart(ctx, victim); err != nil {
		return err
	}
	restarted := time.Now()
	// Caught up: the restarted node leads, or its replica is current, for
	// both the jobs and the results stream.
	name := fmt.Sprintf("n%d", victim)
	var caught time.Duration
	state := "no answer"
	err := harness.WaitFor(ctx, 60*time.Second, 200*time.Millisecond, func() bool {
		for _, st := range []string{events.StreamJobs, events.StreamResults} {
			ictx, icancel := context.WithTimeout(ctx, 2*time.Second)
			info, err := streamInfo(ictx, e.js, st)
			icancel()
			if err != nil {
				state = fmt.Sprintf("%s: %v", st, err)
				return false
			}
			if info.Cluster == nil {
				state = st + ": no cluster info"
				return false
			}
			ok := info.Cluster.Leader == name
			var reps []string
			for _, r := range info.Cluster.Replicas {
				reps = append(reps, fmt.Sprintf("%s current=%v lag=%d", r.Name, r.Current, r.Lag))
				if r.Name == name && r.Current {
					ok = true
				}
			}
			if !ok {
				state = fmt.Sprintf("%s: leader %q, replicas %v", st, info.Cluster.Leader, reps)
				return false
			}
		}
		caught = time.Since(restarted)
		return true
	})
	if err != nil {
		err = fmt.Errorf("%w (last state: %s)", err, state)
	}
	f.Detail = fmt.Sprintf("node %s killed (WX_JOBS leader was %q), restarted after %s; its replicas current %s after restart", name, leader, restarted.Sub(down).Round(time.Millisecond), caught.Round(time.Millisecond))
	if err != nil {
		return fmt.Errorf("node %s did not catch up: %w", name, err)
	}
	return nil
}

func streamInfo(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

func (e *env) simFaults(f *fault) error {
	for _, ft := range []wechatsim.Fault{{Path: "*", ErrCode: -1, Rate: 0.05}, {Path: "*", DelayMS: 2000, Rate: 0.01}} {
		if err := e.sim.Sim.AddFault(ft); err != nil {
			return err
		}
	}
	hold := time.Duration(0.15 * float64(time.Duration(float64(e.o.jobs)/e.o.rate*float64(time.Second))))
	observe(context.Background(), hold)
	e.sim.Sim.ClearFaults()
	f.From = time.Now()
	st := e.sim.Sim.Stats()
	f.Detail = fmt.Sprintf("faults on for %s, then cleared; simulator answered -1 %d times so far", hold.Round(time.Second), st.ErrCodes["-1"])
	return nil
}

// analyse computes the latency figures and each fault's recovery.
//
// A job is affected when its latency exceeds the threshold (3 × the p99 of
// the jobs published before the first fault, at least 1 s) or it has no
// result. For each fault, with its phase running until the next fault:
// "recover new jobs" is the time from the fault (or from when it was
// lifted) to the publish time of the last affected job published in the
// phase: from then on every new job went through normally; "all affected
// done" is the time from the fault until the last affected job that was in
// flight or published in the phase got its result.
func (e *env) analyse(jobs []harness.JobRecord) {
	var all, steady []time.Duration
	first := time.Time{}
	if len(e.report.Faults) > 0 {
		first = e.report.Faults[0].At
	}
	for _, j := range jobs {
		if !j.Acked || j.First.IsZero() {
			continue
		}
		all = append(all, j.Latency())
		if !first.IsZero() && j.Published.Before(first) {
			steady = append(steady, j.Latency())
		}
	}
	e.report.Latency = harness.Summarize(all)
	e.report.Steady = harness.Summarize(steady)
	threshold := max(time.Second, 3*time.Duration(e.report.Steady.P99))
	e.report.Threshold = harness.Millis(threshold)
	for k, f := range e.report.Faults {
		f.Until = time.Now()
		if k+1 < len(e.report.Faults) {
			f.Until = e.report.Faults[k+1].At
		} else if n := len(jobs); n > 0 {
			f.Until = jobs[n-1].Published.Add(time.Nanosecond)
		}
		var phase []time.Duration
		var lastBadPub, lastDone time.Time
		for _, j := range jobs {
			if !j.Acked || !j.Published.Before(f.Until) {
				continue
			}
			inPhase := !j.Published.Before(f.At)
			// A slow job belongs to this phase only if it would have
			// finished before the next fault had it gone normally.
			bad := (j.First.IsZero() || j.Latency() > threshold) && j.Published.Add(threshold).Before(f.Until)
			if inPhase {
				f.Jobs++
				if !j.First.IsZero() {
					phase = append(phase, j.Latency())
				}
				if bad && j.Published.After(lastBadPub) {
					lastBadPub = j.Published
				}
			}
			// In flight at the fault: published at most a threshold
			// before it (older slow jobs belong to an earlier fault).
			inScope := !j.Published.Before(f.At.Add(-threshold))
			if bad && inScope && (j.First.IsZero() || j.First.After(f.At)) {
				f.Affected++
				if !j.First.IsZero() && j.First.After(lastDone) {
					lastDone = j.First
				}
			}
		}
		f.Latency = harness.Summarize(phase)
		if lastBadPub.After(f.From) {
			f.RecoverNew = harness.Millis(lastBadPub.Sub(f.From))
		}
		if lastDone.After(f.At) {
			f.AllDone = harness.Millis(lastDone.Sub(f.At))
		}
	}
}

func (e *env) print() {
	r := e.report
	o := r.Outcome
	t := harness.Table{Title: fmt.Sprintf("chaos: %d jobs at %.0f/s on a 3-node NATS cluster, %d holders, %d workers", r.Jobs, r.Rate, nHolders, nWorkers),
		Header: []string{"figure", "value", "assert"}}
	subjects := make([]string, 0, len(r.ByJobSubject))
	for s := range r.ByJobSubject {
		subjects = append(subjects, s)
	}
	sort.Strings(subjects)
	var by []string
	for _, s := range subjects {
		by = append(by, fmt.Sprintf("%s %d", s, r.ByJobSubject[s]))
	}
	t.Add("jobs published (acknowledged)", fmt.Sprintf("%d (%s)", o.Published, strings.Join(by, ", ")), "")
	t.Add("publishes never acknowledged", o.PublishErrors, "")
	t.Add("terminal results in WX_RESULTS", o.Results, "")
	t.Add("jobs with a result", o.Resolved, "")
	kinds := make([]string, 0, len(o.ByOutcome))
	for k := range o.ByOutcome {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		label := "failures: " + k
		if k == harness.OutcomeOK {
			label = "user.profile (success)"
		}
		t.Add(label, o.ByOutcome[k], "")
	}
	t.Add("duplicates", o.Duplicates, verdict(o.Duplicates == 0, "= 0"))
	t.Add("lost", o.Lost, verdict(o.Lost == 0, "= 0"))
	t.Add("results seen by a core subscriber", o.CoreResults, "")
	t.Add("duplicates seen by a core subscriber", o.CoreDuplicates, verdict(o.CoreDuplicates == 0, "= 0"))
	t.Add("jobs a core subscriber missed (it was disconnected)", o.CoreMissed, "")
	t.Add("token fetches (/cgi-bin/token)", r.TokenFetches, "")
	t.Add("latency p50 / p99 / max (all jobs)", fmt.Sprintf("%s / %s / %s", r.Latency.P50, r.Latency.P99, r.Latency.Max), "")
	t.Add("latency p99 before the first fault", r.Steady.P99, "")
	t.Fprint(os.Stdout)

	ft := harness.Table{Title: fmt.Sprintf("faults (affected: latency > %s or no result)", time.Duration(r.Threshold)),
		Header: []string{"fault", "jobs in phase", "p99 in phase", "affected", "recover new jobs", "all affected done", "fetches before"}}
	for _, f := range r.Faults {
		ft.Add(f.Name, f.Jobs, f.Latency.P99, f.Affected, f.RecoverNew, f.AllDone, f.TokenFetches)
	}
	for _, f := range r.Faults {
		if f.Detail != "" {
			ft.Note("%s: %s", f.Name, f.Detail)
		}
		if f.Err != "" {
			ft.Note("%s: ERROR %s", f.Name, f.Err)
		}
	}
	ft.Note("recover new jobs: from the fault (simulator: from clearing the faults) until every job published from then on passes normally")
	ft.Note("all affected done: from the fault until the last slowed job that was in flight at the fault or published in its phase got its result")
	ft.Note("failures of kind wechat under simulator faults are OAuth codes the simulator consumed while answering -1: the retry gets 40163, a permanent failure by contract")
	ft.Fprint(os.Stdout)
	for _, n := range r.Notes {
		fmt.Println("note:", n)
	}
	if len(r.Failures) > 0 {
		fmt.Println("\nFAILED hard assertions:")
		for _, f := range r.Failures {
			fmt.Println("  -", f)
		}
	}
}

func verdict(ok bool, want string) string {
	if ok {
		return "ok (" + want + ")"
	}
	return "FAILED (" + want + ")"
}

// observe waits d (or until ctx ends): the time a fault stays on, or an
// observation window; nothing is synchronised on it.
func observe(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
