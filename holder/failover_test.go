package holder

import (
	"fmt"
	"testing"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// Three holders, one app: one fetch at start; killing the leader hands the
// lease to a standby within the lease TTL (+1 s) without a WeChat call;
// killing every holder and starting new ones costs no call either.
func TestFailoverThreeHolders(t *testing.T) {
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	var hs []*running
	for i := range 3 {
		hs = append(hs, e.start(e.config(fmt.Sprintf("h%d", i), app), nil))
	}
	ev := waitRefreshed(t, e, app.AppID, 1)
	if ev.Reason != events.ReasonStartup {
		t.Errorf("first refresh reason = %q, want startup", ev.Reason)
	}
	// Every holder sees version 1; exactly one leads.
	wxhubtest.Eventually(t, 5*time.Second, "all holders see version 1", func() bool {
		for _, r := range hs {
			if r.h.Status()[0].Version != 1 {
				return false
			}
		}
		return true
	})
	var leader *running
	var standbys []*running
	for _, r := range hs {
		if r.leader(app.AppID) {
			if leader != nil {
				t.Fatal("two leaders")
			}
			leader = r
		} else {
			standbys = append(standbys, r)
		}
	}
	if leader == nil {
		t.Fatal("no leader")
	}
	if got := e.fetches(app.AppID); got != 1 {
		t.Fatalf("fetches at start = %d, want 1", got)
	}

	// Kill the leader: a standby takes over within LeaseTTL + 1 s.
	killed := time.Now()
	leader.kill(t)
	takeover := make(chan *running, 2)
	for _, r := range standbys {
		go func() {
			for l := range r.leaderCh {
				if l {
					takeover <- r
					return
				}
			}
		}()
	}
	var next *running
	select {
	case next = <-takeover:
	case <-time.After(10 * time.Second):
		t.Fatal("no standby took over")
	}
	took := time.Since(killed)
	ttl := leader.h.cfg.LeaseTTL
	t.Logf("takeover after %v (lease TTL %v)", took, ttl)
	if took > ttl+time.Second {
		t.Errorf("takeover took %v, want <= %v", took, ttl+time.Second)
	}
	next.waitEvals(t, 5)
	if got := e.fetches(app.AppID); got != 1 {
		t.Errorf("fetches after takeover = %d, want 1 (stored token still fresh)", got)
	}
	if rec, _ := e.record(app.AppID); rec.Version != 1 {
		t.Errorf("version after takeover = %d, want 1", rec.Version)
	}

	// Kill every holder (leases stay until they expire) and start new ones.
	for _, r := range standbys {
		r.kill(t)
	}
	var fresh []*running
	for i := range 3 {
		fresh = append(fresh, e.start(e.config(fmt.Sprintf("r%d", i), app), nil))
	}
	wxhubtest.Eventually(t, 3*ttl, "a new leader", func() bool {
		for _, r := range fresh {
			if r.leader(app.AppID) {
				next = r
				return true
			}
		}
		return false
	})
	next.waitEvals(t, 5)
	if got := e.fetches(app.AppID); got != 1 {
		t.Errorf("fetches after restarting every holder = %d, want 1", got)
	}
	if n := len(eventsOf[events.TokenRefreshed](e.events, events.SubjectTokenRefreshed, app.AppID)); n != 1 {
		t.Errorf("token.refreshed events = %d, want 1", n)
	}
}

// A standby that takes over when the stored token is due fetches at once,
// with reason takeover; a graceful stop hands the lease over without
// waiting for the TTL.
func TestTakeoverFetchesDueToken(t *testing.T) {
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	cfg := e.config("h1", app)
	cfg.LeaseTTL = 5 * time.Second
	// h1's clock stands still, so it never finds the token due itself.
	start := e.clock.Now()
	cfg.Now = func() time.Time { return start }
	r1 := e.start(cfg, nil)
	waitRefreshed(t, e, app.AppID, 1)
	cfg2 := e.config("h2", app)
	cfg2.LeaseTTL = cfg.LeaseTTL
	r2 := e.start(cfg2, nil)
	wxhubtest.Eventually(t, 5*time.Second, "h2 sees h1 lead", func() bool { return r2.h.Status()[0].LeaderID == "h1" })

	e.clock.Advance(2 * time.Hour) // the stored token expired meanwhile
	stopped := time.Now()
	r1.stop(t) // graceful: releases the lease
	ev := waitRefreshed(t, e, app.AppID, 2)
	if took := time.Since(stopped); took > time.Second {
		t.Errorf("takeover after a graceful stop took %v, want well under the %v TTL", took, cfg.LeaseTTL)
	}
	if ev.Reason != events.ReasonTakeover || ev.Holder != "h2" {
		t.Errorf("refresh = %+v, want reason takeover by h2", ev)
	}
	if got := e.fetches(app.AppID); got != 2 {
		t.Errorf("fetches = %d, want 2", got)
	}
}
