package worker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/worker"
)

// 2,000 user.lookup jobs over 3 worker instances: 2,000 distinct results,
// none twice, every instance did work.
func TestScaleOutThreeWorkers(t *testing.T) {
	const jobs = 2000
	h := newHarness(t, jobs)
	h.holder.rotate()
	res := h.follow(events.StreamResults)
	var ws []*runningWorker
	for i := range 3 {
		ws = append(ws, h.startWorker(fmt.Sprintf("w%d", i), func(c *worker.Config) { c.Concurrency = 16 }))
	}
	h.sim.SetLatency(2 * time.Millisecond) // I/O-bound like WeChat
	start := time.Now()
	for i := range jobs {
		h.lookup(fmt.Sprintf("job-%05d", i), i)
	}
	res.waitIDs(t, jobs, 60*time.Second)
	elapsed := time.Since(start)
	byID, total := res.snapshot()
	if len(byID) != jobs || total != jobs {
		t.Fatalf("results: %d distinct, %d stored; want %d and %d", len(byID), total, jobs, jobs)
	}
	for id, rs := range byID {
		if rs[0].Subject != events.SubjectUserProfile {
			t.Fatalf("%s: %s %s", id, rs[0].Subject, rs[0].Data)
		}
	}
	for _, w := range ws {
		st := w.Stats()
		t.Logf("%s: %+v", w.ID(), st)
		if st.Succeeded == 0 {
			t.Errorf("%s did no work", w.ID())
		}
	}
	t.Logf("%d jobs in %s (%.0f jobs/s)", jobs, elapsed, jobs/elapsed.Seconds())
	if n := h.sim.Stats().TotalCalls("/cgi-bin/token"); n != 1 {
		t.Errorf("token fetches: %d, want 1 (workers never fetch)", n)
	}
}
