package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

// A job whose worker dies during its LAST delivery still ends in exactly
// one terminal result: the max-deliveries advisory (or, when no worker
// heard it, the sweep) publishes a retryable failure, keeps the job on
// the dead-letter subject and removes it from the jobs stream. A job that
// already had a result, or that succeeds or fails on its last delivery,
// gets nothing more.
func TestJobExhaustedByDeadWorkers(t *testing.T) {
	const (
		wantExhausted = "exhausted"   // failure published by the max-deliveries path
		wantProfile   = "profile"     // the profile and nothing else
		wantHandler   = "handler-err" // the handler's own failure and nothing else
	)
	tests := []struct {
		name       string
		maxDeliver int
		kills      int             // deliveries whose worker dies mid-job
		fault      wechatsim.Fault // on /cgi-bin/user/info
		late       bool            // the survivor starts after the server gave up (MaxDeliver 1: at AckWait): no one hears the advisory
		preResult  bool            // the job's profile was published before its worker died
		want       string
	}{
		{"died on the only delivery", 1, 1, wechatsim.Fault{DelayMS: 1000, Count: 1}, false, false, wantExhausted},
		{"died on both deliveries", 2, 2, wechatsim.Fault{DelayMS: 1000, Count: 2}, false, false, wantExhausted},
		{"advisory missed, sweep at start", 1, 1, wechatsim.Fault{DelayMS: 1000, Count: 1}, true, false, wantExhausted},
		{"result published before the worker died", 1, 1, wechatsim.Fault{DelayMS: 1000, Count: 1}, false, true, wantProfile},
		{"success on the last delivery", 2, 1, wechatsim.Fault{DelayMS: 1000, Count: 1}, false, false, wantProfile},
		{"transient failure on the last delivery", 2, 1, wechatsim.Fault{DelayMS: 300, ErrCode: -1}, false, false, wantHandler},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, 1)
			h.holder.rotate()
			res := h.follow(events.StreamResults)
			dead := h.follow(events.StreamDeadLetters)
			// The test hears the advisories too, to know when the server gave up.
			advisories := make(chan *nats.Msg, 16)
			advSub, err := h.env.NC.ChanSubscribe(worker.AdvisoryMaxDeliveries+"."+events.StreamJobs+".>", advisories)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = advSub.Unsubscribe() })
			tt.fault.Path = "/cgi-bin/user/info"
			if err := h.sim.AddFault(tt.fault); err != nil {
				t.Fatal(err)
			}
			cfg := func(c *worker.Config) {
				c.MaxDeliver, c.Concurrency = tt.maxDeliver, 1
				c.AckWait, c.JobTimeout, c.SweepInterval = 2*time.Second, 1500*time.Millisecond, 100*time.Millisecond
			}
			if tt.preResult {
				p, _ := json.Marshal(events.UserProfile{JobID: "job-1", AppID: testApp, OpenID: openID(0), Source: events.SourceUserInfo, CompletedAt: time.Now().UTC()})
				m := nats.NewMsg(events.NewSubjects("").StoredUserProfile)
				m.Data = p
				m.Header.Set(events.HeaderMsgID, "job-1")
				if _, err := h.env.JS.PublishMsg(context.Background(), m); err != nil {
					t.Fatal(err)
				}
			}
			job, _ := json.Marshal(events.UserLookup{JobID: "job-1", AppID: testApp, OpenID: openID(0)})
			h.publishJob(events.SubjectUserLookup, job, "job-1", map[string]string{events.HeaderCorrelationID: "corr-1"})

			var survivor *runningWorker
			for k := range tt.kills {
				v := h.startWorker(fmt.Sprintf("victim%d", k), cfg)
				wxhubtest.Eventually(t, 10*time.Second, "the job in flight on a victim", func() bool { return v.InFlight() == 1 })
				// A victim that dies on the job's last delivery: the survivor
				// must run before the server gives up, to hear the advisory;
				// it starts while the victim's call is held (the fault's
				// delay). Otherwise it starts after the kill: started
				// before, it could take longer than the victim's delivery,
				// which would then end and the victim take the next one.
				last := k == tt.maxDeliver-1
				if k == tt.kills-1 && !tt.late && last {
					survivor = h.startWorker("survivor", cfg)
				}
				v.KillJobConn()
				v.nc.Close()
				if k == tt.kills-1 && !tt.late && !last {
					survivor = h.startWorker("survivor", cfg)
				}
			}
			if tt.late {
				select {
				case <-advisories: // heard by nobody but the test
				case <-time.After(20 * time.Second):
					t.Fatal("no max-deliveries advisory")
				}
				survivor = h.startWorker("survivor", cfg)
				// With MaxDeliver 1 the server gave up at AckWait with no
				// worker listening; the survivor's sweep finds the job once
				// the consumer's ack floor passes it, i.e. once a later
				// job is acked.
				h.lookup("job-2", 0)
			}

			wxhubtest.Eventually(t, 20*time.Second, "the job gone from "+events.StreamJobs, func() bool { return jobsInStream(t, h) == 0 })
			// Two full sweeps after the job left the stream: anything more
			// the worker would publish is out by then.
			base := survivor.Sweeps()
			wxhubtest.Eventually(t, 10*time.Second, "two more sweeps", func() bool { return survivor.Sweeps() >= base+2 })
			wantResults := 1
			if tt.late {
				wantResults = 2
			}
			res.waitIDs(t, wantResults, 10*time.Second)

			byID, total := res.snapshot()
			if total != wantResults || len(byID["job-1"]) != 1 {
				t.Fatalf("%d results stored, want exactly one for job-1: %v", total, byID)
			}
			if g := byID["job-2"]; tt.late && (len(g) != 1 || g[0].Subject != events.SubjectUserProfile) {
				t.Fatalf("job-2: %+v", g)
			}
			got := byID["job-1"][0]
			_, dlTotal := dead.snapshot()
			switch tt.want {
			case wantProfile:
				if got.Subject != events.SubjectUserProfile {
					t.Fatalf("result on %s: %s", got.Subject, got.Data)
				}
				// A result stored without its done record is found only by
				// the failure's dedupe, after the dead letter is stored
				// (dead letter first: see TestExhaustedJobDeadLetterBeforeFailure).
				wantDL := 0
				if tt.preResult {
					wantDL = 1
				}
				if dlTotal != wantDL || survivor.Exhausted() != 0 {
					t.Fatalf("dead letters %d (want %d), exhausted %d (want 0)", dlTotal, wantDL, survivor.Exhausted())
				}
			case wantHandler:
				f := failureOf(t, got)
				if got.Subject != events.SubjectUserProfileFailed || f.Error.Kind == events.KindTimeout && strings.Contains(f.Error.ErrMsg, "deliveries") || !f.Error.Retryable || f.Attempts != tt.maxDeliver {
					t.Fatalf("result on %s: %+v, want the handler's retryable failure", got.Subject, f)
				}
				if dlTotal != 0 || survivor.Exhausted() != 0 || survivor.Stats().Failed != 1 {
					t.Fatalf("dead letters %d, exhausted %d, handler failures %d", dlTotal, survivor.Exhausted(), survivor.Stats().Failed)
				}
			case wantExhausted:
				if got.Subject != events.SubjectUserProfileFailed {
					t.Fatalf("result on %s: %s", got.Subject, got.Data)
				}
				if err := events.Validate(events.SubjectUserProfileFailed, got.Data); err != nil {
					t.Fatalf("failure does not match its schema: %v", err)
				}
				f := failureOf(t, got)
				if f.JobID != "job-1" || f.AppID != testApp || f.JobSubject != events.SubjectUserLookup ||
					f.Error.Kind != events.KindTimeout || !f.Error.Retryable || f.Attempts != tt.maxDeliver ||
					!strings.Contains(f.Error.ErrMsg, "deliveries") {
					t.Fatalf("failure %+v", f)
				}
				if c := got.Header.Get(events.HeaderCorrelationID); c != "corr-1" {
					t.Errorf("correlation id %q", c)
				}
				dl := dead.get("job-1")
				if dlTotal != 1 || len(dl) != 1 || dl[0].Subject != "deadletter."+events.SubjectUserLookup || string(dl[0].Data) != string(job) {
					t.Fatalf("dead letters (%d stored): %+v", dlTotal, dl)
				}
				if r := dl[0].Header.Get(events.HeaderDeadLetterReason); !strings.HasPrefix(r, events.KindTimeout+": ") {
					t.Fatalf("dead letter reason %q", r)
				}
				if n := survivor.Exhausted(); n != 1 {
					t.Fatalf("survivor ended %d exhausted jobs, want 1", n)
				}
				if n := survivor.Stats().Deliveries; n != int64(wantResults-1) {
					t.Fatalf("the survivor got %d deliveries of a job past MaxDeliver", n)
				}
			}
		})
	}
}

