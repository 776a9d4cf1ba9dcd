package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers"
	"github.com/wxhub/wxhub/holder"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

// The only token in wx_tokens is past its expires_at and no holder runs:
// the worker calls WeChat with it for no job, reports nothing, is not
// ready, and ends the job as token_unavailable with the reason. Once a
// holder starts it is ready again and jobs succeed.
func TestExpiredTokenWithoutHolder(t *testing.T) {
	h := newHarness(t, 1)
	res := h.follow(events.StreamResults)
	h.storeExpiredToken(1, time.Hour)

	w := h.launchWorker("w0", func(c *worker.Config) { c.MaxDeliver, c.TokenWait = 2, 300*time.Millisecond })
	wxhubtest.Eventually(t, 10*time.Second, "worker not ready for the expired token", func() bool {
		return errors.Is(w.ReadyError(), handlers.ErrNoFreshToken)
	})
	if why := w.ReadyError().Error(); !strings.Contains(why, testApp+" version 1 expired at") {
		t.Errorf("readiness reason %q does not name the app and version", why)
	}

	h.lookup("job-expired", 0)
	res.waitIDs(t, 1, 30*time.Second)
	got := res.get("job-expired")
	if len(got) != 1 || got[0].Subject != events.SubjectUserProfileFailed {
		t.Fatalf("results %s, want one failure", describe(got))
	}
	f := failureOf(t, got[0])
	if f.Error.Kind != events.KindTokenUnavailable || !f.Error.Retryable || f.Attempts != 2 ||
		!strings.Contains(f.Error.ErrMsg, handlers.ErrNoFreshToken.Error()) {
		t.Errorf("failure %+v, want token_unavailable, retryable, 2 attempts, %q", f, handlers.ErrNoFreshToken)
	}
	if st := w.Stats(); st.Retried != 1 { // counted before the nak, so before the second delivery
		t.Errorf("stats %+v, want the first delivery retried", st)
	}
	if n := h.sim.Stats().TotalCalls("/cgi-bin/user/info"); n != 0 {
		t.Fatalf("%d user/info calls with an expired token, want 0", n)
	}

	h.startHolder("h1")
	wxhubtest.Eventually(t, 10*time.Second, "worker ready with the holder's token", w.Ready)
	h.lookup("job-fresh", 0)
	res.waitIDs(t, 2, 30*time.Second)
	if got := res.get("job-fresh"); len(got) != 1 || got[0].Subject != events.SubjectUserProfile {
		t.Fatalf("results %s, want one profile", describe(got))
	}
	if n := h.sim.Stats().TotalCalls("/cgi-bin/user/info"); n != 1 {
		t.Errorf("%d user/info calls, want 1 (the job after the holder's refresh)", n)
	}
	if _, _, reports := h.holder.counts(); len(reports) != 0 {
		t.Errorf("token.invalidated sent %v, want none", reports)
	}
}

// The worker judges a token's expiry on its configured clock
// (Config.Now) in ReadyError as in its jobs: a token fresh by the real
// time but past its expires_at on the worker's clock makes the worker not
// ready, naming the app, and its job ends token_unavailable without a
// WeChat call; with the clock back the worker is ready and jobs succeed.
func TestReadyErrorJudgesExpiryOnTheConfiguredClock(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	h.holder.rotate() // expires in 2 hours of real time
	res := h.follow(events.StreamResults)
	clock := wechatsim.NewManualClock(time.Now())
	w := h.startWorker("w0", func(c *worker.Config) { c.Now, c.MaxDeliver, c.TokenWait = clock.Now, 1, 300*time.Millisecond })

	clock.Advance(3 * time.Hour)
	err := w.ReadyError()
	if !errors.Is(err, handlers.ErrNoFreshToken) || !strings.Contains(err.Error(), testApp+" version 1 expired at") {
		t.Fatalf("ReadyError 3 hours later on the worker's clock = %v, want %v naming %s version 1", err, handlers.ErrNoFreshToken, testApp)
	}
	h.lookup("job-late", 0)
	res.waitIDs(t, 1, 30*time.Second)
	if got := res.get("job-late"); len(got) != 1 || got[0].Subject != events.SubjectUserProfileFailed ||
		failureOf(t, got[0]).Error.Kind != events.KindTokenUnavailable {
		t.Fatalf("results %s, want one token_unavailable failure", describe(got))
	}
	if n := h.sim.Stats().TotalCalls("/cgi-bin/user/info"); n != 0 {
		t.Fatalf("%d user/info calls with a token expired on the worker's clock, want 0", n)
	}

	clock.Advance(-3 * time.Hour)
	if err := w.ReadyError(); err != nil {
		t.Fatalf("ReadyError with the clock back = %v, want nil", err)
	}
	h.lookup("job-back", 0)
	res.waitIDs(t, 2, 30*time.Second)
	if got := res.get("job-back"); len(got) != 1 || got[0].Subject != events.SubjectUserProfile {
		t.Fatalf("results %s, want one profile", describe(got))
	}
}

// describe shows results for a failure message.
func describe(rs []stored) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "[%s %s] ", r.Subject, r.Data)
	}
	return b.String()
}

// storeExpiredToken stores a token the simulator still takes in wx_tokens
// as version v, with an expires_at ago in the past: what a holder that
// stopped refreshing leaves behind (with WeChat's token still working,
// any call made with it shows in the simulator's stats).
func (h *harness) storeExpiredToken(v uint64, ago time.Duration) {
	t := h.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tok, err := h.wc.Token(ctx, testApp, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(-ago)
	b, _ := json.Marshal(events.TokenRecord{AppID: testApp, AccessToken: tok.Token, ExpiresAt: exp, FetchedAt: exp.Add(-tok.ExpiresIn),
		Version: v, Mode: events.ModeToken, Holder: "gone"})
	if _, err := h.holder.kv.Put(ctx, testApp, b); err != nil {
		t.Fatal(err)
	}
}

// startHolder runs a real holder (package holder) for testApp until the
// test ends.
func (h *harness) startHolder(id string) {
	t := h.t
	t.Helper()
	hd, err := holder.New(holder.Config{Conn: h.env.Conn(t), WeChat: h.wc, ID: id, Jitter: -1,
		Apps: []holder.App{{AppID: testApp, Secret: testSecret}}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hd.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("holder: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("holder did not stop")
		}
	})
}
