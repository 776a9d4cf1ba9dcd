package holder

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/metrics"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

func lockoutGauge(appid, state string) float64 {
	var m dto.Metric
	if err := metrics.TokenLockout.WithLabelValues(appid, state).Write(&m); err != nil {
		panic(err)
	}
	return m.GetGauge().GetValue()
}

func lockoutOf(st AppStatus, state string) *Lockout {
	for _, l := range st.Lockouts {
		if l.State == state {
			return &l
		}
	}
	return nil
}

// A stable_token app whose 20 force_refresh calls of the day were used
// elsewhere: a report's forced call gets 45009, token.refresh_failed says
// forced refreshes are exhausted until the day turns, the report falls back
// to a normal call, and the scheduled refresh in the token's last minutes
// still happens: the app keeps a working token.
func TestStableForcedExhaustedElsewhereKeepsScheduledRefresh(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeStableToken)
	ctx := context.Background()
	for i := range StableForceDailyLimit { // another system uses them all
		if _, err := e.wc.StableToken(ctx, app.AppID, app.Secret, true); err != nil {
			t.Fatalf("force %d: %v", i, err)
		}
		e.clock.Advance(31 * time.Second)
	}
	r := e.start(e.config("h1", app), nil)
	waitRefreshed(t, e, app.AppID, 1)

	e.report(app.AppID, 1, 5)
	ev := waitEvent(t, e.events, events.SubjectTokenRefreshFailed, app.AppID, 10*time.Second,
		func(ev events.TokenRefreshFailed) bool { return ev.ErrCode == 45009 })
	if !strings.Contains(ev.ErrMsg, "forced refreshes are exhausted until the China day turns") {
		t.Errorf("refresh_failed errmsg = %q", ev.ErrMsg)
	}
	wxhubtest.Eventually(t, 5*time.Second, "force_exhausted lockout", func() bool {
		return lockoutOf(r.h.Status()[0], LockoutForceExhausted) != nil && lockoutGauge(app.AppID, LockoutForceExhausted) == 1
	})
	if l := lockoutOf(r.h.Status()[0], LockoutForceExhausted); !l.Until.Equal(events.NextChinaMidnight(e.clock.Now())) {
		t.Errorf("force_exhausted until %v, want the China midnight", l.Until)
	}
	// The report falls back to a normal call (the current token: nothing stored).
	wxhubtest.Eventually(t, 5*time.Second, "fallback call", func() bool { return e.fetches(app.AppID) >= 3 })
	r.waitEvals(t, 3)
	if rec, _ := e.record(app.AppID); rec.Version != 1 {
		t.Fatalf("version %d after the fallback call, want 1", rec.Version)
	}

	// The token's last 3 minutes: the scheduled normal call gets a new one.
	rec, _ := e.record(app.AppID)
	e.clock.Set(rec.ExpiresAt.Add(-3 * time.Minute))
	ev2 := waitRefreshed(t, e, app.AppID, 2)
	if ev2.Reason != events.ReasonScheduled {
		t.Errorf("reason %q, want scheduled", ev2.Reason)
	}
	rec2, _ := e.record(app.AppID)
	if _, err := e.wc.CallbackIP(ctx, rec2.AccessToken); err != nil {
		t.Errorf("new token rejected: %v", err)
	}
}