// jobsInStream reads the jobs stream's message count from the server.
func jobsInStream(t *testing.T, h *harness) uint64 {
	t.Helper()
	s, err := h.env.JS.Stream(context.Background(), events.StreamJobs)
	if err != nil {
		return 1
	}
	info, err := s.Info(context.Background())
	if err != nil {
		return 1
	}
	return info.State.Msgs
}

// reaperDeath is a given-up job (job-1, MaxDeliver 1) whose first reaper
// died mid-way: its victim worker died with the job in flight, and the
// first reaper's connection closed at a fault stage of ending it, with
// the job still in WX_JOBS.
type reaperDeath struct {
	h         *harness
	res, dead *streamLog
	job       []byte
	cfg       func(*worker.Config)
}

// reaperDiesAt sets up a reaperDeath whose first reaper dies at stage; it
// fails with never if the reaper does not get there.
func reaperDiesAt(t *testing.T, stage, never string) *reaperDeath {
	t.Helper()
	h := newHarness(t, 1)
	h.holder.rotate()
	d := &reaperDeath{h: h, res: h.follow(events.StreamResults), dead: h.follow(events.StreamDeadLetters)}
	if err := h.sim.AddFault(wechatsim.Fault{Path: "/cgi-bin/user/info", DelayMS: 1000, Count: 1}); err != nil {
		t.Fatal(err)
	}
	d.cfg = func(c *worker.Config) {
		c.MaxDeliver, c.Concurrency = 1, 1
		c.AckWait, c.JobTimeout, c.SweepInterval = 2*time.Second, 1500*time.Millisecond, 100*time.Millisecond
	}
	d.job, _ = json.Marshal(events.UserLookup{JobID: "job-1", AppID: testApp, OpenID: openID(0)})
	h.publishJob(events.SubjectUserLookup, d.job, "job-1", nil)
	victim := h.startWorker("victim", d.cfg)
	wxhubtest.Eventually(t, 10*time.Second, "the job in flight on the victim", func() bool { return victim.InFlight() == 1 })

	// The first reaper's connection dies right after stage.
	var reaperConn atomic.Pointer[nats.Conn]
	faulted := make(chan struct{})
	var once sync.Once
	first := h.startWorker("first-reaper", func(c *worker.Config) {
		d.cfg(c)
		c.Fault = func(s, id string) {
			if s == stage && id == "job-1" {
				once.Do(func() {
					reaperConn.Load().Close()
					close(faulted)
				})
			}
		}
	})
	reaperConn.Store(first.nc)
	victim.KillJobConn()
	victim.nc.Close()
	select {
	case <-faulted:
	case <-time.After(20 * time.Second):
		t.Fatal(never)
	}
	if n := jobsInStream(t, h); n != 1 {
		t.Fatalf("%d jobs in %s after the reaper died mid-way, want the job kept", n, events.StreamJobs)
	}
	return d
}

