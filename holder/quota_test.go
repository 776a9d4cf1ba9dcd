package holder

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/metrics"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// Below the quota reserve, reports and manual refreshes no longer fetch;
// the scheduled refresh still does.
func TestQuotaReserveStopsForcedRefreshes(t *testing.T) {
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	ctx := context.Background()
	// 1800 of 2000 used today: the default reserve of 200 is reached once
	// the startup fetch is counted.
	if _, err := e.quota.Create(ctx, events.QuotaKey(app.AppID, e.clock.Now()), []byte("1799")); err != nil {
		t.Fatal(err)
	}
	r := e.start(e.config("h1", app), nil)
	waitRefreshed(t, e, app.AppID, 1)
	if got := r.h.Status()[0].FetchesToday; got != 1800 {
		t.Errorf("FetchesToday = %d, want 1800", got)
	}

	e.report(app.AppID, 1, 10)
	wxhubtest.Eventually(t, 5*time.Second, "reports judged", func() bool { return totalDecisions(app.AppID) == 10 })
	if d := decisions(app.AppID); d[decisionQuotaReserve] != 10 {
		t.Errorf("decisions = %v, want 10 quota_reserve", d)
	}
	if err := r.h.Refresh(ctx, app.AppID); !errors.Is(err, ErrQuotaReserve) {
		t.Errorf("manual refresh: %v, want ErrQuotaReserve", err)
	}
	r.waitEvals(t, 5)
	if got := e.fetches(app.AppID); got != 1 {
		t.Fatalf("fetches = %d, want 1 (no forced refresh below the reserve)", got)
	}

	// The scheduled refresh goes on.
	e.clock.Advance(2*time.Hour - 9*time.Minute)
	ev := waitRefreshed(t, e, app.AppID, 2)
	if ev.Reason != events.ReasonScheduled {
		t.Errorf("reason = %q, want scheduled", ev.Reason)
	}
	if n := e.quotaUsed(app.AppID, false); n != 1801 {
		t.Errorf("wx_quota = %d, want 1801", n)
	}
}

// 45009 stops fetching until the China day turns and never removes the
// stored token; the first fetch of the new day succeeds.
func TestDailyQuotaExhausted(t *testing.T) {
	e := newTestEnv(t)
	e.clock.Set(time.Date(2025, 3, 10, 13, 0, 0, 0, time.UTC)) // 21:00 in China
	app := e.newApp(events.ModeToken)
	r := e.start(e.config("h1", app), nil)
	v1 := waitRefreshed(t, e, app.AppID, 1)
	e.sim.SetTokenDailyLimit(app.AppID, 1)

	// 22:51: the scheduled refresh is due and WeChat answers 45009.
	e.clock.Advance(2*time.Hour - 9*time.Minute)
	failed := waitEvent(t, e.events, events.SubjectTokenRefreshFailed, app.AppID, 10*time.Second,
		func(ev events.TokenRefreshFailed) bool { return ev.ErrCode == 45009 })
	midnight := events.NextChinaMidnight(e.clock.Now())
	if failed.NextAttemptAt.Before(midnight) {
		t.Errorf("next_attempt_at = %v, want >= China midnight %v", failed.NextAttemptAt, midnight)
	}
	calls := e.fetches(app.AppID)
	if calls != 2 {
		t.Fatalf("calls = %d, want 2 (startup + the 45009)", calls)
	}
	// No more fetches today: not on schedule, not on reports, not by hand,
	// even after the token expired (23:00).
	e.report(app.AppID, 1, 5)
	for range 3 {
		e.clock.Advance(20 * time.Minute)
		r.waitEvals(t, 5)
	}
	if err := r.h.Refresh(context.Background(), app.AppID); !errors.Is(err, ErrBackingOff) {
		t.Errorf("manual refresh: %v, want ErrBackingOff", err)
	}
	if got := e.fetches(app.AppID); got != calls {
		t.Fatalf("calls after 45009 = %d, want %d", got, calls)
	}
	if rec, _ := e.record(app.AppID); rec.Version != 1 || rec.AccessToken == "" {
		t.Errorf("stored token after 45009: version %d, token present %v; want version 1 kept", rec.Version, rec.AccessToken != "")
	}
	if st := r.h.Status()[0]; st.NextAttemptAt.Before(midnight) || st.LastError == "" {
		t.Errorf("status = %+v, want NextAttemptAt >= %v and LastError", st, midnight)
	}

	// The day turns: the next fetch succeeds.
	e.clock.Set(midnight.Add(time.Minute))
	v2 := waitRefreshed(t, e, app.AppID, 2)
	if !v2.FetchedAt.After(midnight) || !v2.ExpiresAt.After(v1.ExpiresAt) {
		t.Errorf("version 2 fetched %v, want after %v", v2.FetchedAt, midnight)
	}
}

