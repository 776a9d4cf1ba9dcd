package holder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// pauseRelease is a start setup: the holder, stopping, waits before it
// steps down and releases an app's lease until resume is called; paused
// is closed when it waits there. Meanwhile it still holds the lease, and
// nobody else can lead.
func pauseRelease() (setup func(*Holder), paused <-chan struct{}, resume func()) {
	p, r := make(chan struct{}), make(chan struct{})
	var once, resumed sync.Once
	return func(h *Holder) {
			h.hooks.releasing = func(string) {
				once.Do(func() { close(p) })
				<-r
			}
		}, p, func() {
			resumed.Do(func() { close(r) })
		}
}

// holdAnswer makes the next call to path reach the simulator, which
// answers it (a token call issues a token, and the previous one stops
// working 5 minutes later), and keeps the answer from the caller until
// release is called or the caller gives up. answered is closed once the
// simulator answered.
func (e *testEnv) holdAnswer(path string) (answered <-chan struct{}, release func()) {
	done, rel := make(chan struct{}), make(chan struct{})
	var once, released sync.Once
	f := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held := false
		if r.URL.Path == path {
			once.Do(func() { held = true })
		}
		if !held {
			e.sim.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		e.sim.ServeHTTP(rec, r.WithContext(context.WithoutCancel(r.Context())))
		close(done)
		select {
		case <-rel:
		case <-r.Context().Done():
			return // the caller gave up: the answer is lost
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
	e.front.Store(&f)
	e.t.Cleanup(func() { released.Do(func() { close(rel) }) })
	return done, func() { released.Do(func() { close(rel) }) }
}

// askRefresh sends a manual refresh request on wxhub.token.refresh, as
// `wxhub token invalidate` does, and returns the answer.
func (e *testEnv) askRefresh(appid string, replace *uint64) events.TokenRefreshReply {
	e.t.Helper()
	data, _ := json.Marshal(events.TokenRefreshRequest{AppID: appid, Requester: "test", Version: replace})
	m, err := e.nats.NC.Request(events.SubjectTokenRefreshRequest, data, 10*time.Second)
	if err != nil {
		e.t.Fatalf("manual refresh request: no answer: %v", err)
	}
	var reply events.TokenRefreshReply
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		e.t.Fatalf("answer %s: %v", m.Data, err)
	}
	return reply
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(15 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// waitLeads waits until the holder becomes the leader.
func (r *running) waitLeads(t *testing.T) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case l := <-r.leaderCh:
			if l {
				return
			}
		case <-timeout:
			t.Fatalf("%s did not become leader", r.h.ID())
		}
	}
}

// twoHolders starts h1 (with setup) and waits for its first token, then
// h2, and waits until h2 sees h1 lead.
func (e *testEnv) twoHolders(app App, setup func(*Holder)) (h1, h2 *running) {
	e.t.Helper()
	h1 = e.start(e.config("h1", app), setup)
	waitRefreshed(e.t, e, app.AppID, 1)
	h2 = e.start(e.config("h2", app), nil)
	wxhubtest.Eventually(e.t, 5*time.Second, "h2 sees h1 lead", func() bool { return h2.h.Status()[0].LeaderID == "h1" })
	return h1, h2
}

