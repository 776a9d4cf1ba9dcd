package holder

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// What the leader writes on the stored record for the holder that leads
// next (a pending refresh: invalidated_at; an announced conflict:
// conflict_at) survives NATS refusing the first writes and the leader
// then crashing: the write is retried while the leader leads, so the next
// leader makes the pending refresh, once, and does not announce the
// conflict again. The next leader is started after the reports, so the
// record is all it knows of them. Once h1's fetch for the report has
// failed (40164: no WeChat call for an hour), only a retry of the mark's
// write can store it before the crash.
func TestMarksSurviveRefusedWritesAndACrash(t *testing.T) {
	t.Parallel()
	faults := []struct {
		name    string
		err     error
		applied bool // the write landed, its answer lost
		n       int64
	}{
		{"10008 x3", errTemporarilyUnavailable, false, 3},
		{"no responders x3", nats.ErrNoResponders, false, 3},
		{"timeout x2", context.DeadlineExceeded, false, 2},
		{"timeout after it landed", context.DeadlineExceeded, true, 1},
	}
	for _, mark := range []string{"invalidated_at", "conflict_at"} {
		for _, f := range faults {
			t.Run(mark+": "+f.name, func(t *testing.T) {
				t.Parallel()
				e := newTestEnv(t)
				app := e.newApp(events.ModeToken)
				fk := &faultyKV{err: f.err, applied: f.applied, key: app.AppID}
				fk.left.Store(f.n)
				cfg := e.config("h1", app)
				cfg.ConfigRetryInterval = time.Hour
				h1 := e.start(cfg, func(h *Holder) {
					h.hooks.wrapKV = wrapBucket(events.BucketTokens, &fk.KeyValue, fk)
				})
				waitRefreshed(t, e, app.AppID, 1)
				if mark == "invalidated_at" {
					if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathToken, ErrCode: wechat.CodeIPNotWhitelisted, Count: 1}); err != nil {
						t.Fatal(err)
					}
					fk.armed.Store(true) // the next write is the mark's
					e.report(app.AppID, 1, 20)
					waitEvent(t, e.events, events.SubjectTokenRefreshFailed, app.AppID, 10*time.Second,
						func(ev events.TokenRefreshFailed) bool { return ev.ErrCode == wechat.CodeIPNotWhitelisted })
				} else {
					e.report(app.AppID, 1, 20)
					waitRefreshed(t, e, app.AppID, 2)
					fk.armed.Store(true) // the next write is the mark's
					e.clock.Advance(time.Minute)
					e.report(app.AppID, 2, 20) // version 2 was fetched for a report a minute ago: a conflict
					waitEvent(t, e.events, events.SubjectTokenConflict, app.AppID, 10*time.Second,
						func(events.TokenConflict) bool { return true })
				}
				marked := func() bool {
					rec, _ := e.record(app.AppID)
					if mark == "invalidated_at" {
						return rec.Version == 1 && !rec.InvalidatedAt.IsZero()
					}
					return rec.Version == 2 && !rec.ConflictAt.IsZero()
				}
				wxhubtest.Eventually(t, 10*time.Second, mark+" stored after "+f.name+" (a crash now loses it)", marked)
				if fk.left.Load() > 0 {
					t.Errorf("%d faults not consumed", fk.left.Load())
				}
				calls := e.fetches(app.AppID)

				h1.kill(t)
				h2 := e.start(e.config("h2", app), nil)
				h2.waitLeads(t)
				if mark == "invalidated_at" {
					ev := waitRefreshed(t, e, app.AppID, 2)
					if ev.Reason != events.ReasonInvalidated || ev.Holder != "h2" {
						t.Errorf("version 2: reason %q by %q, want invalidated by h2", ev.Reason, ev.Holder)
					}
					h2.waitEvals(t, 5)
					if n := e.fetches(app.AppID); n != calls+1 {
						t.Errorf("WeChat token calls = %d, want %d: h2 makes the pending refresh once", n, calls+1)
					}
					if rec, _ := e.record(app.AppID); rec.Version != 2 || !rec.InvalidatedAt.IsZero() {
						t.Errorf("stored: version %d, invalidated_at %v; want version 2 with none", rec.Version, rec.InvalidatedAt)
					}
					return
				}
				before := decisions(app.AppID)[decisionConflict]
				e.report(app.AppID, 2, 20)
				wxhubtest.Eventually(t, 10*time.Second, "h2 judges the reports", func() bool {
					return decisions(app.AppID)[decisionConflict] >= before+20
				})
				h2.waitEvals(t, 2)
				if n := conflictsStored(t, e); n != 1 {
					t.Errorf("token.conflict events stored = %d, want 1 (h1's): h2 announced it again", n)
				}
				if n := e.fetches(app.AppID); n != calls {
					t.Errorf("WeChat token calls = %d, want %d", n, calls)
				}
			})
		}
	}
}

