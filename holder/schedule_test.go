package holder

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// The scheduled refresh happens before expiry as the simulator's clock
// moves, and a reader that keeps reading wx_tokens meanwhile never sees a
// token that is expired or that WeChat rejects.
func TestScheduledRefreshBeforeExpiry(t *testing.T) {
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	cfg := e.config("h1", app)
	cfg.Jitter = 2 * time.Minute
	cfg.CheckInterval = 10 * time.Millisecond
	r := e.start(cfg, nil)
	waitRefreshed(t, e, app.AppID, 1)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		reads, bad atomic.Int64
		mu         sync.Mutex
		problems   []string
		seen       = map[uint64]bool{}
	)
	check := func(rec events.TokenRecord) {
		reads.Add(1)
		now := e.clock.Now()
		fail := func(why string) {
			bad.Add(1)
			mu.Lock()
			problems = append(problems, why)
			mu.Unlock()
		}
		if !rec.ExpiresAt.After(now) {
			fail("expired record: version " + itoa(int64(rec.Version)))
			return
		}
		if _, err := e.wc.CallbackIP(ctx, rec.AccessToken); err != nil && ctx.Err() == nil {
			// The clock may have moved between the read and the call; the
			// record is only wrong if it is rejected at the time it was read.
			if e.clock.Now().Equal(now) {
				fail("token rejected: " + err.Error())
			}
		}
		mu.Lock()
		seen[rec.Version] = true
		mu.Unlock()
	}
	// Reader 1 follows every value through a watch; reader 2 polls Get.
	w, err := e.tokens.Watch(ctx, app.AppID)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for ent := range w.Updates() {
			if ent == nil {
				continue
			}
			var rec events.TokenRecord
			if json.Unmarshal(ent.Value(), &rec) == nil {
				check(rec)
			}
		}
	})
	wg.Go(func() {
		for ctx.Err() == nil {
			if ent, err := e.tokens.Get(ctx, app.AppID); err == nil {
				var rec events.TokenRecord
				if json.Unmarshal(ent.Value(), &rec) == nil {
					check(rec)
				}
			}
		}
	})

	// Four hours in two-minute steps; after each step the holder evaluates
	// at least twice.
	const step = 2 * time.Minute
	for range 4 * 60 / 2 {
		e.clock.Advance(step)
		r.waitEvals(t, 2)
	}
	cancel()
	_ = w.Stop()
	wg.Wait()

	refreshed := eventsOf[events.TokenRefreshed](e.events, events.SubjectTokenRefreshed, app.AppID)
	if len(refreshed) < 3 {
		t.Fatalf("%d refreshes in 4 h, want at least 3 (startup + 2 scheduled)", len(refreshed))
	}
	margin, jitter := r.h.cfg.RefreshMargin, r.h.cfg.Jitter
	for i, ev := range refreshed[1:] {
		prev := refreshed[i]
		if ev.Reason != events.ReasonScheduled {
			t.Errorf("refresh %d reason %q, want scheduled", ev.Version, ev.Reason)
		}
		left := prev.ExpiresAt.Sub(ev.FetchedAt)
		if left < margin-step || left > margin+jitter+step {
			t.Errorf("version %d fetched %v before version %d expired, want within [%v, %v]", ev.Version, left, prev.Version, margin, margin+jitter)
		}
	}
	if got, want := e.fetches(app.AppID), int64(len(refreshed)); got != want {
		t.Errorf("fetches = %d, want %d (one per refresh)", got, want)
	}
	t.Logf("%d reads, %d versions seen, %d refreshes", reads.Load(), len(seen), len(refreshed))
	if bad.Load() > 0 {
		t.Errorf("%d bad reads, e.g. %v", bad.Load(), problems[0])
	}
	if len(seen) != len(refreshed) {
		t.Errorf("readers saw %d versions, want %d", len(seen), len(refreshed))
	}
}

// A term that adopts the stored token labels its later scheduled refresh
// "scheduled": "startup" and "takeover" are for a term's first fetch only,
// and an adopting term made none.
func TestAdoptedTokenRefreshIsScheduled(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		standby bool // h2 runs (and sees h1 lead) before h1 stops: a takeover
	}{{"restart", false}, {"takeover", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			app := e.newApp(events.ModeToken)
			r1 := e.start(e.config("h1", app), nil)
			waitRefreshed(t, e, app.AppID, 1)
			var r2 *running
			if tc.standby {
				r2 = e.start(e.config("h2", app), nil)
				wxhubtest.Eventually(t, 10*time.Second, "h2 sees h1 lead", func() bool { return r2.h.Status()[0].LeaderID == "h1" })
			}
			r1.stop(t) // graceful: releases the lease
			if r2 == nil {
				r2 = e.start(e.config("h2", app), nil)
			}
			if !<-r2.leaderCh {
				t.Fatal("h2 did not become leader")
			}
			r2.waitEvals(t, 2)
			if n := e.fetches(app.AppID); n != 1 {
				t.Fatalf("WeChat token calls after adoption = %d, want 1", n)
			}
			e.clock.Advance(7200*time.Second - 5*time.Minute) // inside the 10 min margin
			ev := waitRefreshed(t, e, app.AppID, 2)
			if ev.Holder != "h2" || ev.Reason != events.ReasonScheduled {
				t.Errorf("refresh after adoption by %q with reason %q, want h2 %q", ev.Holder, ev.Reason, events.ReasonScheduled)
			}
		})
	}
}