// An operator's refresh asked while the leader stops is answered at once
// (not with "context canceled", not with silence): not_leading, no refresh
// made. Asked again, the holder that leads next makes it: one fetch; asked
// once more for the same version (a retry), it is answered with the new
// token and fetches nothing.
func TestManualRefreshAskedWhileTheLeaderStops(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	pause, paused, resume := pauseRelease()
	defer resume() // also when the test fails first
	h1, h2 := e.twoHolders(app, pause)

	h1.cancel() // SIGTERM: h1 stops, and waits before it releases its lease
	waitClosed(t, paused, "h1 to stop")
	one := uint64(1)
	reply := e.askRefresh(app.AppID, &one)
	if reply.Refused != LockoutNotLeading || reply.Holder != "h1" ||
		!strings.Contains(reply.Error, "h1 is stopping") || !strings.Contains(reply.Error, "no refresh was made") {
		t.Fatalf("the stopping leader answered %+v, want not_leading: stopping, no refresh made", reply)
	}
	if n := e.fetches(app.AppID); n != 1 {
		t.Fatalf("WeChat token calls = %d after the stopping leader's answer, want 1", n)
	}

	resume()
	h2.waitLeads(t)
	reply = e.askRefresh(app.AppID, &one)
	if reply.Error != "" || reply.Version != 2 || reply.Holder != "h2" {
		t.Fatalf("asked again of the new leader: %+v, want version 2 by h2", reply)
	}
	if ev := waitRefreshed(t, e, app.AppID, 2); ev.Reason != events.ReasonManual || ev.Holder != "h2" {
		t.Errorf("version 2: reason %q by %q, want manual by h2", ev.Reason, ev.Holder)
	}
	reply = e.askRefresh(app.AppID, &one)
	if reply.Error != "" || reply.Version != 2 {
		t.Fatalf("asked once more for version 1: %+v, want version 2, no error", reply)
	}
	if n := e.fetches(app.AppID); n != 2 {
		t.Errorf("WeChat token calls = %d, want 2 (startup, one manual refresh)", n)
	}
}

// Reports that reach the holders during a handover (the leader has stopped
// judging: it stops, paused before it releases its lease; or it died and
// its lease has not lapsed yet) are judged by the holder that leads next,
// against the stored record: 200 reports for the current token make one
// refresh, 200 for an older one none.
func TestReportsDuringHandover(t *testing.T) {
	t.Parallel()
	for _, crash := range []bool{false, true} {
		for _, stale := range []bool{false, true} {
			name := fmt.Sprintf("leader stops, stale %v", stale)
			if crash {
				name = fmt.Sprintf("leader dies, stale %v", stale)
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				e := newTestEnv(t)
				app := e.newApp(events.ModeToken)
				pause, paused, resume := pauseRelease()
				defer resume() // also when the test fails first
				if crash {
					pause = nil // a dead holder releases nothing
				}
				h1, h2 := e.twoHolders(app, pause)
				cur := uint64(1)
				if stale {
					if err := h1.h.Refresh(context.Background(), app.AppID); err != nil {
						t.Fatal(err)
					}
					cur = 2
				}
				wxhubtest.Eventually(t, 5*time.Second, "h2 sees the current version", func() bool { return h2.h.Status()[0].Version == cur })
				before := e.fetches(app.AppID)

				if crash {
					h1.kill(t) // its lease stays until it lapses
				} else {
					h1.cancel()
					waitClosed(t, paused, "h1 to stop")
				}
				e.report(app.AppID, 1, 200)
				wxhubtest.Eventually(t, 10*time.Second, "h2 receives the 200 reports", func() bool {
					return decisions(app.AppID)[decisionStandby] >= 200
				})
				if h2.leader(app.AppID) {
					t.Fatal("h2 led before the reports reached it: the test shows nothing")
				}
				resume()
				h2.waitLeads(t)
				if !stale {
					if ev := waitRefreshed(t, e, app.AppID, 2); ev.Reason != events.ReasonInvalidated || ev.Holder != "h2" {
						t.Errorf("version 2: reason %q by %q, want invalidated by h2", ev.Reason, ev.Holder)
					}
				}
				h2.waitEvals(t, 5)
				want := int64(1)
				if stale {
					want = 0
				}
				if got := e.fetches(app.AppID) - before; got != want {
					t.Errorf("fetches after the handover = %d, want %d", got, want)
				}
				d := decisions(app.AppID)
				if stale && d[decisionStale] != 200 || !stale && (d[decisionAccepted] != 1 || d[decisionDuplicate] != 199) {
					t.Errorf("decisions = %v, want 200 stale, or 1 accepted and 199 duplicate", d)
				}
			})
		}
	}
}

