package holder

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// markWatchKV refuses every Update of key (10008) while refuse is set,
// counting the refusals, and notes, for the first stored record of key
// carrying invalidated_at, how many WeChat token calls had been made by
// then (calls, read at the write).
type markWatchKV struct {
	jetstream.KeyValue
	key     string
	refuse  atomic.Bool
	refused atomic.Int64
	calls   func() int64
	marked  chan int64 // capacity 1
}

func (f *markWatchKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if key != f.key {
		return f.KeyValue.Update(ctx, key, value, rev)
	}
	if f.refuse.Load() {
		f.refused.Add(1)
		return 0, errTemporarilyUnavailable
	}
	newRev, err := f.KeyValue.Update(ctx, key, value, rev)
	var rec events.TokenRecord
	if err == nil && json.Unmarshal(value, &rec) == nil && !rec.InvalidatedAt.IsZero() {
		select {
		case f.marked <- f.calls():
		default:
		}
	}
	return newRev, err
}

// A leader that accepted a report while WeChat failed and whose term
// ended (the lease lost) before NATS stored the pending refresh on the
// record (invalidated_at), and that then leads again, with no other
// holder in between, writes the mark at the start of its new term, before
// its next WeChat call: it is the only record of the accepted report
// outside its memory. WeChat recovered, the report gets its one refresh
// (reason invalidated), from h1 when it goes on leading, from h2 when h1
// dies in its new term before its next call (its retry waits an hour);
// reports for an older version get none.
func TestPendingRefreshSurvivesALostTermAndReLead(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// retry: the wait after h1's failed call (40164: the
		// configuration retry), so its next call.
		retry time.Duration
		// die: h1 dies in its new term once the mark is stored, h2
		// leads next.
		die bool
	}{
		{"h1 goes on leading", 3 * time.Second, false},
		{"h1 dies before its next call", time.Hour, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			app := e.newApp(events.ModeToken)
			fk := &markWatchKV{key: app.AppID, calls: func() int64 { return e.fetches(app.AppID) }, marked: make(chan int64, 1)}
			cfg := e.config("h1", app)
			cfg.ConfigRetryInterval = tc.retry
			h1 := e.start(cfg, func(h *Holder) {
				h.hooks.wrapKV = wrapBucket(events.BucketTokens, &fk.KeyValue, fk)
			})
			waitRefreshed(t, e, app.AppID, 1)
			e.clock.Advance(2 * time.Hour) // version 1 expired: version 2, scheduled
			waitRefreshed(t, e, app.AppID, 2)

			// A report against version 2 is accepted; its refresh fails
			// and NATS refuses every write of the mark until h1's term
			// ends: the lease is lost.
			if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathToken, ErrCode: wechat.CodeIPNotWhitelisted, Count: 1}); err != nil {
				t.Fatal(err)
			}
			fk.refuse.Store(true)
			e.report(app.AppID, 2, 20)
			waitEvent(t, e.events, events.SubjectTokenRefreshFailed, app.AppID, 10*time.Second,
				func(ev events.TokenRefreshFailed) bool { return ev.ErrCode == wechat.CodeIPNotWhitelisted })
			wxhubtest.Eventually(t, 10*time.Second, "the mark's write retried", func() bool { return fk.refused.Load() >= 2 })
			e.takeLease(t, h1, app.AppID)
			fk.refuse.Store(false)        // the term's context is done: no attempt of it is sent now
			calls := e.fetches(app.AppID) // startup, scheduled, the failed one for the report
			if calls != 3 {
				t.Fatalf("WeChat token calls = %d, want 3", calls)
			}
			if rec, _ := e.record(app.AppID); rec.Version != 2 || !rec.InvalidatedAt.IsZero() {
				t.Fatalf("stored: version %d, invalidated_at %v; want version 2 without the mark", rec.Version, rec.InvalidatedAt)
			}
			before := decisions(app.AppID)
			e.report(app.AppID, 1, 5) // stale, while nobody leads
			e.report(app.AppID, 2, 5) // the accepted report's version: duplicates

			e.freeLease(t, h1, app.AppID) // h1 leads again
			// At most one evaluation is term 1's last (its loop ends on
			// the term's end after it); two are the new term's.
			h1.waitEvals(t, 3)
			select {
			case n := <-fk.marked:
				if n != calls {
					t.Errorf("the mark was stored after %d WeChat token calls, want %d", n, calls)
				}
			default:
				t.Errorf("h1, leading again, evaluated without storing the pending refresh on the record: until its next WeChat call (in %v), a crash loses the report's refresh", tc.retry)
			}
			e.report(app.AppID, 1, 5) // stale, judged by the leader
			wxhubtest.Eventually(t, 10*time.Second, "the stale reports judged", func() bool {
				return decisions(app.AppID)[decisionStale] >= before[decisionStale]+10
			})
			leader := h1
			if tc.die {
				if n := e.fetches(app.AppID); n != calls {
					t.Fatalf("WeChat token calls = %d, want %d: h1 called before it died", n, calls)
				}
				h1.kill(t)
				leader = e.start(e.config("h2", app), nil)
				leader.waitLeads(t)
			}
			ev := waitRefreshed(t, e, app.AppID, 3)
			if ev.Reason != events.ReasonInvalidated || ev.Holder != leader.h.ID() {
				t.Errorf("version 3: reason %q by %q, want invalidated by %s", ev.Reason, ev.Holder, leader.h.ID())
			}
			leader.waitEvals(t, 5)
			if n := e.fetches(app.AppID); n != calls+1 {
				t.Errorf("WeChat token calls = %d, want %d: the report's refresh made once", n, calls+1)
			}
			if rec, _ := e.record(app.AppID); rec.Version != 3 || !rec.InvalidatedAt.IsZero() {
				t.Errorf("stored: version %d, invalidated_at %v; want version 3 without the mark", rec.Version, rec.InvalidatedAt)
			}
			if d := decisions(app.AppID); d[decisionAccepted] != 1 {
				t.Errorf("decisions %v, want one accepted report", d)
			}
		})
	}
}
