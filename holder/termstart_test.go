package holder

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
)

// flakyReads makes reads of a bucket fail with JetStream's 10008, as
// during a stream leader election: the next getFails Gets and watchFails
// WatchAlls, or every Get while getDown is set. gets receives a value on
// every Get (dropped when full).
type flakyReads struct {
	jetstream.KeyValue
	getFails   atomic.Int64
	watchFails atomic.Int64
	getDown    atomic.Bool
	gets       chan struct{}
}

func (f *flakyReads) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if f.gets != nil {
		select {
		case f.gets <- struct{}{}:
		default:
		}
	}
	if f.getDown.Load() || f.getFails.Add(-1) >= 0 {
		return nil, errTemporarilyUnavailable
	}
	return f.KeyValue.Get(ctx, key)
}

func (f *flakyReads) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	if f.watchFails.Add(-1) >= 0 {
		return nil, errTemporarilyUnavailable
	}
	return f.KeyValue.WatchAll(ctx, opts...)
}

func wrapTokens(fk *flakyReads) func(*Holder) {
	return func(h *Holder) {
		h.hooks.wrapKV = wrapBucket(events.BucketTokens, &fk.KeyValue, fk)
	}
}

// assertServedTokenLives checks, 6 minutes later on the fake clock (past
// WeChat's 5 minutes of grace for a retired token), that the token in
// wx_tokens and in the leader's memory still works at WeChat.
func assertServedTokenLives(t *testing.T, e *testEnv, r *running, appid string) {
	t.Helper()
	e.clock.Advance(6 * time.Minute)
	r.waitEvals(t, 3)
	rec, _ := e.record(appid)
	if st := r.h.Status()[0]; st.Version != rec.Version {
		t.Errorf("leader serves version %d, wx_tokens holds %d", st.Version, rec.Version)
	}
	if _, err := e.wc.CallbackIP(context.Background(), rec.AccessToken); err != nil {
		t.Errorf("the stored token (version %d) is dead at WeChat 6 minutes later: %v", rec.Version, err)
	}
}

// assertServedTokenLivesNoFetch is assertServedTokenLives, then checks
// that WeChat still counts n token calls for appid: the 6 minutes brought
// no fetch.
func assertServedTokenLivesNoFetch(t *testing.T, e *testEnv, r *running, appid string, n int64) {
	t.Helper()
	assertServedTokenLives(t, e, r, appid)
	if got := e.fetches(appid); got != n {
		t.Errorf("WeChat token calls = %d after 6 minutes, want %d", got, n)
	}
}

// A new leader whose first reads of wx_tokens fail (10008: Get at the start
// of its term and the holder's watch) waits for the read before it judges
// the token: it adopts the fresh stored one, with no WeChat call, and the
// token it serves still works 6 minutes later.
func TestTermStartReadFailureAdoptsStoredToken(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	r1 := e.start(e.config("h1", app), nil)
	waitRefreshed(t, e, app.AppID, 1)
	r1.stop(t) // releases the lease
	stored, _ := e.record(app.AppID)

	fk := &flakyReads{}
	fk.getFails.Store(3)
	fk.watchFails.Store(1)
	r2 := e.start(e.config("h2", app), wrapTokens(fk))
	if !<-r2.leaderCh {
		t.Fatal("h2 did not become leader")
	}
	r2.waitEvals(t, 3)
	if n := fk.getFails.Load(); n >= 0 {
		t.Fatalf("%d Get faults not consumed", n+1)
	}
	if n := e.fetches(app.AppID); n != 1 {
		t.Fatalf("WeChat token calls = %d, want 1: the new leader fetched over the stored token it could not read", n)
	}
	if st := r2.h.Status()[0]; st.Version != stored.Version || !r2.h.Ready() {
		t.Fatalf("h2 serves version %d (ready %v), want the stored version %d", st.Version, r2.h.Ready(), stored.Version)
	}
	assertServedTokenLivesNoFetch(t, e, r2, app.AppID, 1)
}

