package holder

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/metrics"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// t0 is 10:00 in China: far from the day's turn.
var t0 = time.Date(2025, 3, 10, 2, 0, 0, 0, time.UTC)

var appSeq atomic.Int64

// testEnv is a real embedded NATS server, the WeChat simulator behind
// httptest, and a recorder of every token event.
type testEnv struct {
	t      *testing.T
	nats   *brokertest.Env
	sim    *wechatsim.Sim
	clock  *wechatsim.ManualClock
	wc     *wechat.Client
	tokens jetstream.KeyValue
	quota  jetstream.KeyValue
	logs   *wxhubtest.Buffer
	events *eventLog
	// front, when set, answers the WeChat calls instead of sim (it may
	// call sim itself).
	front atomic.Pointer[http.HandlerFunc]
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	e := &testEnv{t: t, nats: brokertest.Start(t), clock: wechatsim.NewManualClock(t0), logs: &wxhubtest.Buffer{}}
	e.sim = wechatsim.New(wechatsim.WithClock(e.clock), wechatsim.WithLogger(slog.New(slog.DiscardHandler)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := e.front.Load(); f != nil {
			(*f)(w, r)
			return
		}
		e.sim.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	var err error
	if e.wc, err = wechat.NewClient(wechat.Config{BaseURL: srv.URL, Timeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if e.tokens, err = e.nats.JS.KeyValue(ctx, events.BucketTokens); err != nil {
		t.Fatal(err)
	}
	if e.quota, err = e.nats.JS.KeyValue(ctx, events.BucketQuota); err != nil {
		t.Fatal(err)
	}
	e.events = newEventLog(t, e.nats.NC)
	return e
}

// newApp registers a fresh app (unique appid, so metrics don't mix across
// tests) in the simulator.
func (e *testEnv) newApp(mode string) App {
	id := "wxtest" + strings.ReplaceAll(e.t.Name(), "/", "_")
	id = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, id)
	id = id + "_" + itoa(appSeq.Add(1))
	secret := "s3cr3t-" + id
	e.sim.AddApp(id, secret)
	return App{AppID: id, Secret: secret, Mode: mode}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// running is a holder under test.
type running struct {
	h      *Holder
	cancel context.CancelFunc
	done   chan error
	// leaderCh receives every leadership change of this holder.
	leaderCh chan bool
	evals    atomic.Int64
}

// config is the base configuration of test holders.
func (e *testEnv) config(id string, apps ...App) Config {
	return Config{
		Conn:   e.nats.Conn(e.t),
		WeChat: e.wc,
		Apps:   apps,
		ID:     id,
		// Long enough that a loaded CI machine running -race does not make
		// leadership flap (renewals every TTL/3, step-down at 0.9 TTL).
		LeaseTTL:      5 * time.Second,
		Jitter:        -1,
		Now:           e.clock.Now,
		CheckInterval: 20 * time.Millisecond,
		RetryInitial:  10 * time.Millisecond,
		RetryMax:      50 * time.Millisecond,
		MaxClockSkew:  -1, // the simulated clock is far from the server's
		Logger:        slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// start starts a holder; setup may adjust it (config, hooks) before Run.
func (e *testEnv) start(cfg Config, setup func(*Holder)) *running {
	e.t.Helper()
	h, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	r := &running{h: h, done: make(chan error, 1), leaderCh: make(chan bool, 16)}
	h.hooks.leadership = func(_ string, leader bool) { r.leaderCh <- leader }
	h.hooks.evaluated = func(string) { r.evals.Add(1) }
	if setup != nil {
		setup(h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- h.Run(ctx) }()
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

// stop stops the holder gracefully (it releases its leases).
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		r.done <- nil // later stops return at once
	case <-time.After(10 * time.Second):
		t.Fatal("holder did not stop within 10s")
	}
}

// kill stops the holder like a crash: its leases stay until they expire.
func (r *running) kill(t *testing.T) {
	r.h.noRelease.Store(true)
	r.stop(t)
}

func (r *running) leader(appid string) bool {
	for _, s := range r.h.Status() {
		if s.AppID == appid {
			return s.Leader
		}
	}
	return false
}

// waitEvals waits until the holder's leader loop evaluated n more times.
func (r *running) waitEvals(t *testing.T, n int64) {
	t.Helper()
	target := r.evals.Load() + n
	wxhubtest.Eventually(t, 10*time.Second, "leader evaluations", func() bool { return r.evals.Load() >= target })
}

// record reads the app's token record from wx_tokens.
func (e *testEnv) record(appid string) (events.TokenRecord, uint64) {
	e.t.Helper()
	ent, err := e.tokens.Get(context.Background(), appid)
	if err != nil {
		e.t.Fatalf("get %s: %v", appid, err)
	}
	var rec events.TokenRecord
	if err := json.Unmarshal(ent.Value(), &rec); err != nil {
		e.t.Fatal(err)
	}
	return rec, ent.Revision()
}

// quotaUsed reads today's count (of forced stable_token calls when force
// is set) from wx_quota; 0 when there is no record.
func (e *testEnv) quotaUsed(appid string, force bool) int64 {
	e.t.Helper()
	key := events.QuotaKey(appid, e.clock.Now())
	if force {
		key = events.ForceQuotaKey(appid, e.clock.Now())
	}
	ent, err := e.quota.Get(context.Background(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0
	}
	if err != nil {
		e.t.Fatalf("get wx_quota %s: %v", key, err)
	}
	r, err := events.ParseQuotaRecord(ent.Value())
	if err != nil {
		e.t.Fatalf("wx_quota %s: %v", key, err)
	}
	return r.Used
}

func (e *testEnv) fetches(appid string) int64 {
	st := e.sim.Stats()
	return st.CallCount(wechatsim.PathToken, appid) + st.CallCount(wechatsim.PathStableToken, appid)
}

// report publishes n token.invalidated reports for version, concurrently.
func (e *testEnv) report(appid string, version uint64, n int) {
	e.t.Helper()
	data, _ := json.Marshal(events.TokenInvalidated{AppID: appid, Version: version, ErrCode: 40001, Reporter: "test"})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := e.nats.NC.Publish(events.SubjectTokenInvalidated, data); err != nil {
				e.t.Errorf("publish %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if err := e.nats.NC.Flush(); err != nil {
		e.t.Fatal(err)
	}
}

// decisions is how many reports the holders judged for appid, by decision.
func decisions(appid string) map[string]int {
	out := map[string]int{}
	for _, d := range allDecisions {
		var m dto.Metric
		if err := metrics.TokenInvalidations.WithLabelValues(appid, d).Write(&m); err != nil {
			panic(err)
		}
		if n := int(m.GetCounter().GetValue()); n > 0 {
			out[d] = n
		}
	}
	return out
}

// totalDecisions counts the reports the leaders judged (standbys drop
// theirs, counted as "standby").
func totalDecisions(appid string) int {
	n := 0
	for d, v := range decisions(appid) {
		if d != decisionStandby {
			n += v
		}
	}
	return n
}

// eventLog records every token event (core subscription on token.>).
type eventLog struct {
	mu   sync.Mutex
	msgs []*nats.Msg
	cond chan struct{}
}

func newEventLog(t *testing.T, nc *nats.Conn) *eventLog {
	l := &eventLog{cond: make(chan struct{})}
	sub, err := nc.Subscribe("token.>", func(m *nats.Msg) {
		l.mu.Lock()
		l.msgs = append(l.msgs, m)
		close(l.cond)
		l.cond = make(chan struct{})
		l.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

// all returns the recorded events on subject for appid, decoded into T.
func eventsOf[T any](l *eventLog, subject, appid string) []T {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []T
	for _, m := range l.msgs {
		if m.Subject != subject {
			continue
		}
		var probe struct {
			AppID string `json:"appid"`
		}
		if json.Unmarshal(m.Data, &probe) != nil || probe.AppID != appid {
			continue
		}
		var v T
		if err := json.Unmarshal(m.Data, &v); err == nil {
			out = append(out, v)
		}
	}
	return out
}

// waitEvent waits until match holds for some recorded event of subject and
// appid, and returns it.
func waitEvent[T any](t *testing.T, l *eventLog, subject, appid string, d time.Duration, match func(T) bool) T {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		l.mu.Lock()
		ch := l.cond
		l.mu.Unlock()
		for _, ev := range eventsOf[T](l, subject, appid) {
			if match(ev) {
				return ev
			}
		}
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("no matching %s event for %s within %v", subject, appid, d)
		}
	}
}

func (l *eventLog) raw() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([][]byte, len(l.msgs))
	for i, m := range l.msgs {
		out[i] = m.Data
	}
	return out
}

func waitRefreshed(t *testing.T, e *testEnv, appid string, version uint64) events.TokenRefreshed {
	t.Helper()
	return waitEvent(t, e.events, events.SubjectTokenRefreshed, appid, 15*time.Second,
		func(ev events.TokenRefreshed) bool { return ev.Version == version })
}

type atomicBool = atomic.Bool

// containsLog reports whether a JSON log line has level and msg containing text.
func containsLog(logs, level, text string) bool {
	for _, line := range strings.Split(logs, "\n") {
		var l struct{ Level, Msg string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Level == level && strings.Contains(l.Msg, text) {
			return true
		}
	}
	return false
}

// wrapBucket is a hooks.wrapKV that puts fake between the holder and
// bucket: the real bucket goes into *inner (fake's embedded KeyValue).
// Other buckets are left alone.
func wrapBucket(bucket string, inner *jetstream.KeyValue, fake jetstream.KeyValue) func(string, jetstream.KeyValue) jetstream.KeyValue {
	return func(b string, kv jetstream.KeyValue) jetstream.KeyValue {
		if b != bucket {
			return kv
		}
		*inner = kv
		return fake
	}
}
