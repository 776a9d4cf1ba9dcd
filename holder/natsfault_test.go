package holder

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// faultyKV puts NATS faults between the holder and one bucket: while
// armed, the next Create/Update calls (of the key only, when set)
// fail with err (after doing the write when applied is set: a timeout
// that landed anyway).
type faultyKV struct {
	jetstream.KeyValue
	armed   atomic.Bool
	left    atomic.Int64
	err     error
	applied bool
	key     string
}

func (f *faultyKV) fault(key string) bool {
	return f.armed.Load() && (f.key == "" || key == f.key) && f.left.Add(-1) >= 0
}

func (f *faultyKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if f.fault(key) {
		if f.applied {
			_, _ = f.KeyValue.Create(ctx, key, value, opts...)
		}
		return 0, f.err
	}
	return f.KeyValue.Create(ctx, key, value, opts...)
}

func (f *faultyKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if f.fault(key) {
		if f.applied {
			_, _ = f.KeyValue.Update(ctx, key, value, rev)
		}
		return 0, f.err
	}
	return f.KeyValue.Update(ctx, key, value, rev)
}

// errTemporarilyUnavailable is JetStream's 10008, as a stream leader
// election answers it.
var errTemporarilyUnavailable = &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}

// A scheduled refresh whose KV write (or quota increment) fails N times
// with each kind of NATS error ends with the fetched token stored: exactly
// one WeChat call, no "configuration" stall, no second fetch, and wx_quota
// counts each call once (an increment that landed before its answer was
// lost is not counted again by the retry).
func TestFetchedTokenSurvivesNATSFaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		bucket  string
		err     error
		applied bool
		n       int64
	}{
		{"token write: 10008 x5", events.BucketTokens, errTemporarilyUnavailable, false, 5},
		{"token write: no responders x5", events.BucketTokens, nats.ErrNoResponders, false, 5},
		{"token write: timeout x5", events.BucketTokens, context.DeadlineExceeded, false, 5},
		{"token write: timeout after it landed x2", events.BucketTokens, context.DeadlineExceeded, true, 2},
		{"quota increment: 10008 x5", events.BucketQuota, errTemporarilyUnavailable, false, 5},
		{"quota increment: no responders x5", events.BucketQuota, nats.ErrNoResponders, false, 5},
		{"quota increment: timeout x5", events.BucketQuota, context.DeadlineExceeded, false, 5},
		// One fault: the retry finds the fetch counted and writes nothing.
		{"quota increment: timeout after it landed", events.BucketQuota, context.DeadlineExceeded, true, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			app := e.newApp(events.ModeToken)
			fk := &faultyKV{err: tc.err, applied: tc.applied}
			fk.left.Store(tc.n)
			r := e.start(e.config("h1", app), func(h *Holder) {
				h.hooks.wrapKV = wrapBucket(tc.bucket, &fk.KeyValue, fk)
			})
			waitRefreshed(t, e, app.AppID, 1)
			fk.armed.Store(true)
			e.clock.Advance(2 * time.Hour) // v1 expired: a scheduled refresh is due
			start := time.Now()
			ev := waitRefreshed(t, e, app.AppID, 2)
			t.Logf("stored %v after the first fault", time.Since(start).Round(time.Millisecond))
			if fk.left.Load() > 0 {
				t.Errorf("%d faults not consumed", fk.left.Load())
			}
			if got := e.fetches(app.AppID); got != 2 {
				t.Errorf("WeChat token calls = %d, want 2 (startup + one refresh)", got)
			}
			if n := e.quotaUsed(app.AppID, false); n != e.fetches(app.AppID) {
				t.Errorf("wx_quota counts %d fetches for %d WeChat token calls", n, e.fetches(app.AppID))
			}
			rec, _ := e.record(app.AppID)
			if rec.Version != 2 || rec.AccessToken != e.sim.ValidToken(app.AppID) {
				t.Errorf("stored version %d; stored token is WeChat's latest: %v", rec.Version, rec.AccessToken == e.sim.ValidToken(app.AppID))
			}
			if ev.Reason != events.ReasonScheduled {
				t.Errorf("reason %q, want scheduled", ev.Reason)
			}
			if logs := e.logs.String(); strings.Contains(logs, "configuration") {
				t.Errorf("a NATS fault was logged as a configuration problem:\n%s", logs)
			}
			if st := r.h.Status()[0]; st.LastError != "" || !st.NextAttemptAt.IsZero() {
				t.Errorf("status after the stored refresh: %+v", st)
			}
		})
	}
}