// sweep starts the second reaper and waits until its sweep ended the job
// and ran twice more.
func (d *reaperDeath) sweep(t *testing.T) *runningWorker {
	t.Helper()
	second := d.h.startWorker("second-reaper", d.cfg)
	d.h.lookup("job-2", 0) // moves the ack floor past job-1, so the sweep finds it
	wxhubtest.Eventually(t, 20*time.Second, "the job gone from "+events.StreamJobs, func() bool { return jobsInStream(t, d.h) == 0 })
	base := second.Sweeps()
	wxhubtest.Eventually(t, 10*time.Second, "two more sweeps", func() bool { return second.Sweeps() >= base+2 })
	return second
}

// checkFailure checks that job-1 ended in one retryable timeout failure.
func (d *reaperDeath) checkFailure(t *testing.T) {
	t.Helper()
	got := d.res.get("job-1")
	if len(got) != 1 || got[0].Subject != events.SubjectUserProfileFailed {
		t.Fatalf("job-1 results: %+v, want one failure", got)
	}
	if f := failureOf(t, got[0]); f.Error.Kind != events.KindTimeout || !f.Error.Retryable {
		t.Fatalf("failure %+v", f)
	}
}

// The reaper stores a given-up job's dead letter before its failure, and
// leaves the job in WX_JOBS until both are out: a worker whose connection
// dies between the two steps loses nothing, and the next worker's sweep
// ends the job with one failure and one dead letter (the dead letter's
// Nats-Msg-Id dedupes the retry).
func TestExhaustedJobDeadLetterBeforeFailure(t *testing.T) {
	d := reaperDiesAt(t, worker.FaultExhaustedDeadLetterStored, "the first reaper never stored the dead letter")
	second := d.sweep(t)
	d.res.waitIDs(t, 2, 10*time.Second)
	d.dead.waitIDs(t, 1, 10*time.Second)

	d.checkFailure(t)
	dl := d.dead.get("job-1")
	if _, total := d.dead.snapshot(); total != 1 || len(dl) != 1 || string(dl[0].Data) != string(d.job) {
		t.Fatalf("dead letters (%d stored): %+v, want the job's bytes once", total, dl)
	}
	if n := second.Exhausted(); n != 1 {
		t.Fatalf("the second reaper ended %d jobs, want 1", n)
	}
}