// newerTokenKV refuses the first Update of key (10008) once armed; just
// before the second (the mark's retry) another writer stores a newer
// token, so that retry loses its compare-and-swap.
type newerTokenKV struct {
	jetstream.KeyValue
	armed   atomic.Bool
	calls   atomic.Int64
	key     string
	another func()
}

func (f *newerTokenKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if f.armed.Load() && key == f.key {
		switch f.calls.Add(1) {
		case 1:
			return 0, errTemporarilyUnavailable
		case 2:
			f.another()
		}
	}
	return f.KeyValue.Update(ctx, key, value, rev)
}

// A retried mark is about one token: when a newer token is stored while
// the write of a pending refresh's mark is retried (its compare-and-swap
// then fails), the retry re-reads the record and stops. The mark is
// never written onto the newer token, which needs no refresh: neither
// the leader nor the holder that leads next after a crash makes one.
func TestRetriedMarkNeverLandsOnANewerToken(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	fk := &newerTokenKV{key: app.AppID}
	fk.another = func() {
		rec, rev := e.record(app.AppID)
		rec.Version, rec.Holder, rec.AccessToken = 7, "other", "other-token"
		rec.FetchedAt, rec.ExpiresAt = e.clock.Now(), e.clock.Now().Add(2*time.Hour)
		rec.InvalidatedAt = time.Time{}
		data, _ := json.Marshal(rec)
		if _, err := e.tokens.Update(context.Background(), app.AppID, data, rev); err != nil {
			t.Error(err)
		}
	}
	cfg := e.config("h1", app)
	cfg.ConfigRetryInterval = time.Hour
	h1 := e.start(cfg, func(h *Holder) {
		h.hooks.wrapKV = wrapBucket(events.BucketTokens, &fk.KeyValue, fk)
	})
	waitRefreshed(t, e, app.AppID, 1)
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathToken, ErrCode: wechat.CodeIPNotWhitelisted, Count: 1}); err != nil {
		t.Fatal(err)
	}
	fk.armed.Store(true)
	e.report(app.AppID, 1, 20)
	wxhubtest.Eventually(t, 10*time.Second, "the mark's retry", func() bool { return fk.calls.Load() >= 2 })
	wxhubtest.Eventually(t, 10*time.Second, "h1 serving the newer token", func() bool { return h1.h.Status()[0].Version == 7 })
	h1.waitEvals(t, 5)
	if n := fk.calls.Load(); n != 2 {
		t.Errorf("%d writes of the mark, want 2 (the refused one, the retry that lost to the newer token)", n)
	}
	if rec, _ := e.record(app.AppID); rec.Version != 7 || rec.Holder != "other" || !rec.InvalidatedAt.IsZero() {
		t.Fatalf("stored: version %d by %q, invalidated_at %v; want the other writer's version 7 without the mark",
			rec.Version, rec.Holder, rec.InvalidatedAt)
	}
	calls := e.fetches(app.AppID) // startup, the failed refresh for the report
	if calls != 2 {
		t.Errorf("WeChat token calls = %d, want 2", calls)
	}

	h1.kill(t)
	h2 := e.start(e.config("h2", app), nil)
	h2.waitLeads(t)
	h2.waitEvals(t, 5)
	if n := e.fetches(app.AppID); n != calls {
		t.Errorf("WeChat token calls = %d, want %d: the newer token was refreshed for the old report", n, calls)
	}
	if rec, _ := e.record(app.AppID); rec.Version != 7 || !rec.InvalidatedAt.IsZero() {
		t.Errorf("stored: version %d, invalidated_at %v; want version 7 without the mark", rec.Version, rec.InvalidatedAt)
	}
}
