package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/holder"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// handoverEnv is a NATS server, the simulator with one app, and holders
// run in this process.
type handoverEnv struct {
	t      *testing.T
	nats   *brokertest.Env
	sim    *wechatsim.Sim
	wc     *wechat.Client
	appid  string
	secret string
	// tokenCall, when set, is called as each token call reaches WeChat.
	tokenCall func()
	mu        sync.Mutex
}

func newHandoverEnv(t *testing.T, appid string) *handoverEnv {
	t.Helper()
	e := &handoverEnv{t: t, nats: brokertest.Start(t), appid: appid, secret: appid + "-secret"}
	e.sim = wechatsim.New(wechatsim.WithLogger(slog.New(slog.DiscardHandler)))
	e.sim.AddApp(e.appid, e.secret)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		f := e.tokenCall
		e.mu.Unlock()
		if f != nil && r.URL.Path == wechatsim.PathToken {
			f()
		}
		e.sim.ServeHTTP(w, r)
	}))
	t.Cleanup(api.Close)
	var err error
	if e.wc, err = wechat.NewClient(wechat.Config{BaseURL: api.URL, Timeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	return e
}

// startHolder runs a holder in this process until the returned stop is
// called (or the test ends); stop waits for Run to return.
func (e *handoverEnv) startHolder(id string) (h *holder.Holder, stop func()) {
	e.t.Helper()
	h, err := holder.New(holder.Config{
		Conn: e.nats.Conn(e.t), WeChat: e.wc, ID: id,
		Apps:          []holder.App{{AppID: e.appid, Secret: e.secret}},
		LeaseTTL:      15 * time.Second,
		CheckInterval: 50 * time.Millisecond,
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := h.Run(ctx); err != nil {
			e.t.Errorf("holder %s: %v", id, err)
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				e.t.Errorf("holder %s did not stop", id)
			}
		})
	}
	e.t.Cleanup(stop)
	return h, stop
}

func (e *handoverEnv) tokenCalls() int64 {
	return e.sim.Stats().CallCount(wechatsim.PathToken, e.appid)
}

