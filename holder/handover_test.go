package holder

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

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
	eventually(e.t, 5*time.Second, "h2 sees h1 lead", func() bool { return h2.h.Status()[0].LeaderID == "h1" })
	return h1, h2
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