// A forced stable_token refresh whose count of forced calls fails, or
// lands and loses its answer, is counted once in both records: the retry
// counts neither the call nor the forced call again.
func TestForcedFetchCountedOnceUnderNATSFaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		err     error
		applied bool
		n       int64
	}{
		{"forced count: 10008 x3", errTemporarilyUnavailable, false, 3},
		{"forced count: timeout x3", context.DeadlineExceeded, false, 3},
		{"forced count: timeout after it landed", context.DeadlineExceeded, true, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			app := e.newApp(events.ModeStableToken)
			fk := &faultyKV{err: tc.err, applied: tc.applied, key: events.ForceQuotaKey(app.AppID, e.clock.Now())}
			fk.left.Store(tc.n)
			var forcedCalls atomic.Int64
			e.start(e.config("h1", app), func(h *Holder) {
				h.hooks.wrapKV = wrapBucket(events.BucketQuota, &fk.KeyValue, fk)
				h.hooks.fetched = func(_ string, forced bool) {
					if forced {
						forcedCalls.Add(1)
					}
				}
			})
			waitRefreshed(t, e, app.AppID, 1)
			fk.armed.Store(true)
			e.report(app.AppID, 1, 3)
			waitRefreshed(t, e, app.AppID, 2)
			if fk.left.Load() > 0 {
				t.Errorf("%d faults not consumed", fk.left.Load())
			}
			if got := e.fetches(app.AppID); got != 2 || forcedCalls.Load() != 1 {
				t.Fatalf("WeChat calls = %d (forced %d), want 2 (startup + one forced)", got, forcedCalls.Load())
			}
			if n := e.quotaUsed(app.AppID, false); n != 2 {
				t.Errorf("wx_quota counts %d calls for 2", n)
			}
			if n := e.quotaUsed(app.AppID, true); n != 1 {
				t.Errorf("wx_quota counts %d forced calls for 1", n)
			}
		})
	}
}

// blackhole is a TCP proxy to a NATS server that can be cut: after cut,
// bytes are read and dropped, in both directions, and connections stay
// open (a partition, not a close: the client notices only by timeouts).
type blackhole struct {
	ln     net.Listener
	target string
	cut    atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newBlackhole(t *testing.T, target string) *blackhole {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, target: strings.TrimPrefix(target, "nats://")}
	go b.serve()
	t.Cleanup(b.close)
	return b
}

func (b *blackhole) URL() string { return "nats://" + b.ln.Addr().String() }

func (b *blackhole) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", b.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		b.mu.Lock()
		b.conns = append(b.conns, c, s)
		b.mu.Unlock()
		go b.pipe(c, s)
		go b.pipe(s, c)
	}
}

func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !b.cut.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				_ = dst.Close()
			}
			return
		}
	}
}

func (b *blackhole) close() {
	_ = b.ln.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		_ = c.Close()
	}
}

