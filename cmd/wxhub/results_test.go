package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/harness"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

const (
	faultApp    = "wxfault000000001"
	faultSecret = "fault-app-secret-0123456789abcdef"
)

// faultEnvTest is a real NATS server (embedded in the test process), the
// simulator, a holder process, and a tracker counting every result both
// as a stream reader and as a core subscriber.
type faultEnvTest struct {
	t   *testing.T
	bin string
	url string
	js  jetstream.JetStream
	sim *harness.SimServer
	tr  *harness.Tracker
	dir string
}

// faultAckWait is the --ack-wait of every worker these tests start.
const faultAckWait = 2 * time.Second

func newFaultEnv(t *testing.T, window time.Duration, followers int) *faultEnvTest {
	t.Helper()
	e := &faultEnvTest{t: t, bin: wxhubBinary(t), dir: t.TempDir()}
	srv, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	e.url = srv.ClientURL()
	if e.sim, err = harness.StartSim(wechatsim.WithLogger(slog.New(slog.DiscardHandler))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.sim.Close)
	e.sim.Sim.AddApp(faultApp, faultSecret)
	for i := range followers {
		if err := e.sim.Sim.AddFollower(faultApp, wechatsim.Follower{OpenID: fmt.Sprintf("ofault%05d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	nc, js, err := harness.Connect(e.url, t.Name(), 8000)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	e.js = js
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// As the admin would, with the workers' --ack-wait (faultAckWait).
	if err := broker.Provision(ctx, broker.LocalJetStreams(js, grants.Provision), broker.Topology{DuplicateWindow: window, AckWait: faultAckWait}); err != nil {
		t.Fatal(err)
	}
	holder := e.start("holder", "holder", nil)
	if _, _, err := harness.WaitToken(ctx, js, faultApp, 0, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, holder.LogTail(3000))
	}
	e.tr = harness.NewTracker(js, "", "r")
	if err := e.tr.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.tr.Stop)
	return e
}

// start starts a wxhub role as a child process; it is killed at cleanup.
func (e *faultEnvTest) start(role, name string, env []string, args ...string) *harness.Proc {
	e.t.Helper()
	p, err := harness.StartRole(harness.RoleConfig{Bin: e.bin, Role: role, Name: name, NATSURL: e.url,
		Apps: []harness.App{{AppID: faultApp, Secret: faultSecret}}, WeChatBaseURL: e.sim.URL,
		Args: args, Env: env, LogDir: e.dir})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = p.Kill() })
	return p
}

// waitJobsSettled waits until both job consumers have nothing pending and
// nothing unacknowledged: every delivery, redeliveries included, is over.
func (e *faultEnvTest) waitJobsSettled(timeout time.Duration) {
	e.t.Helper()
	ctx := context.Background()
	var last string
	err := harness.WaitFor(ctx, timeout, 100*time.Millisecond, func() bool {
		for _, bare := range []string{events.SubjectUserLookup, events.SubjectOAuthCodeReceived} {
			c, err := e.js.Consumer(ctx, events.StreamJobs, worker.ConsumerName(bare))
			if err != nil {
				last = err.Error()
				return false
			}
			info, err := c.Info(ctx)
			if err != nil || info.NumPending != 0 || info.NumAckPending != 0 {
				last = fmt.Sprintf("%s: %+v %v", bare, info, err)
				return false
			}
		}
		return true
	})
	if err != nil {
		e.t.Fatalf("jobs not settled: %v (%s)", err, last)
	}
}

func (e *faultEnvTest) calls(path string) int64 {
	var n int64
	for _, c := range e.sim.Sim.Stats().Calls[path] {
		n += c
	}
	return n
}

func fatalLogs(t *testing.T, dir, format string, args ...any) {
	t.Helper()
	var logs strings.Builder
	entries, _ := os.ReadDir(dir)
	for _, en := range entries {
		b, _ := os.ReadFile(dir + "/" + en.Name())
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		fmt.Fprintf(&logs, "--- %s\n%s\n", en.Name(), b)
	}
	t.Fatalf(format+"\n%s", append(args, logs.String())...)
}