// While wx_tokens cannot be read, the leader retries within its term and
// never fetches; losing the lease ends the attempt cleanly, and the next
// term reads again and adopts the stored token.
func TestTermStartReadRetriesWithinTheTerm(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	r1 := e.start(e.config("h1", app), nil)
	waitRefreshed(t, e, app.AppID, 1)
	r1.stop(t)

	fk := &flakyReads{gets: make(chan struct{}, 1)}
	fk.getDown.Store(true)
	r2 := e.start(e.config("h2", app), wrapTokens(fk))
	if !<-r2.leaderCh {
		t.Fatal("h2 did not become leader")
	}
	waitGets := func(n int) {
		t.Helper()
		for range n {
			select {
			case <-fk.gets:
			case <-time.After(10 * time.Second):
				t.Fatal("the leader stopped reading wx_tokens")
			}
		}
	}
	waitGets(3)
	if n := r2.evals.Load(); n != 0 {
		t.Fatalf("%d evaluations before wx_tokens was read", n)
	}

	// The lease is removed (as by an expiry): h2 steps down, leads again.
	leases, err := e.nats.JS.KeyValue(context.Background(), events.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	if err := leases.Delete(context.Background(), app.AppID); err != nil {
		t.Fatal(err)
	}
	for _, want := range []bool{false, true} {
		select {
		case got := <-r2.leaderCh:
			if got != want {
				t.Fatalf("leadership change %v, want %v", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no leadership change to %v", want)
		}
	}
	waitGets(2)
	if n := r2.evals.Load(); n != 0 {
		t.Fatalf("%d evaluations before wx_tokens was read", n)
	}

	fk.getDown.Store(false)
	r2.waitEvals(t, 3)
	if n := e.fetches(app.AppID); n != 1 {
		t.Fatalf("WeChat token calls = %d, want 1", n)
	}
	assertServedTokenLives(t, e, r2, app.AppID)
}

// raceWrite makes another writer store a record for appid while the holder
// fetches (after it read the revision, before its write): a token really
// fetched from WeChat just before the holder's call, with fetchedAt as its
// writer's clock said.
func raceWrite(t *testing.T, e *testEnv, appid, secret string, fetchedAt func() time.Time) (armed *atomic.Bool, setup func(*Holder)) {
	armed = &atomic.Bool{}
	var once sync.Once
	return armed, func(h *Holder) {
		h.hooks.fetching = func(string) {
			if !armed.Load() {
				return
			}
			once.Do(func() {
				tok, err := e.wc.Token(context.Background(), appid, secret)
				if err != nil {
					t.Error(err)
					return
				}
				rec, rev := e.record(appid)
				rec.Version, rec.Holder, rec.AccessToken = 7, "other", tok.Token
				rec.FetchedAt = fetchedAt()
				rec.ExpiresAt = rec.FetchedAt.Add(tok.ExpiresIn)
				data, _ := json.Marshal(rec)
				if _, err := e.tokens.Update(context.Background(), appid, data, rev); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

// A record stored during our refresh whose token was fetched before ours
// began was retired by our fetch: ours replaces it (compare-and-swap on its
// revision, a higher version), with no second fetch, and still works 6
// minutes later.
func TestLostRaceToOlderTokenStoresOurs(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	armed, setup := raceWrite(t, e, app.AppID, app.Secret, func() time.Time { return e.clock.Now().Add(-2 * time.Minute) })
	r := e.start(e.config("h1", app), setup)
	waitRefreshed(t, e, app.AppID, 1)
	armed.Store(true)
	e.clock.Advance(2 * time.Hour) // v1 expired: a scheduled refresh is due
	ev := waitRefreshed(t, e, app.AppID, 8)
	if ev.Holder != "h1" || ev.Reason != events.ReasonScheduled {
		t.Errorf("version 8 by %q reason %q, want h1 scheduled", ev.Holder, ev.Reason)
	}
	rec, _ := e.record(app.AppID)
	if rec.Version != 8 || rec.AccessToken != e.sim.ValidToken(app.AppID) {
		t.Fatalf("stored version %d by %s; it is WeChat's latest token: %v", rec.Version, rec.Holder, rec.AccessToken == e.sim.ValidToken(app.AppID))
	}
	// h1's startup, the other writer's, h1's refresh: no further fetch.
	if n := e.fetches(app.AppID); n != 3 {
		t.Errorf("WeChat token calls = %d, want 3", n)
	}
	for _, f := range eventsOf[events.TokenRefreshFailed](e.events, events.SubjectTokenRefreshFailed, app.AppID) {
		t.Errorf("unexpected token.refresh_failed: %s", f.ErrMsg)
	}
	assertServedTokenLivesNoFetch(t, e, r, app.AppID, 3)
}

// A record stored during our refresh whose fetch is too close to ours to
// tell which WeChat issued last is kept (ours discarded), but may be the
// one our fetch retired: it is refreshed once, at once, and the token
// served still works 6 minutes later.
func TestLostRaceOfUnknownOrderRefreshesOnce(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	armed, setup := raceWrite(t, e, app.AppID, app.Secret, e.clock.Now)
	r := e.start(e.config("h1", app), setup)
	waitRefreshed(t, e, app.AppID, 1)
	armed.Store(true)
	e.clock.Advance(2 * time.Hour)
	waitEvent(t, e.events, events.SubjectTokenRefreshFailed, app.AppID, 10*time.Second, func(ev events.TokenRefreshFailed) bool {
		return strings.Contains(ev.ErrMsg, "discarded") && strings.Contains(ev.ErrMsg, "refreshed at once")
	})
	ev := waitRefreshed(t, e, app.AppID, 8)
	if ev.Holder != "h1" || ev.Reason != events.ReasonScheduled {
		t.Errorf("version 8 by %q reason %q, want h1 scheduled", ev.Holder, ev.Reason)
	}
	r.waitEvals(t, 3)
	// h1's startup, the other writer's, h1's discarded one, h1's refresh.
	if n := e.fetches(app.AppID); n != 4 {
		t.Errorf("WeChat token calls = %d, want 4", n)
	}
	assertServedTokenLivesNoFetch(t, e, r, app.AppID, 4)
}
