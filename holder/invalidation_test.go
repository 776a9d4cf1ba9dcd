package holder

import (
	"context"
	"testing"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// 500 concurrent reports for the current version cause exactly one fetch;
// 500 for an older version cause none. Two holders run: the standby
// receives every report too and must not act on them.
func TestInvalidationStorm(t *testing.T) {
	tests := []struct {
		name        string
		stale       bool // report a version older than the current one
		wantFetches int64
	}{
		{"current version", false, 1},
		{"older version", true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t)
			app := e.newApp(events.ModeToken)
			r1 := e.start(e.config("h1", app), nil)
			r2 := e.start(e.config("h2", app), nil)
			waitRefreshed(t, e, app.AppID, 1)
			leader := r1
			wxhubtest.Eventually(t, 5*time.Second, "a leader", func() bool {
				if r2.leader(app.AppID) {
					leader = r2
				}
				return r1.leader(app.AppID) || r2.leader(app.AppID)
			})
			reported := uint64(1)
			if tt.stale {
				// Move to version 2 first, then report version 1.
				if err := leader.h.Refresh(context.Background(), app.AppID); err != nil {
					t.Fatalf("manual refresh: %v", err)
				}
				waitRefreshed(t, e, app.AppID, 2)
			}
			cur, _ := e.record(app.AppID)
			before := e.fetches(app.AppID)

			e.report(app.AppID, reported, 500)
			wxhubtest.Eventually(t, 10*time.Second, "500 reports judged", func() bool { return totalDecisions(app.AppID) == 500 })
			leader.waitEvals(t, 5)

			if got := e.fetches(app.AppID) - before; got != tt.wantFetches {
				t.Errorf("fetches caused by 500 reports = %d, want %d", got, tt.wantFetches)
			}
			d := decisions(app.AppID)
			t.Logf("decisions: %v", d)
			rec, _ := e.record(app.AppID)
			if tt.stale {
				if d[decisionStale] != 500 || rec.Version != cur.Version {
					t.Errorf("stale reports: decisions %v, version %d->%d; want 500 stale, unchanged", d, cur.Version, rec.Version)
				}
				return
			}
			if d[decisionAccepted] != 1 || d[decisionDuplicate] != 499 {
				t.Errorf("decisions = %v, want 1 accepted, 499 duplicate", d)
			}
			if rec.Version != cur.Version+1 {
				t.Errorf("version = %d, want %d", rec.Version, cur.Version+1)
			}
			ev := waitRefreshed(t, e, app.AppID, rec.Version)
			if ev.Reason != events.ReasonInvalidated {
				t.Errorf("reason = %q, want invalidated", ev.Reason)
			}
			// The new token works, the reported one is on its way out.
			if _, err := e.wc.CallbackIP(context.Background(), rec.AccessToken); err != nil {
				t.Errorf("new token rejected: %v", err)
			}
		})
	}
}