// Transient failures (-1, HTTP 5xx, timeouts) are retried with backoff and
// each publishes token.refresh_failed; configuration errors are retried
// slowly, never in a loop.
func TestFetchFailures(t *testing.T) {
	tests := []struct {
		name      string
		fault     wechatsim.Fault
		wantCode  int
		recovers  bool // the holder gets a token while the test watches
		wantCalls int64
	}{
		{"system error -1", wechatsim.Fault{Path: wechatsim.PathToken, ErrCode: -1, Count: 3}, -1, true, 4},
		{"HTTP 502", wechatsim.Fault{Path: wechatsim.PathToken, HTTPStatus: 502, Count: 2}, 0, true, 3},
		{"invalid appsecret", wechatsim.Fault{Path: wechatsim.PathToken, ErrCode: 40125}, 40125, false, 1},
		{"IP not whitelisted", wechatsim.Fault{Path: wechatsim.PathToken, ErrCode: 40164}, 40164, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t)
			app := e.newApp(events.ModeToken)
			if err := e.sim.AddFault(tt.fault); err != nil {
				t.Fatal(err)
			}
			r := e.start(e.config("h1", app), nil)
			waitEvent(t, e.events, events.SubjectTokenRefreshFailed, app.AppID, 10*time.Second,
				func(ev events.TokenRefreshFailed) bool { return ev.ErrCode == tt.wantCode })
			if tt.recovers {
				waitRefreshed(t, e, app.AppID, 1)
			} else {
				r.waitEvals(t, 20)
			}
			if got := e.fetches(app.AppID); got != tt.wantCalls {
				t.Errorf("calls = %d, want %d", got, tt.wantCalls)
			}
			failures := eventsOf[events.TokenRefreshFailed](e.events, events.SubjectTokenRefreshFailed, app.AppID)
			if int64(len(failures)) != tt.wantCalls-btoi(tt.recovers) {
				t.Errorf("token.refresh_failed events = %d, want %d", len(failures), tt.wantCalls-btoi(tt.recovers))
			}
			for _, f := range failures {
				if f.NextAttemptAt.IsZero() {
					t.Errorf("refresh_failed without next_attempt_at: %+v", f)
				}
			}
		})
	}
}

