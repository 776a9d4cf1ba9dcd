package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

const (
	testApp    = "wx0123456789abcdef"
	testSecret = "s3cr3t-app-secret-0123456789abcd"
)

// harness is a real embedded JetStream server, the WeChat simulator behind
// httptest, and a stand-in holder that keeps wx_tokens filled.
type harness struct {
	t      *testing.T
	env    *brokertest.Env
	sim    *wechatsim.Sim
	wc     *wechat.Client
	holder *fakeHolder
}

func newHarness(t *testing.T, followers int) *harness {
	t.Helper()
	return newHarnessOn(t, brokertest.Start(t), followers)
}

// newHarnessOn is newHarness on env (e.g. brokertest.StartReplicated).
func newHarnessOn(t *testing.T, env *brokertest.Env, followers int) *harness {
	t.Helper()
	h := &harness{t: t, env: env, sim: wechatsim.New()}
	h.sim.AddApp(testApp, testSecret)
	for i := range followers {
		if err := h.sim.AddFollower(testApp, wechatsim.Follower{OpenID: openID(i), UnionID: fmt.Sprintf("u%05d", i), Nickname: fmt.Sprintf("user %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(h.sim)
	t.Cleanup(srv.Close)
	var err error
	if h.wc, err = wechat.NewClient(wechat.Config{BaseURL: srv.URL, Timeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	h.holder = newFakeHolder(t, h.env, h.wc)
	return h
}

func openID(i int) string { return fmt.Sprintf("o%05d", i) }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// runningWorker is a Worker running in the background.
type runningWorker struct {
	*worker.Worker
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error         // Run's error, once done is closed
	nc     *nats.Conn
}

// stop cancels the worker and waits for Run to return.
func (rw *runningWorker) stop(t *testing.T) error {
	t.Helper()
	rw.cancel()
	select {
	case <-rw.done:
		return rw.err
	case <-time.After(60 * time.Second):
		t.Fatal("worker did not stop")
		return nil
	}
}

// startWorker starts a worker on its own connection and waits until it
// is ready. mod adjusts the config (small timings for tests).
func (h *harness) startWorker(id string, mod func(*worker.Config)) *runningWorker {
	h.t.Helper()
	rw := h.launchWorker(id, mod)
	wxhubtest.Eventually(h.t, 10*time.Second, "worker ready", func() bool {
		select {
		case <-rw.done:
			h.t.Fatalf("worker stopped at start: %v", rw.err)
		default:
		}
		return rw.Ready()
	})
	return rw
}

// launchWorker starts a worker as startWorker does, without waiting for
// it to be ready.
func (h *harness) launchWorker(id string, mod func(*worker.Config)) *runningWorker {
	t := h.t
	t.Helper()
	nc := h.env.Conn(t)
	cfg := worker.Config{
		Conn: nc, WeChat: h.wc, Apps: []worker.App{{AppID: testApp, Secret: testSecret}},
		ID: id, Concurrency: 8, AckWait: 10 * time.Second, JobTimeout: 8 * time.Second,
		TokenWait: 5 * time.Second, RetryInitial: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		RetryMaxElapsed: 300 * time.Millisecond, NakDelayMin: 50 * time.Millisecond, NakDelayMax: 200 * time.Millisecond,
		Logger: testLogger(t),
	}
	cfg.Topology.Replicas = h.env.Replicas
	if mod != nil {
		mod(&cfg)
	}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Workers only bind: provision as the admin would, with this worker's
	// consumer settings.
	pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = worker.Provision(pctx, h.env.JS, cfg)
	pcancel()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWorker{Worker: w, cancel: cancel, done: make(chan struct{}), nc: nc}
	go func() {
		defer close(rw.done)
		rw.err = w.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-rw.done:
		case <-time.After(60 * time.Second):
			t.Error("worker did not stop at cleanup")
		}
	})
	return rw
}

// publishJob publishes a job; msgID "" publishes without Nats-Msg-Id.
func (h *harness) publishJob(subject string, payload []byte, msgID string, hdr map[string]string) {
	h.t.Helper()
	m := nats.NewMsg(subject)
	m.Data = payload
	if msgID != "" {
		m.Header.Set(events.HeaderMsgID, msgID)
	}
	for k, v := range hdr {
		m.Header.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.env.JS.PublishMsg(ctx, m); err != nil {
		h.t.Fatalf("publish job: %v", err)
	}
}

func (h *harness) lookup(jobID string, i int) {
	b, _ := json.Marshal(events.UserLookup{JobID: jobID, AppID: testApp, OpenID: openID(i)})
	h.publishJob(events.SubjectUserLookup, b, jobID, nil)
}

// stored is one message read back from a stream.
type stored struct {
	Subject string
	Data    []byte
	Header  nats.Header
}

// streamLog reads a stream from the start with an ordered consumer and
// groups its messages by Nats-Msg-Id: what JetStream actually kept, after
// deduplication.
type streamLog struct {
	mu      sync.Mutex
	byID    map[string][]stored
	total   int
	changed chan struct{}
}

func (h *harness) follow(stream string) *streamLog {
	t := h.t
	t.Helper()
	l := &streamLog{byID: map[string][]stored{}, changed: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := h.env.JS.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		l.mu.Lock()
		id := m.Headers().Get(events.HeaderMsgID)
		l.byID[id] = append(l.byID[id], stored{Subject: m.Subject(), Data: m.Data(), Header: m.Headers()})
		l.total++
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return l
}

// waitIDs waits until n distinct ids were seen.
func (l *streamLog) waitIDs(t *testing.T, n int, d time.Duration) {
	t.Helper()
	if got, ok := l.await(n, d, func(l *streamLog) int { return len(l.byID) }); !ok {
		t.Fatalf("timed out: %d of %d ids", got, n)
	}
}

// caughtUp waits until l has read every message stored in stream.
func (l *streamLog) caughtUp(t *testing.T, h *harness, stream string) {
	t.Helper()
	s, err := h.env.JS.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	n := int(s.CachedInfo().State.Msgs)
	if got, ok := l.await(n, 10*time.Second, func(l *streamLog) int { return l.total }); !ok {
		t.Fatalf("timed out: read %d of the %d messages in %s", got, n, stream)
	}
}

// await waits at most d until count (called with l.mu held) is at least
// n. It returns the last count and whether it got there.
func (l *streamLog) await(n int, d time.Duration, count func(*streamLog) int) (int, bool) {
	deadline := time.After(d)
	for {
		l.mu.Lock()
		got, ch := count(l), l.changed
		l.mu.Unlock()
		if got >= n {
			return got, true
		}
		select {
		case <-ch:
		case <-deadline:
			return got, false
		}
	}
}

func (l *streamLog) snapshot() (map[string][]stored, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]stored, len(l.byID))
	for k, v := range l.byID {
		out[k] = append([]stored(nil), v...)
	}
	return out, l.total
}

func (l *streamLog) get(id string) []stored {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]stored(nil), l.byID[id]...)
}

// fakeHolder stands in for package holder: it fetches global tokens from
// the simulator, writes them to wx_tokens with growing versions, and
// refreshes once per reported version (single-flight).
type fakeHolder struct {
	t  *testing.T
	kv jetstream.KeyValue
	nc *nats.Conn
	wc *wechat.Client

	mu      sync.Mutex
	version uint64
	fetches int
	reports map[string]int // "version/reporter" → count
}

func newFakeHolder(t *testing.T, env *brokertest.Env, wc *wechat.Client) *fakeHolder {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := env.JS.KeyValue(ctx, events.BucketTokens)
	if err != nil {
		t.Fatal(err)
	}
	fh := &fakeHolder{t: t, kv: kv, nc: env.NC, wc: wc, reports: map[string]int{}}
	sub, err := env.NC.Subscribe(events.SubjectTokenInvalidated, func(m *nats.Msg) {
		var inv events.TokenInvalidated
		if err := json.Unmarshal(m.Data, &inv); err != nil {
			t.Errorf("bad token.invalidated: %v", err)
			return
		}
		fh.mu.Lock()
		defer fh.mu.Unlock()
		fh.reports[fmt.Sprintf("%d/%s", inv.Version, inv.Reporter)]++
		if inv.Version == fh.version {
			fh.rotateLocked()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return fh
}

// rotate fetches a new token and stores it as the next version.
func (fh *fakeHolder) rotate() {
	fh.mu.Lock()
	defer fh.mu.Unlock()
	fh.rotateLocked()
}

func (fh *fakeHolder) rotateLocked() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tok, err := fh.wc.Token(ctx, testApp, testSecret)
	if err != nil {
		fh.t.Errorf("fetch token: %v", err)
		return
	}
	fh.fetches++
	fh.version++
	now := time.Now()
	b, _ := json.Marshal(events.TokenRecord{AppID: testApp, AccessToken: tok.Token, ExpiresAt: now.Add(tok.ExpiresIn),
		FetchedAt: now, Version: fh.version, Mode: events.ModeToken, Holder: "fake"})
	if _, err := fh.kv.Put(ctx, testApp, b); err != nil {
		fh.t.Errorf("put token: %v", err)
		return
	}
	// As the real holder: the event after the record is stored.
	ev, _ := json.Marshal(events.TokenRefreshed{AppID: testApp, Version: fh.version, ExpiresAt: now.Add(tok.ExpiresIn), FetchedAt: now, Reason: "test"})
	if err := fh.nc.Publish(events.SubjectTokenRefreshed, ev); err != nil {
		fh.t.Errorf("publish token.refreshed: %v", err)
	}
}

func (fh *fakeHolder) counts() (version uint64, fetches int, reports map[string]int) {
	fh.mu.Lock()
	defer fh.mu.Unlock()
	r := make(map[string]int, len(fh.reports))
	for k, v := range fh.reports {
		r[k] = v
	}
	return fh.version, fh.fetches, r
}

// decode helpers
func profileOf(t *testing.T, s stored) events.UserProfile {
	t.Helper()
	var p events.UserProfile
	if err := json.Unmarshal(s.Data, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func failureOf(t *testing.T, s stored) events.UserProfileFailed {
	t.Helper()
	var f events.UserProfileFailed
	if err := json.Unmarshal(s.Data, &f); err != nil {
		t.Fatal(err)
	}
	return f
}