// A leader cut off from NATS right after it started a slow WeChat call
// never reaches WeChat after its successor: its call is bounded inside its
// lease, so WeChat's newest token is the successor's.
func TestPartitionedLeaderNeverReachesWeChatAfterSuccessor(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	bh := newBlackhole(t, e.nats.URL)
	nc, err := broker.Connect(broker.ConnConfig{URL: bh.URL(), Name: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := e.config("h1", app)
	cfg.Conn = nc
	cfg.LeaseTTL = 2 * time.Second
	var armed atomic.Bool
	h1Calls := make(chan struct{}, 16)
	h1 := e.start(cfg, func(h *Holder) {
		h.hooks.fetching = func(string) {
			if armed.CompareAndSwap(true, false) {
				bh.cut.Store(true) // partitioned just after the call left
			}
		}
		h.hooks.fetched = func(string, bool) { h1Calls <- struct{}{} }
	})
	waitRefreshed(t, e, app.AppID, 1)
	<-h1Calls
	cfg2 := e.config("h2", app)
	cfg2.LeaseTTL = cfg.LeaseTTL
	h2 := e.start(cfg2, nil)
	wxhubtest.Eventually(t, 5*time.Second, "h2 sees h1 lead", func() bool { return h2.h.Status()[0].LeaderID == "h1" })
	if !h1.leader(app.AppID) {
		t.Fatal("h1 should lead")
	}

	// h1's next WeChat call takes 3.5 s, longer than its lease.
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathToken, DelayMS: 3500, Count: 1}); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	e.clock.Advance(2 * time.Hour) // v1 expired: h1 refreshes, h2 takes over
	ev := waitRefreshed(t, e, app.AppID, 2)
	if ev.Holder != "h2" {
		t.Fatalf("version 2 by %q, want h2", ev.Holder)
	}
	select {
	case <-h1Calls: // h1's slow call ended (cancelled or answered)
	case <-time.After(10 * time.Second):
		t.Fatal("h1's WeChat call did not end")
	}
	// WeChat answers (and issues a token) before the client sees the
	// answer: once h1's call ended, whatever it issued is issued.
	rec, _ := e.record(app.AppID)
	if latest := e.sim.ValidToken(app.AppID); rec.AccessToken != latest {
		t.Errorf("WeChat's newest token is not the stored one (by %s): the deposed h1 reached WeChat after its successor", rec.Holder)
	}
	if n := e.sim.Stats().TokensIssued[app.AppID]; n != 2 {
		t.Errorf("tokens issued = %d, want 2 (h1's startup, h2's takeover)", n)
	}
	if h1.leader(app.AppID) {
		t.Error("h1 still leads")
	}
}

// A compare-and-swap lost to another writer whose token was fetched after
// ours discards the fetched token, keeps the stored one, and
// token.refresh_failed says so.
func TestLostCASSaysTokenDiscarded(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	var once sync.Once
	var armed atomic.Bool
	e.start(e.config("h1", app), func(h *Holder) {
		h.hooks.beforeWrite = func(string) {
			if !armed.Load() {
				return
			}
			once.Do(func() { // another leader's write lands first
				rec, rev := e.record(app.AppID)
				rec.Version, rec.Holder, rec.AccessToken = 7, "other", "other-token"
				rec.FetchedAt = e.clock.Now().Add(time.Minute) // clearly after our fetch began
				data, _ := json.Marshal(rec)
				if _, err := e.tokens.Update(context.Background(), app.AppID, data, rev); err != nil {
					t.Error(err)
				}
			})
		}
	})
	waitRefreshed(t, e, app.AppID, 1)
	armed.Store(true)
	e.clock.Advance(2 * time.Hour)
	waitEvent(t, e.events, events.SubjectTokenRefreshFailed, app.AppID, 10*time.Second, func(ev events.TokenRefreshFailed) bool {
		return strings.Contains(ev.ErrMsg, "discarded") && strings.Contains(ev.ErrMsg, "version 7")
	})
	if rec, _ := e.record(app.AppID); rec.Holder != "other" || rec.Version != 7 {
		t.Errorf("stored %q v%d, want other's v7 kept", rec.Holder, rec.Version)
	}
}

// A wx_tokens record that is not a token record (written by hand, or by
// another version) is replaced by the first token fetched: one fetch, a
// record the workers can read, and no fetch at every check after.
func TestUndecodableRecordIsReplacedByOneFetch(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	if _, err := e.tokens.Put(context.Background(), app.AppID, []byte("not a token record")); err != nil {
		t.Fatal(err)
	}
	r := e.start(e.config("h1", app), nil)
	waitRefreshed(t, e, app.AppID, 1)
	rec, _ := e.record(app.AppID)
	if rec.AccessToken == "" || rec.Holder != "h1" {
		t.Fatalf("stored %+v, want h1's token", rec)
	}
	r.waitEvals(t, 5)
	if n := e.fetches(app.AppID); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
}