// A standby keeps reports for two lease TTLs: the term it may begin judges
// those of the handover, not older ones, which reached a leader that
// judged them.
func TestStandbyKeepsOnlyTheHandoversReports(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	h, err := New(e.config("h1", app))
	if err != nil {
		t.Fatal(err)
	}
	a := h.apps[app.AppID]
	ttl := h.cfg.LeaseTTL
	now := time.Now()
	for _, r := range []struct {
		version uint64
		at      time.Time
	}{
		{1, now.Add(-5 * ttl)}, // judged by a leader long ago
		{2, now.Add(-4 * ttl)}, // an earlier burst for version 2
		{2, now.Add(-ttl)},
		{2, now},
	} {
		if a.receiveReport(r.version, r.at) {
			t.Fatal("a holder that never led took a report as the leader's")
		}
	}
	a.mu.Lock()
	a.dropReportsLocked(now) // as a new term begins
	a.mu.Unlock()
	if got := a.takeReports(); len(got) != 1 || got[2] != 2 {
		t.Errorf("reports carried into the term = %v, want version 2's last burst of 2", got)
	}
}

// A leader told to stop while its WeChat call is under way (WeChat issued
// the token; its answer is on the way) waits for the answer and stores the
// token before it releases the lease: the next leader adopts it, no second
// fetch, and the token it serves still works 6 minutes later. Dropping the
// answer would leave a token in wx_tokens that WeChat retires 5 minutes
// after that call, and cost a second fetch.
func TestStopDuringFetchStoresTheToken(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	h1, h2 := e.twoHolders(app, nil)
	answered, release := e.holdAnswer(wechatsim.PathToken)
	e.clock.Advance(2 * time.Hour) // version 1 expired: h1 refreshes
	waitClosed(t, answered, "WeChat to answer h1's refresh")
	h1.cancel() // SIGTERM while WeChat's answer is on its way
	release()
	h1.stop(t)
	h2.waitLeads(t)
	h2.waitEvals(t, 3)
	if rec, _ := e.record(app.AppID); rec.Version != 2 || rec.Holder != "h1" {
		t.Errorf("wx_tokens holds version %d by %s, want version 2 by h1 (the refresh under way at the stop)", rec.Version, rec.Holder)
	}
	if n := e.fetches(app.AppID); n != 2 {
		t.Errorf("WeChat token calls = %d, want 2 (startup, the refresh under way at the stop)", n)
	}
	assertServedTokenLivesNoFetch(t, e, h2, app.AppID, 2)
}

// The manual refresh limit (one per 30 s per app) holds across a failover,
// as the report limit does: the new leader reads from the stored record
// that its token is a manual refresh's, and when it was fetched.
func TestManualRefreshLimitSurvivesFailover(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	ctx := context.Background()
	h1, h2 := e.twoHolders(app, nil)
	if err := h1.h.Refresh(ctx, app.AppID); err != nil {
		t.Fatal(err)
	}
	wxhubtest.Eventually(t, 5*time.Second, "h2 sees version 2", func() bool { return h2.h.Status()[0].Version == 2 })
	h1.stop(t)
	h2.waitLeads(t)
	err := h2.h.Refresh(ctx, app.AppID)
	var re *RefusedError
	if !errors.Is(err, ErrRateLimited) || !errors.As(err, &re) || re.Until.IsZero() {
		t.Fatalf("manual refresh on the new leader right after one on the old: %v, want rate_limited with its end", err)
	}
	if n := e.fetches(app.AppID); n != 2 {
		t.Errorf("WeChat token calls = %d, want 2", n)
	}
}