// Worker processes SIGKILLed, again and again under load, exactly between
// storing a result and acking its job (half of the kills before the done
// record is written, half after): a core subscriber and a stream reader
// each count every job's results: 0 duplicates, 0 lost for both.
func TestWorkersKilledBetweenResultAndAckOneResultEach(t *testing.T) {
	const (
		jobs     = 600
		slots    = 2
		maxKills = 10
	)
	e := newFaultEnv(t, 0, 50)

	var mu sync.Mutex
	kills, starts := 0, 0
	procs := make([]*harness.Proc, slots)
	startWorker := func(slot int) {
		mu.Lock()
		var env []string
		if kills < maxKills {
			stage := []string{"result-stored", "done-recorded"}[starts%2]
			env = []string{fmt.Sprintf("WXHUB_TEST_FAULT=%s:%d", stage, 20+starts%3*7)}
		}
		starts++
		name := fmt.Sprintf("worker-%d-%d", slot, starts)
		mu.Unlock()
		procs[slot] = e.start("worker", name, env, "--concurrency", "16", "--ack-wait", "2s")
	}
	for s := range slots {
		startWorker(s)
	}
	stop := make(chan struct{})
	supervised := make(chan struct{})
	go func() { // restart every worker that dies
		defer close(supervised)
		for {
			for s := range slots {
				select {
				case <-procs[s].Done():
					mu.Lock()
					kills++
					mu.Unlock()
					startWorker(s)
				default:
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	ctx := context.Background()
	payload := func(i int) func(string) []byte {
		return func(id string) []byte {
			b, _ := json.Marshal(events.UserLookup{JobID: id, AppID: faultApp, OpenID: fmt.Sprintf("ofault%05d", i%50)})
			return b
		}
	}
	tick := time.NewTicker(5 * time.Millisecond) // 200 jobs/s
	for i := range jobs {
		<-tick.C
		if _, err := e.tr.PublishAsync(events.SubjectUserLookup, payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	tick.Stop()
	if err := e.tr.WaitResolved(ctx, 90*time.Second); err != nil {
		close(stop)
		<-supervised
		fatalLogs(t, e.dir, "%v: %+v", err, e.tr.Outcome())
	}
	e.waitJobsSettled(60 * time.Second) // every redelivery is over
	close(stop)
	<-supervised
	if err := e.tr.CatchUp(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := e.tr.WaitCore(ctx, jobs, 10*time.Second); err != nil {
		t.Fatalf("core subscriber: %v: %+v", err, e.tr.Outcome())
	}
	o := e.tr.Outcome()
	mu.Lock()
	k := kills
	mu.Unlock()
	t.Logf("%d jobs, %d worker SIGKILLs between result and ack: %+v", jobs, k, o)
	if k < 5 {
		t.Fatalf("only %d kills happened, want at least 5", k)
	}
	if o.Published != jobs || o.Lost != 0 || o.Duplicates != 0 || o.CoreDuplicates != 0 || o.CoreMissed != 0 || o.CoreResults != jobs {
		t.Fatalf("outcome %+v: want %d jobs, each with one result for the stream reader and one for the core subscriber", o, jobs)
	}
}

// A finished user.lookup and a finished oauth job whose workers died
// after recording them done and before acking are redelivered after the
// duplicate window has passed: no second result for either reader, no
// second WeChat call.
func TestRedeliveryAfterDuplicateWindowNoSecondResult(t *testing.T) {
	const window = 3 * time.Second
	e := newFaultEnv(t, window, 1)
	args := []string{"--ack-wait", "2s", "--duplicate-window", window.String()}
	fault := []string{"WXHUB_TEST_FAULT=done-recorded:1"}
	ctx := context.Background()

	code, err := e.sim.Sim.IssueCode(faultApp, "ofault00000", "snsapi_userinfo")
	if err != nil {
		t.Fatal(err)
	}
	jobsPayloads := []struct {
		subject string
		payload func(string) []byte
	}{
		{events.SubjectUserLookup, func(id string) []byte {
			b, _ := json.Marshal(events.UserLookup{JobID: id, AppID: faultApp, OpenID: "ofault00000"})
			return b
		}},
		{events.SubjectOAuthCodeReceived, func(id string) []byte {
			b, _ := json.Marshal(events.OAuthCodeReceived{JobID: id, AppID: faultApp, Code: code})
			return b
		}},
	}
	for i, jp := range jobsPayloads {
		w := e.start("worker", fmt.Sprintf("dying-%d", i), fault, args...)
		if _, err := e.tr.Publish(ctx, jp.subject, 10*time.Second, jp.payload); err != nil {
			t.Fatal(err)
		}
		select {
		case <-w.Done():
		case <-time.After(30 * time.Second):
			fatalLogs(t, e.dir, "worker did not kill itself after recording job %d done", i)
		}
	}
	if err := e.tr.WaitCore(ctx, 2, 10*time.Second); err != nil {
		t.Fatalf("%v: %+v", err, e.tr.Outcome())
	}
	// Both jobs are stored with a result, recorded done, and not acked.
	// Let the duplicate window pass: from here only the done records stand
	// between a redelivery and a second result.
	time.Sleep(window + time.Second)
	calls := map[string]int64{}
	for _, p := range []string{wechatsim.PathUserInfo, wechatsim.PathOAuthToken, wechatsim.PathSNSUserInfo} {
		calls[p] = e.calls(p)
	}
	e.start("worker", "survivor", nil, args...)
	e.waitJobsSettled(30 * time.Second)
	if err := e.tr.CatchUp(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for p, before := range calls {
		if now := e.calls(p); now != before || before != 1 {
			t.Errorf("%s: %d calls before the redelivery, %d after; want 1 and 1", p, before, now)
		}
	}
	for _, j := range e.tr.Jobs() {
		if j.Results != 1 || j.Core != 1 || j.Outcome != harness.OutcomeOK {
			t.Errorf("job %s: %d results in the stream, %d seen by a core subscriber, outcome %q; want 1, 1, ok", j.ID, j.Results, j.Core, j.Outcome)
		}
	}
}

// An oversized job gets its failure at once, under its job_id (the job's
// Nats-Msg-Id: its body is too large to be read), instead of no result;
// `wxhub result` prints it. `wxhub lookup` itself refuses to publish such
// a job (a usage error, exit 2): its flags are checked against the
// schema first.
func TestOversizedJobFailsUnderItsJobID(t *testing.T) {
	t.Parallel()
	run := wxhubtest.StartRun(t)
	openid := strings.Repeat("o", events.MaxJobSize)
	cmd := exec.Command(wxhubtest.Binary(t), "lookup", "--nats-url", run.NATSURL, "--appid", run.AppID,
		"--openid", openid, "--job-id", "big-lookup", "--timeout", "25s")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitUsage || !strings.Contains(stderr.String(), "not a valid user.lookup job: ") {
		t.Fatalf("lookup of an oversized job: %v, want status 2; stderr %s", err, stderr.String())
	}

	// Published by another client: the worker fails it under its Nats-Msg-Id.
	nc, err := nats.Connect(run.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	failed, err := nc.SubscribeSync(events.SubjectUserProfileFailed)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job := nats.NewMsg(events.SubjectUserLookup)
	job.Header.Set(events.HeaderMsgID, "big-lookup")
	job.Data = fmt.Appendf(nil, `{"job_id":"big-lookup","appid":%q,"openid":%q}`, run.AppID, openid)
	if _, err := js.PublishMsg(ctx, job); err != nil {
		t.Fatal(err)
	}
	m, err := failed.NextMsgWithContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var f events.UserProfileFailed
	if err := json.Unmarshal(m.Data, &f); err != nil || f.JobID != "big-lookup" || f.Error.Kind != events.KindInvalidJob {
		t.Fatalf("failure %s (%v), want an invalid_job failure for big-lookup", m.Data, err)
	}
	out, err := exec.Command(wxhubtest.Binary(t), "result", "--nats-url", run.NATSURL, "--job-id", "big-lookup").Output()
	if !errors.As(err, &exit) || exit.ExitCode() != exitFailure || !strings.Contains(string(out), `"kind": "invalid_job"`) {
		t.Fatalf("result of the oversized job: %v\n%s", err, out)
	}
}
