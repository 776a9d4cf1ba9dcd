package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// TestLookupTwiceAgainstWxhubRun: the README's program against a real
// `wxhub run` with the demo app: the first run gets the profile, the second
// (same job_id, so PubAck.Duplicate) reads the same result back from
// WX_RESULTS instead of waiting forever.
func TestLookupTwiceAgainstWxhubRun(t *testing.T) {
	run := wxhubtest.StartRun(t)
	if run.AppID != "wxdemo0000000001" || run.OpenID != "oDemo6_bmjrPTlm6_2sgVt7hMZOA" {
		t.Fatalf("wxhub run's demo app is %s/%s; the example hard-codes wxdemo0000000001/oDemo6_bmjrPTlm6_2sgVt7hMZOA", run.AppID, run.OpenID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var first []byte
	for i, want := range []string{"fresh", "duplicate"} {
		subject, body, err := lookup(ctx, run.NATSURL, "order-42-lookup", run.AppID, run.OpenID)
		if err != nil {
			t.Fatalf("run %d (%s): %v", i+1, want, err)
		}
		var p struct{ JobID, OpenID, Source string }
		if err := json.Unmarshal(body, &p); err != nil || subject != "user.profile" {
			t.Fatalf("run %d (%s): %s %s (%v)", i+1, want, subject, body, err)
		}
		if i == 0 {
			first = body
		} else if string(body) != string(first) {
			t.Fatalf("the duplicate run read %s, the first got %s", body, first)
		}
	}
	// Past the duplicate window the job_id is stored as a new job, which
	// the worker ends at once (its done record) without a second result:
	// the program reads the first result from WX_RESULTS.
	forgetJobIDs(t, ctx, run.NATSURL)
	if subject, body, err := lookup(ctx, run.NATSURL, "order-42-lookup", run.AppID, run.OpenID); err != nil || subject != "user.profile" || string(body) != string(first) {
		t.Fatalf("run past the duplicate window: %s %s %v; want the first result %s", subject, body, err, first)
	}
	// A job that fails still ends in its one result.
	subject, body, err := lookup(ctx, run.NATSURL, "order-43-lookup", run.AppID, "o-not-a-follower")
	if err != nil || subject != "user.profile.failed" {
		t.Fatalf("lookup of a stranger: %s %s %v", subject, body, err)
	}
}

// forgetJobIDs makes WX_JOBS forget the job ids it has seen, as it does
// once its duplicate window (10 min) has passed: the window is cut to
// 100 ms, and a probe id published twice, the second time not a
// duplicate, shows the ids were dropped.
func forgetJobIDs(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "WX_JOBS")
	if err != nil {
		t.Fatal(err)
	}
	// Twice: the server's update fires its dedupe purge at once, which
	// may run before the update has set the new window and then waits the
	// old one (10 minutes) for its next purge; the second update's purge
	// sees the short window set by the first.
	cfg := stream.CachedInfo().Config
	for _, d := range []time.Duration{100 * time.Millisecond, 110 * time.Millisecond} {
		cfg.Duplicates = d
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	probe := nats.NewMsg("user.lookup")
	probe.Header.Set("Nats-Msg-Id", "window-probe")
	probe.Data = []byte(`{"job_id":"window-probe","appid":"wxdemo0000000001","openid":"o-probe"}`)
	if _, err := js.PublishMsg(ctx, probe); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ack, err := js.PublishMsg(ctx, probe)
		if err != nil {
			t.Fatal(err)
		}
		if !ack.Duplicate {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("WX_JOBS did not forget the probe's id")
		}
	}
}

// A busy system: 200 programs look users up at once, every one of them
// subscribed to all results, so each sees the 199 others' results come by
// as well as its own. Each gets exactly its own job's result: a
// follower's profile (all for the same follower: only the job id tells
// them apart) or a stranger's user.profile.failed, never another's.
func TestLookupBurstEachGetsItsOwnResult(t *testing.T) {
	run := wxhubtest.StartRun(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 200
	type result struct {
		subject string
		body    []byte
		err     error
	}
	results := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			openid := run.OpenID
			if i%2 == 1 {
				openid = fmt.Sprintf("o-stranger-%d", i)
			}
			<-start
			subject, body, err := lookup(ctx, run.NATSURL, fmt.Sprintf("burst-%d", i), run.AppID, openid)
			results[i] = result{subject, body, err}
		})
	}
	close(start)
	wg.Wait()
	for i, r := range results {
		want, openid := "user.profile", run.OpenID
		if i%2 == 1 {
			want, openid = "user.profile.failed", ""
		}
		var p struct {
			JobID  string `json:"job_id"`
			OpenID string `json:"openid"`
		}
		if r.err != nil || r.subject != want || json.Unmarshal(r.body, &p) != nil || p.JobID != fmt.Sprintf("burst-%d", i) || p.OpenID != openid {
			t.Errorf("caller %d: %s %s (%v); want %s of job burst-%d", i, r.subject, r.body, r.err, want, i)
		}
	}
}