// refreshed decodes the reply `wxhub token invalidate` printed.
func refreshed(t *testing.T, code int, out, errOut string) events.TokenRefreshReply {
	t.Helper()
	var reply events.TokenRefreshReply
	if code != 0 || json.Unmarshal([]byte(out), &reply) != nil {
		t.Fatalf("token invalidate: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	return reply
}

// `wxhub token invalidate` while no holder leads (the leader died, its
// lease has not lapsed yet) asks again within --timeout: the standby that
// takes over makes the refresh, once, and the command prints its version.
func TestTokenInvalidateDuringTakeoverIsDoneByTheNextLeader(t *testing.T) {
	t.Parallel()
	e := newHandoverEnv(t, "wxtakeover0001")
	ctx := context.Background()
	// The dead leader's token (fresh) and its lease, lapsing in 3 s.
	tok, err := e.wc.Token(ctx, e.appid, e.secret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rec, _ := json.Marshal(events.TokenRecord{AppID: e.appid, AccessToken: tok.Token, ExpiresAt: now.Add(tok.ExpiresIn),
		FetchedAt: now, Version: 1, Mode: events.ModeToken, Holder: "dead", Reason: events.ReasonStartup})
	tokens, err := e.nats.JS.KeyValue(ctx, events.BucketTokens)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.Create(ctx, e.appid, rec); err != nil {
		t.Fatal(err)
	}
	leases, err := e.nats.JS.KeyValue(ctx, events.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leases.Create(ctx, e.appid, []byte("dead"), jetstream.KeyTTL(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	h2, _ := e.startHolder("h2")
	wxhubtest.Eventually(t, 15*time.Second, "h2 to see the dead leader's lease", func() bool { return h2.Status()[0].LeaderID == "dead" })

	code, out, errOut := cliAt(e.nats.URL)("token", "invalidate", "--appid", e.appid, "--timeout", "20s")
	reply := refreshed(t, code, out, errOut)
	if reply.Version != 2 || reply.Holder != "h2" {
		t.Errorf("reply %+v, want version 2 by h2", reply)
	}
	if n := e.tokenCalls(); n != 2 {
		t.Errorf("WeChat token calls = %d, want 2 (the dead leader's, one manual refresh)", n)
	}
}

// `wxhub token invalidate` asked while the leader stops (here: it waits
// for its WeChat call under way) gets not_leading from it, says so, and
// asks again: the holder that leads next makes the refresh, once.
func TestTokenInvalidateWhileTheLeaderStopsIsDoneByTheNextLeader(t *testing.T) {
	t.Parallel()
	e := newHandoverEnv(t, "wxleaderstops01")
	refreshedEvents, err := e.nats.NC.SubscribeSync(events.SubjectTokenRefreshed)
	if err != nil {
		t.Fatal(err)
	}
	h1, stop1 := e.startHolder("h1")
	if _, err := refreshedEvents.NextMsg(15 * time.Second); err != nil {
		t.Fatalf("no token.refreshed from h1: %v", err) // it leads with version 1
	}
	h2, _ := e.startHolder("h2")
	wxhubtest.Eventually(t, 15*time.Second, "h2 to see h1 lead", func() bool { return h2.Status()[0].LeaderID == "h1" })

	// h1's next call takes 4 s and fails (-1): the token stays version 1.
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathToken, ErrCode: -1, DelayMS: 4000, Count: 1}); err != nil {
		t.Fatal(err)
	}
	calling := make(chan struct{})
	var once sync.Once
	e.mu.Lock()
	e.tokenCall = func() { once.Do(func() { close(calling) }) }
	e.mu.Unlock()
	go func() { _ = h1.Refresh(context.Background(), e.appid) }()
	select {
	case <-calling:
	case <-time.After(15 * time.Second):
		t.Fatal("h1 made no WeChat call")
	}
	go stop1() // SIGTERM: h1 waits for its call, then hands over

	code, out, errOut := cliAt(e.nats.URL)("token", "invalidate", "--appid", e.appid, "--timeout", "20s")
	reply := refreshed(t, code, out, errOut)
	if reply.Version != 2 || reply.Holder != "h2" {
		t.Errorf("reply %+v, want version 2 by h2", reply)
	}
	if !strings.Contains(errOut, "refresh refused: not_leading: holder h1 is stopping") || !strings.Contains(errOut, "asking the holder that leads next") {
		t.Errorf("stderr does not say the stopping leader refused and the command asked again:\n%s", errOut)
	}
	if n := e.tokenCalls(); n != 3 {
		t.Errorf("WeChat token calls = %d, want 3 (startup, h1's failed call, one manual refresh)", n)
	}
}

// `wxhub token invalidate` whose refresh outlasts --timeout (WeChat takes
// 4.5 s to answer, the command waits 3 s) prints, within the timeout,
// that the refresh is under way and where its outcome shows, and exits 1;
// not "refresh failed", not "no holder leads". The refresh goes on: the
// holder stores its token.
func TestTokenInvalidateOutlastingItsTimeoutSaysUnderWay(t *testing.T) {
	t.Parallel()
	e := newHandoverEnv(t, "wxunderway0001")
	refreshedEvents, err := e.nats.NC.SubscribeSync(events.SubjectTokenRefreshed)
	if err != nil {
		t.Fatal(err)
	}
	e.startHolder("h1")
	if _, err := refreshedEvents.NextMsg(15 * time.Second); err != nil {
		t.Fatalf("no token.refreshed from h1: %v", err) // it leads with version 1
	}
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathToken, DelayMS: 4500, Count: 1}); err != nil {
		t.Fatal(err)
	}
	asked := time.Now()
	code, out, errOut := cliAt(e.nats.URL)("token", "invalidate", "--appid", e.appid, "--timeout", "3s")
	if took := time.Since(asked); took > 3500*time.Millisecond {
		t.Errorf("the command took %v, want its --timeout of 3s", took)
	}
	if code != 1 || out != "" || !strings.Contains(errOut, "refresh under way: holder h1") || !strings.Contains(errOut, "token.refreshed") ||
		strings.Contains(errOut, "refresh failed") || strings.Contains(errOut, "not_leading") {
		t.Errorf("exit %d\nstdout: %s\nstderr: %s\nwant exit 1 saying the refresh is under way", code, out, errOut)
	}
	m, err := refreshedEvents.NextMsg(15 * time.Second)
	if err != nil {
		t.Fatalf("the refresh under way stored no token: %v", err)
	}
	var ev events.TokenRefreshed
	if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Version != 2 || ev.Reason != events.ReasonManual || ev.Holder != "h1" {
		t.Errorf("token.refreshed %s, want version 2, manual, by h1", m.Data)
	}
	if n := e.tokenCalls(); n != 2 {
		t.Errorf("WeChat token calls = %d, want 2 (startup, the manual refresh)", n)
	}
}
