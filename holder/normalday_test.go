package holder

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// A stable_token app's report accepted on a China day whose force_refresh
// calls are out is answered with a normal call. If that refresh is still
// pending when the leader loses its term, and the day turns (the budget
// renewed) before the same holder leads again, it is made as a forced
// call, as a fresh leader taking it from the record would: a normal call
// returns the reported token unchanged while it is not in its last 5
// minutes, and the refresh would be lost.
func TestCarriedRefreshForcedAfterTheChinaDayTurns(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// exhaust uses up day 1's force_refresh calls before the report.
		exhaust func(t *testing.T, e *testEnv, appid string)
		// decision is how the report is judged.
		decision string
	}{
		{"the day's count reached", func(t *testing.T, e *testEnv, appid string) {
			key := events.ForceQuotaKey(appid, e.clock.Now())
			if _, err := e.quota.Put(context.Background(), key, []byte("20")); err != nil {
				t.Fatal(err)
			}
		}, decisionFallback},
		{"WeChat answered 45009 to the forced call", func(t *testing.T, e *testEnv, _ string) {
			if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathStableToken, ErrCode: wechat.CodeDailyQuota, Count: 1}); err != nil {
				t.Fatal(err)
			}
		}, decisionAccepted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			// 23:00 in China: the token fetched now lives past midnight.
			e.clock.Set(time.Date(2025, 3, 10, 15, 0, 0, 0, time.UTC))
			app := e.newApp(events.ModeStableToken)
			var (
				mu     sync.Mutex
				forced []bool // force_refresh of each WeChat call
			)
			calls := func() []bool {
				mu.Lock()
				defer mu.Unlock()
				return append([]bool(nil), forced...)
			}
			h1 := e.start(e.config("h1", app), func(h *Holder) {
				h.hooks.fetched = func(_ string, f bool) {
					mu.Lock()
					forced = append(forced, f)
					mu.Unlock()
				}
			})
			waitRefreshed(t, e, app.AppID, 1)
			rec1, _ := e.record(app.AppID)

			// Day 1: the report's refresh is taken as a normal call, and
			// WeChat fails it until the term is lost.
			tc.exhaust(t, e, app.AppID)
			if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathStableToken, ErrCode: wechat.CodeSystemError}); err != nil {
				t.Fatal(err)
			}
			e.report(app.AppID, 1, 3)
			waitEvent(t, e.events, events.SubjectTokenRefreshFailed, app.AppID, 10*time.Second,
				func(ev events.TokenRefreshFailed) bool { return ev.ErrCode == wechat.CodeSystemError })
			if d := decisions(app.AppID); d[tc.decision] != 1 {
				t.Fatalf("decisions %v, want one %s", d, tc.decision)
			}
			if c := calls(); c[len(c)-1] {
				t.Fatalf("force_refresh of the calls = %v: the failing call for the report was forced, want normal", c)
			}
			e.takeLease(t, h1, app.AppID)
			e.sim.ClearFaults()
			n := len(calls())

			// Day 2, 00:05: the budget is renewed and the token still has
			// 55 minutes (not due, and a normal call returns it).
			e.clock.Advance(65 * time.Minute)
			e.freeLease(t, h1, app.AppID)
			h1.waitEvals(t, 5)
			c := calls()
			if len(c) != n+1 || !c[n] {
				t.Fatalf("force_refresh of the calls = %v; want one more call after leading again (%d), forced", c, n)
			}
			ev := waitRefreshed(t, e, app.AppID, 2)
			if ev.Reason != events.ReasonInvalidated {
				t.Errorf("version 2: reason %q, want invalidated", ev.Reason)
			}
			if _, err := e.wc.CallbackIP(context.Background(), rec1.AccessToken); err == nil {
				t.Error("WeChat still accepts the reported token")
			}
			if used := e.quotaUsed(app.AppID, true); used != 1 {
				t.Errorf("day 2's force_refresh count = %d, want 1", used)
			}
			if rec, _ := e.record(app.AppID); rec.Version != 2 || !rec.InvalidatedAt.IsZero() {
				t.Errorf("stored: version %d, invalidated_at %v; want version 2 without the mark", rec.Version, rec.InvalidatedAt)
			}
		})
	}
}