func btoi(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// gatheredGauge returns the value of family{appid} in the registry, and
// whether the series exists.
func gatheredGauge(t *testing.T, family, appid string) (float64, bool) {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "appid" && l.GetValue() == appid {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// The holder exports its daily limit and reserve per token mode app, as
// configured (a negative reserve is none: 0), so that the quota alert
// needs no copy of the configuration; stable_token apps, which have no
// reserve, get neither.
func TestQuotaLimitAndReserveExported(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                   string
		limit, reserve         int
		wantLimit, wantReserve float64
	}{
		{"defaults", 0, 0, 2000, 200},
		{"configured", 300, 50, 300, 50},
		{"no reserve", 0, -1, 2000, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			app, stable := e.newApp(events.ModeToken), e.newApp(events.ModeStableToken)
			cfg := e.config("h1", app, stable)
			cfg.QuotaDailyLimit, cfg.QuotaReserve = tc.limit, tc.reserve
			e.start(cfg, nil)
			waitRefreshed(t, e, app.AppID, 1)
			waitRefreshed(t, e, stable.AppID, 1)
			for _, g := range []struct {
				family string
				want   float64
			}{{"wxhub_token_quota_limit", tc.wantLimit}, {"wxhub_token_quota_reserve", tc.wantReserve}} {
				if v, ok := gatheredGauge(t, g.family, app.AppID); !ok || v != g.want {
					t.Errorf("%s{appid=%q} = %v (exported: %v), want %v", g.family, app.AppID, v, ok, g.want)
				}
				if v, ok := gatheredGauge(t, g.family, stable.AppID); ok {
					t.Errorf("%s{appid=%q} = %v for a stable_token app, want no series", g.family, stable.AppID, v)
				}
			}
		})
	}
}

// gatedKV holds the first write to a bucket after armed until the gate
// opens (blocked says it waits, done that it returned).
type gatedKV struct {
	jetstream.KeyValue
	armed         atomic.Bool
	blocked, done chan struct{}
	gate          chan struct{}
}

func (g *gatedKV) wait() (gated bool) {
	if g.armed.CompareAndSwap(true, false) {
		g.blocked <- struct{}{}
		<-g.gate
		return true
	}
	return false
}

func (g *gatedKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if g.wait() {
		defer close(g.done)
	}
	return g.KeyValue.Create(ctx, key, value, opts...)
}

func (g *gatedKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if g.wait() {
		defer close(g.done)
	}
	return g.KeyValue.Update(ctx, key, value, rev)
}

// A fetch counted in wx_quota whose WeChat call is then not made (the
// count took so long that too little of the lease was left) is taken back:
// wx_quota counts the calls made, each once.
func TestFetchNotMadeIsNotCounted(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	gk := &gatedKV{blocked: make(chan struct{}, 1), done: make(chan struct{}), gate: make(chan struct{})}
	var pausing atomicBool
	renewGate := make(chan struct{})
	r := e.start(e.config("h1", app), func(h *Holder) {
		h.hooks.wrapKV = wrapBucket(events.BucketQuota, &gk.KeyValue, gk)
		h.hooks.leaseStep = func(string) {
			if pausing.Load() {
				<-renewGate // no renewal: the lease runs down
			}
		}
	})
	var once sync.Once
	resume := func() { once.Do(func() { close(renewGate) }) }
	t.Cleanup(resume)
	waitRefreshed(t, e, app.AppID, 1)

	pausing.Store(true)
	gk.armed.Store(true)
	e.clock.Advance(2 * time.Hour) // v1 expired: a scheduled refresh is due
	<-gk.blocked                   // its count waits
	a := r.h.apps[app.AppID]
	wxhubtest.Eventually(t, 10*time.Second, "the lease too short for a WeChat call", func() bool { return !a.leaseRoom() })
	close(gk.gate) // the count lands: too late for the call
	<-gk.done
	r.waitEvals(t, 1) // that refresh ended
	if n := e.quotaUsed(app.AppID, false); n != 1 {
		t.Errorf("wx_quota counts %d fetches for 1 WeChat call: the count of the call not made stayed", n)
	}
	if n := e.fetches(app.AppID); n != 1 {
		t.Fatalf("WeChat calls = %d, want 1: no call this close to the lease's end", n)
	}

	resume() // renewals again (or a new term): the refresh is made and counted
	waitRefreshed(t, e, app.AppID, 2)
	if n, calls := e.quotaUsed(app.AppID, false), e.fetches(app.AppID); n != calls || calls != 2 {
		t.Errorf("wx_quota counts %d fetches for %d WeChat calls, want 2 for 2", n, calls)
	}
}

// The quota view follows the China day: after the midnight the leader's
// status, lockouts and wxhub_token_quota_used show the new day's count
// (not yesterday's with its lockout moved to the next midnight), and a
// holder that stops leading the app no longer exports the gauge.
func TestQuotaViewFollowsTheChinaDay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		mode    string
		force   bool // the count put in is of forced stable_token calls
		count   string
		lockout string
	}{
		{"token: quota reserve", events.ModeToken, false, "1799", LockoutQuotaReserve},
		{"stable_token: force limit", events.ModeStableToken, true, "20", LockoutForceLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			e.clock.Set(time.Date(2025, 3, 10, 15, 30, 0, 0, time.UTC)) // 23:30 in China
			app := e.newApp(tc.mode)
			ctx := context.Background()
			key := events.QuotaKey(app.AppID, e.clock.Now())
			if tc.force {
				key = events.ForceQuotaKey(app.AppID, e.clock.Now())
			}
			if _, err := e.quota.Create(ctx, key, []byte(tc.count)); err != nil {
				t.Fatal(err)
			}
			r := e.start(e.config("h1", app), nil)
			waitRefreshed(t, e, app.AppID, 1)
			r.waitEvals(t, 2)
			st := r.h.Status()[0]
			if lockoutOf(st, tc.lockout) == nil || lockoutGauge(app.AppID, tc.lockout) != 1 {
				t.Fatalf("before the midnight: lockouts %v, want %s", st.Lockouts, tc.lockout)
			}
			wantBefore := int64(1)
			if !tc.force {
				wantBefore = 1800
			}
			if v, ok := gatheredGauge(t, "wxhub_token_quota_used", app.AppID); st.FetchesToday != wantBefore || !ok || v != float64(wantBefore) {
				t.Fatalf("before the midnight: FetchesToday %d, gauge %v (exported %v), want %d", st.FetchesToday, v, ok, wantBefore)
			}

			e.clock.Set(time.Date(2025, 3, 10, 16, 30, 0, 0, time.UTC)) // 00:30, the next China day
			r.waitEvals(t, 2)
			st = r.h.Status()[0]
			if l := lockoutOf(st, tc.lockout); l != nil || lockoutGauge(app.AppID, tc.lockout) != 0 {
				t.Errorf("on the new China day: lockout %v (gauge %v) from yesterday's count", l, lockoutGauge(app.AppID, tc.lockout))
			}
			if v, ok := gatheredGauge(t, "wxhub_token_quota_used", app.AppID); st.FetchesToday != 0 || !ok || v != 0 {
				t.Errorf("on the new China day with no fetch: FetchesToday %d, gauge %v (exported %v), want 0", st.FetchesToday, v, ok)
			}

			// Another holder takes the lease: h1 stops exporting the count.
			e.takeLease(t, r, app.AppID)
			wxhubtest.Eventually(t, 5*time.Second, "h1 drops wxhub_token_quota_used", func() bool {
				_, ok := gatheredGauge(t, "wxhub_token_quota_used", app.AppID)
				return !ok
			})
			if st := r.h.Status()[0]; st.Leader || st.FetchesToday != 0 || len(st.Lockouts) != 0 {
				t.Errorf("standby status %+v", st)
			}
		})
	}
}

