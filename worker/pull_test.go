package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

// A job that waits in the process for a free slot (it was pulled in a
// batch while every slot was busy) gets its AckWait restarted when its
// work starts: with one slot and jobs that take most of AckWait, the
// second job waits about one job's time and then works as long again,
// past its first AckWait. Without the restart JetStream would redeliver
// it while it runs.
func TestWaitingJobKeepsItsAckWait(t *testing.T) {
	t.Parallel()
	const jobs = 3
	h := newHarness(t, jobs)
	h.holder.rotate()
	res := h.follow(events.StreamResults)
	if err := h.sim.AddFault(wechatsim.Fault{Path: "/cgi-bin/user/info", DelayMS: 900, Count: jobs}); err != nil {
		t.Fatal(err)
	}
	w := h.startWorker("w", func(c *worker.Config) {
		c.Concurrency, c.AckWait, c.JobTimeout = 1, 1500*time.Millisecond, 1200*time.Millisecond
	})
	for i := range jobs {
		h.lookup(fmt.Sprintf("job-%d", i), i)
	}
	res.waitIDs(t, jobs, 20*time.Second)
	wxhubtest.Eventually(t, 5*time.Second, "every job acked", func() bool { return w.Stats().Succeeded == jobs && w.InFlight() == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := h.env.JS.Consumer(ctx, events.StreamJobs, worker.ConsumerName(events.SubjectUserLookup))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.Deliveries != jobs || info.NumRedelivered != 0 {
		t.Fatalf("%d deliveries handled, %d redelivered, want %d and 0", st.Deliveries, info.NumRedelivered, jobs)
	}
	if _, total := res.snapshot(); total != jobs {
		t.Fatalf("%d results for %d jobs", total, jobs)
	}
}

// Concurrency is per process: user.lookup and oauth.code.received jobs
// draw from one budget, so no more than Concurrency WeChat calls are ever
// in flight from one worker, and every job still ends with one result.
func TestConcurrencyIsOnePoolPerProcess(t *testing.T) {
	t.Parallel()
	const conc, each = 3, 6
	h := newHarness(t, each)
	h.holder.rotate()
	res := h.follow(events.StreamResults)
	h.sim.SetLatency(150 * time.Millisecond)
	var now, peak atomic.Int64
	counting := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		n := now.Add(1)
		defer now.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		h.sim.ServeHTTP(rw, r)
	}))
	t.Cleanup(counting.Close)
	wc, err := wechat.NewClient(wechat.Config{BaseURL: counting.URL, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	h.startWorker("w", func(c *worker.Config) { c.Concurrency, c.WeChat = conc, wc })
	for i := range each {
		h.lookup(fmt.Sprintf("lookup-%d", i), i)
		b, _ := json.Marshal(events.OAuthCodeReceived{JobID: fmt.Sprintf("code-%d", i), AppID: testApp, Code: fmt.Sprintf("no-such-code-%d", i)})
		h.publishJob(events.SubjectOAuthCodeReceived, b, fmt.Sprintf("code-%d", i), nil)
	}
	res.waitIDs(t, 2*each, 30*time.Second)
	t.Logf("peak WeChat calls in flight: %d", peak.Load())
	if p := peak.Load(); p > conc || p < 2 {
		t.Fatalf("peak WeChat calls in flight %d, want 2..%d", p, conc)
	}
	byID, total := res.snapshot()
	if total != 2*each || len(byID) != 2*each {
		t.Fatalf("%d results, %d distinct, want %d", total, len(byID), 2*each)
	}
}