// The same need held back past China midnight within ONE term of the
// leader: the report's refresh, judged a normal call on day 1 (its
// force_refresh calls out), still fails when the day turns. From the
// turn on it is made as a forced call, judged by day 2's budget: kept
// normal, the call returns the reported token unchanged once WeChat
// answers again, and the report's refresh is lost.
func TestHeldRefreshForcedAfterTheChinaDayTurnsInOneTerm(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		exhaust  func(t *testing.T, e *testEnv, appid string)
		decision string
	}{
		{"the day's count reached", func(t *testing.T, e *testEnv, appid string) {
			key := events.ForceQuotaKey(appid, e.clock.Now())
			if _, err := e.quota.Put(context.Background(), key, []byte("20")); err != nil {
				t.Fatal(err)
			}
		}, decisionFallback},
		{"WeChat answered 45009 to the forced call", func(t *testing.T, e *testEnv, _ string) {
			if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathStableToken, ErrCode: wechat.CodeDailyQuota, Count: 1}); err != nil {
				t.Fatal(err)
			}
		}, decisionAccepted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			// 23:00 in China: the token fetched now lives past midnight.
			e.clock.Set(time.Date(2025, 3, 10, 15, 0, 0, 0, time.UTC))
			app := e.newApp(events.ModeStableToken)
			var (
				mu     sync.Mutex
				forced []bool // force_refresh of each WeChat call
			)
			calls := func() []bool {
				mu.Lock()
				defer mu.Unlock()
				return append([]bool(nil), forced...)
			}
			h1 := e.start(e.config("h1", app), func(h *Holder) {
				h.hooks.fetched = func(_ string, f bool) {
					mu.Lock()
					forced = append(forced, f)
					mu.Unlock()
				}
			})
			waitRefreshed(t, e, app.AppID, 1)
			rec1, _ := e.record(app.AppID)

			// Day 1: the report's refresh is taken as a normal call, and
			// WeChat fails it (retried with backoff, same term).
			tc.exhaust(t, e, app.AppID)
			if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathStableToken, ErrCode: wechat.CodeSystemError}); err != nil {
				t.Fatal(err)
			}
			e.report(app.AppID, 1, 3)
			waitEvent(t, e.events, events.SubjectTokenRefreshFailed, app.AppID, 10*time.Second,
				func(ev events.TokenRefreshFailed) bool { return ev.ErrCode == wechat.CodeSystemError })
			if d := decisions(app.AppID); d[tc.decision] != 1 {
				t.Fatalf("decisions %v, want one %s", d, tc.decision)
			}
			if c := calls(); c[len(c)-1] {
				t.Fatalf("force_refresh of the calls = %v: the failing call for the report was forced, want normal", c)
			}

			// Day 2, 00:05, the same term: the budget is renewed and the
			// token still has 55 minutes (not due; a normal call returns it).
			n := len(calls())
			e.clock.Advance(65 * time.Minute)
			wxhubtest.Eventually(t, 10*time.Second, "a forced call after the China day turned", func() bool {
				return slices.Contains(calls()[n:], true)
			})
			e.sim.ClearFaults()
			ev := waitRefreshed(t, e, app.AppID, 2)
			if ev.Reason != events.ReasonInvalidated {
				t.Errorf("version 2: reason %q, want invalidated", ev.Reason)
			}
			c := calls()[n:]
			if first := slices.Index(c, true); slices.Contains(c[first:], false) {
				t.Errorf("force_refresh of the calls after the turn = %v: a normal call after the first forced one", c)
			}
			if _, err := e.wc.CallbackIP(context.Background(), rec1.AccessToken); err == nil {
				t.Error("WeChat still accepts the reported token")
			}
			if rec, _ := e.record(app.AppID); rec.Version != 2 || !rec.InvalidatedAt.IsZero() {
				t.Errorf("stored: version %d, invalidated_at %v; want version 2 without the mark", rec.Version, rec.InvalidatedAt)
			}
			if !h1.leader(app.AppID) {
				t.Error("h1 lost its term: the test is about one term")
			}
		})
	}
}