// A 45009 is recorded in the day's wx_quota record: a standby that takes
// over, or the holder restarted, makes no /cgi-bin/token call that day (it
// would get 45009 again) and shows quota_exhausted until the China
// midnight; the first fetch of the new day succeeds.
func TestQuotaExhaustedSurvivesFailover(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		standby bool // a standby runs and takes over; else h1 restarts
	}{
		{"standby takes over", true},
		{"holder restarts", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			e.clock.Set(time.Date(2025, 3, 10, 13, 0, 0, 0, time.UTC)) // 21:00 in China
			app := e.newApp(events.ModeToken)
			r1 := e.start(e.config("h1", app), nil)
			waitRefreshed(t, e, app.AppID, 1)
			var r2 *running
			if tc.standby {
				r2 = e.start(e.config("h2", app), nil)
				wxhubtest.Eventually(t, 5*time.Second, "h2 sees h1 lead", func() bool { return r2.h.Status()[0].LeaderID == "h1" })
			}
			e.sim.SetTokenDailyLimit(app.AppID, 1)
			e.clock.Advance(2*time.Hour - 9*time.Minute) // 22:51: the scheduled refresh gets 45009
			waitEvent(t, e.events, events.SubjectTokenRefreshFailed, app.AppID, 10*time.Second,
				func(ev events.TokenRefreshFailed) bool { return ev.ErrCode == 45009 })
			r1.waitEvals(t, 1) // the failure is handled (and recorded)
			if n := e.fetches(app.AppID); n != 2 {
				t.Fatalf("WeChat calls = %d, want 2 (startup + the 45009)", n)
			}

			r1.stop(t)
			if !tc.standby {
				r2 = e.start(e.config("h1", app), nil)
			}
			for led := false; !led; {
				select {
				case led = <-r2.leaderCh:
				case <-time.After(10 * time.Second):
					t.Fatal("no holder took over")
				}
			}
			e.clock.Advance(20 * time.Minute) // 23:11: the token expired meanwhile
			r2.waitEvals(t, 5)
			if n := e.fetches(app.AppID); n != 2 {
				t.Errorf("WeChat calls after the takeover = %d, want 2: the new leader called again on the day of the 45009", n)
			}
			midnight := events.NextChinaMidnight(e.clock.Now())
			st := r2.h.Status()[0]
			if l := lockoutOf(st, LockoutQuotaExhausted); l == nil || !l.Until.Equal(midnight) {
				t.Errorf("new leader's lockouts %v, want quota_exhausted until %v", st.Lockouts, midnight)
			}
			if !st.NextAttemptAt.Equal(midnight) || !strings.Contains(st.LastError, "45009") {
				t.Errorf("new leader's status: next attempt %v, last error %q; want %v and the 45009", st.NextAttemptAt, st.LastError, midnight)
			}

			e.clock.Set(midnight.Add(time.Minute)) // the day turns: the next fetch succeeds
			waitRefreshed(t, e, app.AppID, 2)
			if n := e.fetches(app.AppID); n != 3 {
				t.Errorf("WeChat calls = %d, want 3", n)
			}
		})
	}
}