// Reports that reach a standby during a failover, and those of its term,
// are judged against the stored record, whose reason and last forced
// refresh survive the failover: a token fetched for a report is a
// conflict, an older version stale, a forced refresh moments ago a rate
// limit. None buys a fetch.
func TestReportsAcrossFailoverJudgedByTheStoredRecord(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		setup    func(t *testing.T, e *testEnv, app App, h1 *running) // ends with version 2 stored
		reported uint64
		decision string // of the 100 reports in the new leader's term
	}{
		{"token fetched for a report: a conflict, not a fetch", func(t *testing.T, e *testEnv, app App, _ *running) {
			e.report(app.AppID, 1, 1)
			waitRefreshed(t, e, app.AppID, 2)
		}, 2, decisionConflict},
		{"reports older than the stored token: stale", func(t *testing.T, e *testEnv, app App, h1 *running) {
			if err := h1.h.Refresh(context.Background(), app.AppID); err != nil {
				t.Fatal(err)
			}
		}, 1, decisionStale},
		{"last forced refresh survives: rate-limited", func(t *testing.T, e *testEnv, app App, h1 *running) {
			if err := h1.h.Refresh(context.Background(), app.AppID); err != nil {
				t.Fatal(err)
			}
		}, 2, decisionRateLimited},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			app := e.newApp(events.ModeToken)
			h1 := e.start(e.config("h1", app), nil)
			waitRefreshed(t, e, app.AppID, 1)
			wxhubtest.Eventually(t, 5*time.Second, "h1 leads", func() bool { return h1.leader(app.AppID) })
			h2 := e.start(e.config("h2", app), nil)
			tc.setup(t, e, app, h1)
			wxhubtest.Eventually(t, 5*time.Second, "h2 sees version 2", func() bool { return h2.h.Status()[0].Version == 2 })
			fetches := e.fetches(app.AppID)

			h1.kill(t)
			e.report(app.AppID, tc.reported, 100) // while h2 stands by
			select {
			case l := <-h2.leaderCh:
				if !l {
					t.Fatal("h2 leadership event: false")
				}
			case <-time.After(15 * time.Second):
				t.Fatal("h2 did not take over")
			}
			h2.waitEvals(t, 5)
			if got := e.fetches(app.AppID) - fetches; got != 0 {
				t.Fatalf("fetches after takeover = %d, want 0 (reports of the failover)", got)
			}
			if got := decisions(app.AppID)[tc.decision]; got != 100 {
				t.Errorf("the failover's reports judged %s: %d, want 100 (%v)", tc.decision, got, decisions(app.AppID))
			}
			before := decisions(app.AppID)[tc.decision]
			judged := totalDecisions(app.AppID)
			e.report(app.AppID, tc.reported, 100) // in h2's term
			wxhubtest.Eventually(t, 10*time.Second, "100 reports judged", func() bool { return totalDecisions(app.AppID) >= judged+100 })
			h2.waitEvals(t, 5)
			if got := decisions(app.AppID)[tc.decision] - before; got != 100 {
				t.Errorf("%s decisions = %d, want 100 (%v)", tc.decision, got, decisions(app.AppID))
			}
			if got := e.fetches(app.AppID) - fetches; got != 0 {
				t.Errorf("fetches for reports in the new term = %d, want 0", got)
			}
			if tc.decision == decisionConflict {
				if n := len(eventsOf[events.TokenConflict](e.events, events.SubjectTokenConflict, app.AppID)); n != 1 {
					t.Errorf("token.conflict events = %d, want 1", n)
				}
				st := h2.h.Status()[0]
				if l := lockoutOf(st, LockoutConflict); l == nil || l.Until.IsZero() {
					t.Errorf("no conflict lockout in status: %+v", st.Lockouts)
				}
				if lockoutGauge(app.AppID, LockoutConflict) != 1 {
					t.Error("wxhub_token_lockout{state=conflict} is not 1")
				}
			}
		})
	}
}

// An operator's refresh right after a report-driven one is made (reason
// manual), is not a conflict, leaves no lockout, and has its own rate
// limit, refused with a reason that names it.
func TestManualRefreshIsNotAConflict(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	ctx := context.Background()
	r := e.start(e.config("h1", app), nil)
	waitRefreshed(t, e, app.AppID, 1)
	e.report(app.AppID, 1, 3) // a service reports a rejected token
	waitRefreshed(t, e, app.AppID, 2)
	if err := r.h.Refresh(ctx, app.AppID); err != nil { // the operator refreshes
		t.Fatalf("manual refresh after a report: %v", err)
	}
	if ev := waitRefreshed(t, e, app.AppID, 3); ev.Reason != events.ReasonManual {
		t.Errorf("reason %q, want manual", ev.Reason)
	}
	r.waitEvals(t, 3)
	if st := r.h.Status()[0]; len(st.Lockouts) != 0 {
		t.Errorf("lockouts after report + manual refresh: %v", st.Lockouts)
	}
	if n := len(eventsOf[events.TokenConflict](e.events, events.SubjectTokenConflict, app.AppID)); n != 0 {
		t.Errorf("token.conflict events = %d, want 0", n)
	}
	err := r.h.Refresh(ctx, app.AppID)
	var re *RefusedError
	if !errors.Is(err, ErrRateLimited) || !errors.As(err, &re) || re.State != "rate_limited" || re.Until.IsZero() {
		t.Fatalf("second manual refresh: %v, want a rate_limited refusal with its end", err)
	}
	if line := err.Error(); strings.Contains(line, "\n") || !strings.Contains(line, "rate_limited until ") {
		t.Errorf("refusal line %q", line)
	}
}

// Lockouts that stop refreshes are in Status and the metric, and a manual
// refresh refused by one names it.
func TestLockoutsVisible(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	ctx := context.Background()
	cfg := e.config("h1", app)
	cfg.QuotaDailyLimit, cfg.QuotaReserve = 10, 5
	r := e.start(cfg, nil)
	waitRefreshed(t, e, app.AppID, 1)
	if _, err := e.quota.Put(ctx, events.QuotaKey(app.AppID, e.clock.Now()), []byte("5")); err != nil {
		t.Fatal(err)
	}
	err := r.h.Refresh(ctx, app.AppID)
	var re *RefusedError
	if !errors.As(err, &re) || re.State != LockoutQuotaReserve {
		t.Fatalf("manual refresh at the reserve: %v", err)
	}
	if !strings.Contains(err.Error(), "quota_reserve until ") {
		t.Errorf("refusal %q does not name the state and its end", err)
	}
	e.clock.Advance(2 * time.Hour) // scheduled refresh: counted, so the reserve shows
	waitRefreshed(t, e, app.AppID, 2)
	wxhubtest.Eventually(t, 5*time.Second, "quota_reserve lockout", func() bool {
		return lockoutOf(r.h.Status()[0], LockoutQuotaReserve) != nil && lockoutGauge(app.AppID, LockoutQuotaReserve) == 1
	})
}