// A stop waits for the write of a fetched token, but not for ever: a write
// that NATS keeps refusing while the lease is still renewed is given up
// after the call's bound plus a lease TTL, and token.refresh_failed says
// the fetched token is lost.
func TestStopGivesUpAWriteThatNeverLands(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	fk := &faultyKV{err: errTemporarilyUnavailable, key: app.AppID}
	fk.left.Store(1 << 40)
	writing := make(chan struct{})
	var once sync.Once
	h1 := e.start(e.config("h1", app), func(h *Holder) {
		h.hooks.wrapKV = wrapBucket(events.BucketTokens, &fk.KeyValue, fk)
		h.hooks.beforeWrite = func(string) {
			if fk.armed.Load() {
				once.Do(func() { close(writing) })
			}
		}
	})
	waitRefreshed(t, e, app.AppID, 1)
	fk.armed.Store(true)
	e.clock.Advance(2 * time.Hour) // a scheduled refresh, whose write never lands
	waitClosed(t, writing, "the refresh's write")

	stopped := time.Now()
	h1.cancel()
	select {
	case <-h1.done:
		h1.done <- nil
	case <-time.After(20 * time.Second):
		t.Fatal("the holder did not stop: it waits for a write that never lands")
	}
	bound := h1.h.fetchTimeout + h1.h.cfg.LeaseTTL
	if took := time.Since(stopped); took < bound || took > bound+10*time.Second {
		t.Errorf("the stop took %v, want the bound %v (plus the event's publish)", took, bound)
	}
	waitEvent(t, e.events, events.SubjectTokenRefreshFailed, app.AppID, 10*time.Second, func(ev events.TokenRefreshFailed) bool {
		return strings.Contains(ev.ErrMsg, "could not be stored")
	})
}

// A manual refresh cut because the leader lost its lease during the
// WeChat call (the lease was removed, as when NATS lost it) is answered
// not_leading, "ask again", not "refresh failed: context canceled";
// also when the same holder took the free lease again before the cut
// call came back (a new term: the cut one still ended).
func TestManualRefreshCutByALostLeaseIsAnsweredNotLeading(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name       string
		leadsAgain bool
	}{
		{"answered after the step-down", false},
		{"answered after the holder leads again", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			app := e.newApp(events.ModeToken)
			var setup func(*Holder)
			if tt.leadsAgain {
				setup = func(h *Holder) {
					again := make(chan struct{}) // closed when a second term begins
					terms := 0
					announce := h.hooks.leadership
					h.hooks.leadership = func(id string, leader bool) {
						announce(id, leader)
						if leader {
							if terms++; terms == 2 {
								close(again)
							}
						}
					}
					h.hooks.fetched = func(_ string, forced bool) {
						if !forced {
							return // the first term's scheduled fetch
						}
						select { // the cut call's answer waits for the next term
						case <-again:
						case <-time.After(10 * time.Second):
							t.Error("the holder did not lead again after its lease was removed")
						}
					}
				}
			}
			h1 := e.start(e.config("h1", app), setup)
			waitRefreshed(t, e, app.AppID, 1)
			answered, _ := e.holdAnswer(wechatsim.PathToken) // never released: the call waits until cut
			replies := make(chan events.TokenRefreshReply, 1)
			go func() { replies <- e.askRefresh(app.AppID, nil) }()
			waitClosed(t, answered, "WeChat to answer the manual refresh")
			leases, err := e.nats.JS.KeyValue(context.Background(), events.BucketLeases)
			if err != nil {
				t.Fatal(err)
			}
			if err := leases.Delete(context.Background(), app.AppID); err != nil {
				t.Fatal(err)
			}
			var reply events.TokenRefreshReply
			select {
			case reply = <-replies:
			case <-time.After(15 * time.Second):
				t.Fatal("no answer to the manual refresh")
			}
			if reply.Refused != LockoutNotLeading || strings.Contains(reply.Error, "context canceled") || !strings.Contains(reply.Error, "ask again") {
				t.Fatalf("answer %+v, want not_leading, ask again", reply)
			}
			h1.stop(t)
		})
	}
}