// A reaper that dies between the steps of ending a given-up job, and a
// retry that comes after WX_DEADLETTERS' duplicate window (every worker
// was down for longer), where the dead letter's Nats-Msg-Id no longer
// dedupes: the job still ends with one dead letter and one failure. Died
// after storing the dead letter: the retry finds it through the job's
// dead-letter mark and stores no second one. Died after writing the mark,
// before the dead letter: the retry stores it.
func TestExhaustedJobOneDeadLetterWhenTheRetryComesAfterTheDuplicateWindow(t *testing.T) {
	for _, stage := range []string{worker.FaultExhaustedDeadLetterStored, worker.FaultExhaustedDeadLetterMarked} {
		t.Run(stage, func(t *testing.T) {
			d := reaperDiesAt(t, stage, fmt.Sprintf("the first reaper never reached %s", stage))
			probes := d.h.forgetMsgIDs(events.StreamDeadLetters)
			second := d.sweep(t)
			d.res.caughtUp(t, d.h, events.StreamResults)
			d.dead.caughtUp(t, d.h, events.StreamDeadLetters)

			d.checkFailure(t)
			dl := d.dead.get("job-1")
			if _, total := d.dead.snapshot(); len(dl) != 1 || total != 1+probes || string(dl[0].Data) != string(d.job) {
				t.Fatalf("dead letters of job-1: %d (%d stored, %d of them probes): %+v, want the job's bytes once", len(dl), total, probes, dl)
			}
			if n := second.Exhausted(); n != 1 {
				t.Fatalf("the second reaper ended %d jobs, want 1", n)
			}
		})
	}
}

// forgetMsgIDs makes stream forget the Nats-Msg-Ids it stored so far, as
// it does once its duplicate window has passed: it shrinks the window to
// its 100 ms minimum (the server then purges at once what is older) and
// publishes a probe until the probe's own id is forgotten, so every id
// stored before it is too. The next provision restores the window; what
// was forgotten stays forgotten. It returns how many probes were stored
// (on deadletter.oauth.userinfo, under the id "probe").
func (h *harness) forgetMsgIDs(stream string) int {
	t := h.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := h.env.JS.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	// Twice: the server's update fires its dedupe purge at once, which
	// may run before the update has set the new window and then waits the
	// old one (over 10 s) for its next purge; the second update's purge
	// sees the short window set by the first.
	sc := s.CachedInfo().Config
	for _, d := range []time.Duration{100 * time.Millisecond, 110 * time.Millisecond} {
		sc.Duplicates = d
		if _, err := h.env.JS.UpdateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	stored := 0
	probe := func() bool {
		m := nats.NewMsg(events.NewSubjects("").StoredDeadLetter(events.SubjectOAuthUserInfo))
		m.Data = []byte(`{}`)
		m.Header.Set(events.HeaderMsgID, "probe")
		ack, err := h.env.JS.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		if !ack.Duplicate {
			stored++
		}
		return !ack.Duplicate
	}
	probe()
	wxhubtest.Eventually(t, 10*time.Second, stream+" forgetting the probe's Nats-Msg-Id", probe)
	return stored
}
