package holder

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat"
)

// Another system fetching tokens for the same appid: the first rejection is
// answered with one refresh; when the token we fetched because of it is
// rejected too, moments later, the holder publishes token.conflict, logs an
// error and does not fetch again.
func TestTokenConflict(t *testing.T) {
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	ctx := context.Background()
	r := e.start(e.config("h1", app), nil)
	waitRefreshed(t, e, app.AppID, 1)

	rival := func() {
		t.Helper()
		if _, err := e.wc.Token(ctx, app.AppID, app.Secret); err != nil {
			t.Fatalf("rival fetch: %v", err)
		}
	}
	rejected := func(version uint64) {
		t.Helper()
		rec, _ := e.record(app.AppID)
		if rec.Version != version {
			t.Fatalf("stored version = %d, want %d", rec.Version, version)
		}
		_, err := e.wc.CallbackIP(ctx, rec.AccessToken)
		if !wechat.IsTokenInvalid(err) {
			t.Fatalf("version %d: want WeChat to reject it, got %v", version, err)
		}
	}

	// The rival fetches; five minutes later our token dies. One refresh.
	rival()
	e.clock.Advance(301 * time.Second)
	rejected(1)
	e.report(app.AppID, 1, 20)
	if ev := waitRefreshed(t, e, app.AppID, 2); ev.Reason != events.ReasonInvalidated {
		t.Errorf("reason = %q, want invalidated", ev.Reason)
	}

	// The rival fetches again and kills our new token too.
	rival()
	e.clock.Advance(301 * time.Second)
	rejected(2)
	calls := e.fetches(app.AppID)
	e.report(app.AppID, 2, 20)
	c := waitEvent(t, e.events, events.SubjectTokenConflict, app.AppID, 10*time.Second,
		func(events.TokenConflict) bool { return true })
	if c.Version != 2 || c.Detail == "" {
		t.Errorf("token.conflict = %+v, want version 2 with detail", c)
	}
	// More reports: still no fetch, no second conflict event.
	for range 3 {
		e.clock.Advance(40 * time.Second)
		e.report(app.AppID, 2, 20)
	}
	wxhubtest.Eventually(t, 5*time.Second, "80 reports on version 2 judged", func() bool { return decisions(app.AppID)[decisionConflict] == 80 })
	r.waitEvals(t, 5)
	if got := e.fetches(app.AppID); got != calls {
		t.Errorf("calls after the conflict = %d, want %d (no refetch loop)", got, calls)
	}
	if n := len(eventsOf[events.TokenConflict](e.events, events.SubjectTokenConflict, app.AppID)); n != 1 {
		t.Errorf("token.conflict events = %d, want 1", n)
	}
	if !containsLog(e.logs.String(), "ERROR", "token conflict") {
		t.Error("no error logged for the conflict")
	}
	t.Logf("decisions: %v", decisions(app.AppID))
}

