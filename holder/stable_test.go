package holder

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// stable_token mode: scheduled refreshes use force_refresh=false inside the
// token's last five minutes (when WeChat hands out a new one); reports use
// force_refresh=true, at least 30 s apart and at most 20 a day.
func TestStableTokenMode(t *testing.T) {
	e := newTestEnv(t)
	app := e.newApp(events.ModeStableToken)
	ctx := context.Background()
	cfg := e.config("h1", app)
	cfg.MinForceInterval = time.Second // stable_token apps still keep 30 s
	cfg.ConflictWindow = time.Nanosecond
	var (
		mu          sync.Mutex
		forcedCalls []bool
	)
	r := e.start(cfg, func(h *Holder) {
		h.hooks.fetched = func(_ string, forced bool) {
			mu.Lock()
			forcedCalls = append(forcedCalls, forced)
			mu.Unlock()
		}
	})
	v1 := waitRefreshed(t, e, app.AppID, 1)
	rec1, _ := e.record(app.AppID)
	if rec1.Mode != events.ModeStableToken {
		t.Errorf("record mode = %q", rec1.Mode)
	}

	// Scheduled: due 4 minutes before expiry (the configured 10 min margin
	// is capped for stable_token), force_refresh=false yields a new token.
	e.clock.Advance(v1.ExpiresAt.Sub(e.clock.Now()) - 5*time.Minute)
	r.waitEvals(t, 5)
	if got := e.fetches(app.AppID); got != 1 {
		t.Fatalf("fetches 5 min before expiry = %d, want 1 (not due yet)", got)
	}
	e.clock.Advance(70 * time.Second)
	v2 := waitRefreshed(t, e, app.AppID, 2)
	if v2.Reason != events.ReasonScheduled {
		t.Errorf("reason = %q, want scheduled", v2.Reason)
	}
	rec2, _ := e.record(app.AppID)
	if rec2.AccessToken == rec1.AccessToken {
		t.Fatal("scheduled stable refresh stored the same token")
	}

	// A report: force_refresh=true, the old token dies at once.
	e.report(app.AppID, 2, 3)
	waitRefreshed(t, e, app.AppID, 3)
	rec3, _ := e.record(app.AppID)
	if _, err := e.wc.CallbackIP(ctx, rec2.AccessToken); err == nil {
		t.Error("force-refreshed token still accepted")
	}
	if _, err := e.wc.CallbackIP(ctx, rec3.AccessToken); err != nil {
		t.Errorf("new token rejected: %v", err)
	}

	// Another report 10 s later is rate-limited (30 s for stable_token).
	e.clock.Advance(10 * time.Second)
	e.report(app.AppID, 3, 1)
	wxhubtest.Eventually(t, 5*time.Second, "report judged", func() bool { return decisions(app.AppID)[decisionRateLimited] == 1 })
	// 31 s after the forced refresh, a report is accepted again.
	e.clock.Advance(21 * time.Second)
	e.report(app.AppID, 3, 1)
	waitRefreshed(t, e, app.AppID, 4)

	// The day's 20 forced refreshes are used up: reports fall back to a
	// normal call (which returns the current token: nothing stored).
	key := events.ForceQuotaKey(app.AppID, e.clock.Now())
	if n := e.quotaUsed(app.AppID, true); n != 2 {
		t.Errorf("force counter = %d, want 2", n)
	}
	if _, err := e.quota.Put(ctx, key, []byte("20")); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	e.report(app.AppID, 4, 1)
	wxhubtest.Eventually(t, 5*time.Second, "report judged", func() bool { return decisions(app.AppID)[decisionFallback] == 1 })
	r.waitEvals(t, 5)

	st := e.sim.Stats()
	if n := st.CallCount(wechatsim.PathToken, app.AppID); n != 0 {
		t.Errorf("/cgi-bin/token calls = %d, want 0", n)
	}
	if n := st.CallCount(wechatsim.PathStableToken, app.AppID); n != 5 {
		t.Errorf("/cgi-bin/stable_token calls = %d, want 5", n)
	}
	if rec, _ := e.record(app.AppID); rec.Version != 4 {
		t.Errorf("version %d after the fallback call, want 4 (unchanged token not stored)", rec.Version)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []bool{false, false, true, true, false}
	if len(forcedCalls) != len(want) {
		t.Fatalf("force_refresh of the calls = %v, want %v", forcedCalls, want)
	}
	for i := range want {
		if forcedCalls[i] != want[i] {
			t.Errorf("force_refresh of the calls = %v, want %v", forcedCalls, want)
			break
		}
	}
}
