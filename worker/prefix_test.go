package worker_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/worker"
)

// With a subject prefix, jobs, results and dead letters all carry it.
func TestSubjectPrefix(t *testing.T) {
	h := newHarness(t, 1)
	h.holder.rotate()
	h.startWorker("w", func(c *worker.Config) { c.Prefix = "wx" }) // provisions the prefixed streams
	res := h.follow(events.StreamResults)
	dead := h.follow(events.StreamDeadLetters)
	s := events.NewSubjects("wx")
	b, _ := json.Marshal(events.UserLookup{JobID: "p-1", AppID: testApp, OpenID: openID(0)})
	h.publishJob(s.UserLookup, b, "p-1", nil)
	h.publishJob(s.UserLookup, []byte(`{"job_id":"p-2"}`), "p-2", nil)
	res.waitIDs(t, 2, 20*time.Second)
	dead.waitIDs(t, 1, 20*time.Second)
	if r := res.get("p-1"); len(r) != 1 || r[0].Subject != "wx.user.profile" {
		t.Fatalf("result %+v", r)
	}
	r := res.get("p-2")
	if len(r) != 1 || r[0].Subject != "wx.user.profile.failed" {
		t.Fatalf("failure %+v", r)
	}
	if f := failureOf(t, r[0]); f.JobSubject != "wx.user.lookup" {
		t.Fatalf("job_subject %q", f.JobSubject)
	}
	if d := dead.get("p-2"); len(d) != 1 || d[0].Subject != "wx.deadletter.user.lookup" {
		t.Fatalf("dead letter %+v", d)
	}
}