// A leader paused past its lease (GC pause, SIGSTOP) loses it to a
// standby; when it resumes, its late write is not even attempted (its
// lease's time is over), token.refresh_failed says the fetched token is
// lost, and the successor's token stays.
func TestDeposedLeaderWriteFails(t *testing.T) {
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	ctx := context.Background()

	// While pausing, h1's lease loop waits for renewGate and its token
	// write for writeGate.
	var pausing atomicBool
	renewGate, writeGate := make(chan struct{}), make(chan struct{})
	writePaused := make(chan struct{}, 1)
	writeErr := make(chan error, 1)
	h1 := e.start(e.config("h1", app), func(h *Holder) {
		h.hooks.leaseStep = func(string) {
			if pausing.Load() {
				<-renewGate
			}
		}
		h.hooks.beforeWrite = func(string) {
			if pausing.Load() {
				writePaused <- struct{}{}
				<-writeGate
			}
		}
		h.hooks.afterWrite = func(_ string, err error) { writeErr <- err }
	})
	waitRefreshed(t, e, app.AppID, 1)
	<-writeErr
	if !h1.leader(app.AppID) {
		t.Fatal("h1 should lead")
	}
	h2 := e.start(e.config("h2", app), nil)
	var writeOnce, renewOnce sync.Once
	resumeWrite := func() { writeOnce.Do(func() { close(writeGate) }) }
	resumeRenew := func() { renewOnce.Do(func() { close(renewGate) }) }
	t.Cleanup(func() { resumeWrite(); resumeRenew() }) // before the holders' cleanups

	// Pause h1 in the middle of a refresh: fetched, not yet written.
	pausing.Store(true)
	refreshErr := make(chan error, 1)
	go func() { refreshErr <- h1.h.Refresh(ctx, app.AppID) }()
	<-writePaused
	// h2 takes over when the lease lapses and stores its own token.
	select {
	case l := <-h2.leaderCh:
		if !l {
			t.Fatal("h2 leadership event: false")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("h2 did not take over")
	}
	if err := h2.h.Refresh(ctx, app.AppID); err != nil {
		t.Fatalf("h2 refresh: %v", err)
	}
	succ, _ := e.record(app.AppID)
	if succ.Holder != "h2" || succ.Version != 2 {
		t.Fatalf("successor record: holder %q version %d", succ.Holder, succ.Version)
	}

	// Resume h1's write (its lease loop still sleeps): the write must not
	// be attempted, and the event must say the token is lost.
	resumeWrite()
	if err := <-writeErr; !errors.Is(err, errTermEnded) {
		t.Errorf("late write: %v, want errTermEnded", err)
	}
	if err := <-refreshErr; !errors.Is(err, errTermEnded) {
		t.Errorf("h1 refresh: %v, want errTermEnded", err)
	}
	waitEvent(t, e.events, events.SubjectTokenRefreshFailed, app.AppID, 5*time.Second, func(ev events.TokenRefreshFailed) bool {
		return strings.Contains(ev.ErrMsg, "could not be stored") && strings.Contains(ev.ErrMsg, "term ended")
	})
	resumeRenew()
	rec, _ := e.record(app.AppID)
	if rec.Holder != "h2" || rec.Version != 2 || rec.AccessToken != succ.AccessToken {
		t.Errorf("after the late write: holder %q version %d; want h2's version 2", rec.Holder, rec.Version)
	}
	wxhubtest.Eventually(t, 5*time.Second, "h1 steps down", func() bool { return !h1.leader(app.AppID) })
	if !h2.leader(app.AppID) {
		t.Error("h2 lost the lead")
	}
}

// A conflict the leader announced is not announced again by the holder
// that leads next: neither for the reports it carried as a standby (sent
// just before the handover) nor for those that reach it as the leader.
// The stored record says the conflict was announced; the new leader also
// shows the conflict lockout and makes no fetch for the reports.
func TestConflictNotAnnouncedAgainAfterHandover(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	h1, h2 := e.twoHolders(app, nil)
	e.report(app.AppID, 1, 20)
	if ev := waitRefreshed(t, e, app.AppID, 2); ev.Reason != events.ReasonInvalidated {
		t.Fatalf("version 2: reason %q, want invalidated", ev.Reason)
	}
	e.clock.Advance(time.Minute)
	e.report(app.AppID, 2, 20) // version 2 was fetched for a report a minute ago: a conflict
	waitEvent(t, e.events, events.SubjectTokenConflict, app.AppID, 10*time.Second, func(events.TokenConflict) bool { return true })
	wxhubtest.Eventually(t, 10*time.Second, "h1 judges the reports, h2 keeps them", func() bool {
		d := decisions(app.AppID)
		return d[decisionConflict] >= 20 && d[decisionStandby] >= 40
	})

	h1.stop(t) // within 2 x LeaseTTL of the reports: h2 judges those it carries
	h2.waitLeads(t)
	wxhubtest.Eventually(t, 10*time.Second, "h2 judges the carried reports", func() bool { return decisions(app.AppID)[decisionConflict] >= 40 })
	h2.waitEvals(t, 2)
	e.report(app.AppID, 2, 20)
	wxhubtest.Eventually(t, 10*time.Second, "h2 judges new reports", func() bool { return decisions(app.AppID)[decisionConflict] >= 60 })
	h2.waitEvals(t, 2)

	if n := conflictsStored(t, e); n != 1 {
		t.Errorf("token.conflict events in %s = %d, want 1 (h1's)", events.StreamTokenEvents, n)
	}
	if n := e.fetches(app.AppID); n != 2 {
		t.Errorf("WeChat token calls = %d, want 2 (startup, the first report)", n)
	}
	found := false
	for _, l := range h2.h.Status()[0].Lockouts {
		found = found || l.State == LockoutConflict
	}
	if !found {
		t.Errorf("h2's lockouts %v lack %s", h2.h.Status()[0].Lockouts, LockoutConflict)
	}
}

// conflictsStored counts the token.conflict events WX_TOKEN_EVENTS holds:
// a holder's publish is acknowledged once stored, so this count is exact
// once the holder's loop has gone past it.
func conflictsStored(t *testing.T, e *testEnv) uint64 {
	t.Helper()
	ctx := context.Background()
	s, err := e.nats.JS.Stream(ctx, events.StreamTokenEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(events.SubjectTokenConflict))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[events.SubjectTokenConflict]
}
