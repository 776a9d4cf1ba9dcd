package holder

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// leases is the wx_leases bucket.
func (e *testEnv) leases(t *testing.T) jetstream.KeyValue {
	t.Helper()
	kv, err := e.nats.JS.KeyValue(context.Background(), events.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// takeLease puts another holder's lease on appid in wx_leases and waits
// until r steps down (its renewal finds the revision moved).
func (e *testEnv) takeLease(t *testing.T, r *running, appid string) {
	t.Helper()
	if _, err := e.leases(t).Put(context.Background(), appid, []byte("other")); err != nil {
		t.Fatal(err)
	}
	for stepped := false; !stepped; {
		select {
		case l := <-r.leaderCh: // its becoming leader first
			stepped = !l
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not step down", r.h.cfg.ID)
		}
	}
}

// freeLease deletes the other holder's lease on appid and waits until r,
// a standby watching the key, leads again.
func (e *testEnv) freeLease(t *testing.T, r *running, appid string) {
	t.Helper()
	if err := e.leases(t).Delete(context.Background(), appid); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-r.leaderCh:
		if !l {
			t.Fatalf("%s stepped down again instead of leading", r.h.cfg.ID)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not lead once the lease was free", r.h.cfg.ID)
	}
}

// setQuotaReads turns wx_quota's reads off or on for real: a KV Get is a
// direct get on the bucket's stream, and a stream that does not allow
// direct gets answers none (no responders). Writes and the stored
// records are untouched.
func (e *testEnv) setQuotaReads(t *testing.T, on bool) {
	t.Helper()
	ctx := context.Background()
	s, err := e.nats.JS.Stream(ctx, "KV_"+events.BucketQuota)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.AllowDirect = on
	if _, err := e.nats.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("wx_quota's stream, allow direct %v: %v", on, err)
	}
}

// quotaReadFailures counts the holder's logged failures to read the
// day's counts from wx_quota.
func (e *testEnv) quotaReadFailures() int {
	return strings.Count(e.logs.String(), "reading the China day's counts from wx_quota failed; retrying")
}

// A term that starts while wx_quota cannot be read shows 0 for the day
// (view and gauge), and retries the read on each loop of the term: once
// the bucket answers again, the same term shows the day's stored count
// (1700, not 0 and not the previous term's), with no new term and no
// fetch.
func TestTermStartsItsQuotaViewOnceWxQuotaIsReadable(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	r := e.start(e.config("h1", app), nil)
	waitRefreshed(t, e, app.AppID, 1)
	r.waitEvals(t, 1)
	if v, ok := gatheredGauge(t, "wxhub_token_quota_used", app.AppID); !ok || v != 1 {
		t.Fatalf("first term: wxhub_token_quota_used %v (exported %v), want 1", v, ok)
	}

	e.takeLease(t, r, app.AppID)
	e.setQuotaReads(t, false)
	ctx := context.Background()
	if _, err := e.quota.Put(ctx, events.QuotaKey(app.AppID, e.clock.Now()), []byte("1700")); err != nil {
		t.Fatal(err) // the day's count, as other holders would have left it
	}
	failed := e.quotaReadFailures()
	e.freeLease(t, r, app.AppID)
	wxhubtest.Eventually(t, 10*time.Second, "two failed reads of wx_quota in the new term", func() bool {
		return e.quotaReadFailures() >= failed+2
	})
	if v, ok := gatheredGauge(t, "wxhub_token_quota_used", app.AppID); !ok || v != 0 {
		t.Errorf("wx_quota unreadable: wxhub_token_quota_used %v (exported %v), want 0", v, ok)
	}
	if st := r.h.Status()[0]; !st.Leader || st.FetchesToday != 0 {
		t.Errorf("wx_quota unreadable: leader %v, FetchesToday %d, want the leader showing 0", st.Leader, st.FetchesToday)
	}

	e.setQuotaReads(t, true)
	wxhubtest.Eventually(t, 10*time.Second, "the term's view of the stored count", func() bool {
		return r.h.Status()[0].FetchesToday == 1700
	})
	if v, ok := gatheredGauge(t, "wxhub_token_quota_used", app.AppID); !ok || v != 1700 {
		t.Errorf("wx_quota readable again: wxhub_token_quota_used %v (exported %v), want 1700", v, ok)
	}
	select {
	case l := <-r.leaderCh:
		t.Errorf("leadership changed (leader %v): the count came from a new term", l)
	default:
	}
	if n := e.fetches(app.AppID); n != 1 {
		t.Errorf("WeChat calls = %d, want 1: the stored token was adopted", n)
	}
}

// wxhub_token_quota_used is the leader's alone: however a term ends (the
// lease taken by another holder, or the holder stopped; while the term
// waits, or while its fetch is being counted in wx_quota), the holder no
// longer exports it.
func TestQuotaGaugeDroppedOnEveryWayOutOfATerm(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		stop     bool // the holder stops; else another takes the lease
		midFetch bool // the term ends while its fetch is counted
	}{
		{"lease taken while waiting", false, false},
		{"lease taken while counting a fetch", false, true},
		{"holder stopped while waiting", true, false},
		{"holder stopped while counting a fetch", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			app := e.newApp(events.ModeToken)
			gk := &gatedKV{blocked: make(chan struct{}, 1), done: make(chan struct{}), gate: make(chan struct{})}
			r := e.start(e.config("h1", app), func(h *Holder) {
				h.hooks.wrapKV = wrapBucket(events.BucketQuota, &gk.KeyValue, gk)
			})
			waitRefreshed(t, e, app.AppID, 1)
			r.waitEvals(t, 1)
			if _, ok := gatheredGauge(t, "wxhub_token_quota_used", app.AppID); !ok {
				t.Fatal("the leader does not export wxhub_token_quota_used")
			}
			if tc.midFetch {
				gk.armed.Store(true)
				e.clock.Advance(2 * time.Hour) // v1 expired: a refresh is due
				<-gk.blocked                   // its count waits
			}
			if tc.stop {
				r.cancel()
			} else {
				e.takeLease(t, r, app.AppID)
			}
			if tc.midFetch {
				close(gk.gate) // the count lands after the term ended
				<-gk.done
			}
			if tc.stop {
				r.stop(t)
				if v, ok := gatheredGauge(t, "wxhub_token_quota_used", app.AppID); ok {
					t.Errorf("a stopped holder exports wxhub_token_quota_used = %v", v)
				}
			} else {
				wxhubtest.Eventually(t, 5*time.Second, "h1 drops wxhub_token_quota_used", func() bool {
					_, ok := gatheredGauge(t, "wxhub_token_quota_used", app.AppID)
					return !ok
				})
			}
			if n := e.fetches(app.AppID); n != 1 {
				t.Errorf("WeChat calls = %d, want 1: no call after the term ended", n)
			}
		})
	}
}
