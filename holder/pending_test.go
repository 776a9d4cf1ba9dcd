package holder

import (
	"testing"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// A report the leader accepted while WeChat fails (its refresh held back
// by the fetch backoff) is carried out by the holder that leads next,
// however long ago it came. The next leader here is started after the
// reports: it never saw them, as a standby that got them more than
// 2 x LeaseTTL before its term would have dropped them. It refreshes
// once, reason invalidated, whether the leader stopped or died, and
// also after a second handover (WeChat still down under the second
// leader). Nothing else is due: the stored token is fresh.
func TestHeldBackForcedRefreshSurvivesHandover(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"stops", "dies", "stops twice"} {
		t.Run("leader "+how, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			app := e.newApp(events.ModeToken)
			h1 := e.start(e.config("h1", app), nil)
			waitRefreshed(t, e, app.AppID, 1)
			if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathToken, ErrCode: -1}); err != nil {
				t.Fatal(err)
			}
			e.report(app.AppID, 1, 50)
			waitEvent(t, e.events, events.SubjectTokenRefreshFailed, app.AppID, 10*time.Second,
				func(events.TokenRefreshFailed) bool { return true })
			if d := decisions(app.AppID); d[decisionAccepted] != 1 {
				t.Fatalf("decisions = %v, want the report accepted", d)
			}

			// handover starts the next holder, waits until it sees from
			// lead, stops or kills from, and waits until next leads.
			handover := func(from *running, next string) *running {
				t.Helper()
				to := e.start(e.config(next, app), nil)
				wxhubtest.Eventually(t, 5*time.Second, next+" sees "+from.h.ID()+" lead", func() bool {
					return to.h.Status()[0].LeaderID == from.h.ID()
				})
				if how == "dies" {
					from.kill(t)
				} else {
					from.stop(t)
				}
				to.waitLeads(t)
				return to
			}
			last := handover(h1, "h2")
			if how == "stops twice" {
				calls := e.fetches(app.AppID) // h1's calls are over: it stopped
				wxhubtest.Eventually(t, 10*time.Second, "h2 trying the refresh while WeChat fails", func() bool {
					return e.fetches(app.AppID) > calls
				})
				last = handover(last, "h3")
			}
			e.sim.ClearFaults()
			ev := waitRefreshed(t, e, app.AppID, 2)
			if ev.Reason != events.ReasonInvalidated || ev.Holder != last.h.ID() {
				t.Errorf("version 2: reason %q by %q, want invalidated by %s", ev.Reason, ev.Holder, last.h.ID())
			}
			calls := e.fetches(app.AppID)
			last.waitEvals(t, 5)
			if n := e.fetches(app.AppID); n != calls {
				t.Errorf("WeChat token calls went on after version 2: %d, then %d", calls, n)
			}
			if d := decisions(app.AppID); d[decisionAccepted] != 1 || d[decisionDuplicate] != 49 {
				t.Errorf("decisions = %v, want 1 accepted, 49 duplicate (the reports were judged once)", d)
			}
			if rec, _ := e.record(app.AppID); rec.Version != 2 || !rec.InvalidatedAt.IsZero() {
				t.Errorf("stored: version %d, invalidated_at %v; want version 2 with none", rec.Version, rec.InvalidatedAt)
			}
		})
	}
}

// The pending refresh is of the version reported: once a newer token is
// stored (here the leader's own retry succeeded), the next leader makes
// no refresh for the old report.
func TestCarriedOutForcedRefreshIsNotHandedOver(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	h1 := e.start(e.config("h1", app), nil)
	waitRefreshed(t, e, app.AppID, 1)
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathToken, ErrCode: -1, Count: 1}); err != nil {
		t.Fatal(err)
	}
	e.report(app.AppID, 1, 50)
	if ev := waitRefreshed(t, e, app.AppID, 2); ev.Reason != events.ReasonInvalidated {
		t.Fatalf("version 2: reason %q, want invalidated", ev.Reason)
	}
	h2 := e.start(e.config("h2", app), nil)
	wxhubtest.Eventually(t, 5*time.Second, "h2 sees h1 lead", func() bool { return h2.h.Status()[0].LeaderID == "h1" })
	h1.stop(t)
	h2.waitLeads(t)
	h2.waitEvals(t, 5)
	if n := e.fetches(app.AppID); n != 3 {
		t.Errorf("WeChat token calls = %d, want 3 (startup, the failed and the successful refresh for the report)", n)
	}
	if rec, _ := e.record(app.AppID); rec.Version != 2 || rec.Holder != "h1" || !rec.InvalidatedAt.IsZero() {
		t.Errorf("stored: version %d by %s, invalidated_at %v; want h1's version 2 with none", rec.Version, rec.Holder, rec.InvalidatedAt)
	}
}

// A stable_token app whose forced call got 45009 answers the report with
// one normal call instead; WeChat returns the current token (it is not in
// its last 5 minutes). The refresh is then over, and the record no longer
// says it is pending: the next leader makes no further call for it.
func TestFallbackEndsThePendingRefresh(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeStableToken)
	h1 := e.start(e.config("h1", app), nil)
	waitRefreshed(t, e, app.AppID, 1)
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathStableToken, ErrCode: 45009, Count: 1}); err != nil {
		t.Fatal(err)
	}
	e.report(app.AppID, 1, 10)
	waitEvent(t, e.events, events.SubjectTokenRefreshFailed, app.AppID, 10*time.Second,
		func(ev events.TokenRefreshFailed) bool { return ev.ErrCode == 45009 })
	wxhubtest.Eventually(t, 10*time.Second, "the normal fallback call", func() bool { return e.fetches(app.AppID) == 3 })
	h1.waitEvals(t, 2)
	if rec, _ := e.record(app.AppID); rec.Version != 1 || !rec.InvalidatedAt.IsZero() {
		t.Fatalf("stored: version %d, invalidated_at %v; want version 1, no refresh pending", rec.Version, rec.InvalidatedAt)
	}
	h2 := e.start(e.config("h2", app), nil)
	wxhubtest.Eventually(t, 5*time.Second, "h2 sees h1 lead", func() bool { return h2.h.Status()[0].LeaderID == "h1" })
	h1.stop(t)
	h2.waitLeads(t)
	h2.waitEvals(t, 5)
	if n := e.fetches(app.AppID); n != 3 {
		t.Errorf("stable_token calls = %d, want 3 (startup, the forced call's 45009, one normal fallback)", n)
	}
}
