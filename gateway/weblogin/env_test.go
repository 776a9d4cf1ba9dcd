package weblogin_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/gateway/weblogin"
	"github.com/wxhub/wxhub/gateway/weblogin/demo"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

const (
	websiteApp    = "wxweb0000000000a"
	websiteSecret = "websecret0000000000000000000000a"
)

// loginEnv is the whole flow on real parts: embedded JetStream, the
// simulator behind a real HTTP server, a real worker, and the web-login
// front (weblogin.Handler at /oauth/, the demo page at /demo/) on another.
type loginEnv struct {
	nats    *brokertest.Env
	sim     *wechatsim.Sim
	simURL  string
	demoApp wechatsim.DemoApp
	front   *httptest.Server
	demoURL string
	states  jetstream.KeyValue

	mu        sync.Mutex
	callbacks []string // every /oauth/callback URL the front was asked for
}

// lastCallback is the last callback URL the front served.
func (e *loginEnv) lastCallback(t *testing.T) string {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.callbacks) == 0 {
		t.Fatal("the callback was never opened")
	}
	return e.callbacks[len(e.callbacks)-1]
}

type envOptions struct {
	wait           time.Duration
	authorizeRate  float64
	authorizeBurst int
	clientRate     float64
	clientBurst    int
	maxClients     int
	trustedProxies []netip.Prefix
	logs           *wxhubtest.Buffer // the front's log, at Debug; nil: discarded
	wechatTimeout  time.Duration     // the worker's bound on one WeChat call; 0: the client's default
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newLoginEnv(t *testing.T, o envOptions) *loginEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := &loginEnv{nats: brokertest.Start(t)}
	e.sim = wechatsim.New(wechatsim.WithLogger(quiet()))
	e.demoApp = e.sim.SeedDemo()
	e.sim.AddApp(websiteApp, websiteSecret)
	if err := e.sim.AddSNSUser(websiteApp, wechatsim.Follower{OpenID: "oWeb_user1", Nickname: "网站用户"}); err != nil {
		t.Fatal(err)
	}
	e.sim.SetOAuthDomains(websiteApp, "127.0.0.1")
	e.sim.SetWebsiteApp(websiteApp, true)
	simSrv := httptest.NewServer(e.sim)
	t.Cleanup(simSrv.Close)
	e.simURL = simSrv.URL

	wc, err := wechat.NewClient(wechat.Config{BaseURL: e.simURL, Timeout: o.wechatTimeout})
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{
		Conn: e.nats.Conn(t), WeChat: wc, ID: "test-worker", Logger: quiet(),
		Apps: []worker.App{{AppID: e.demoApp.AppID, Secret: e.demoApp.Secret}, {AppID: websiteApp, Secret: websiteSecret}},
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	for !w.Ready() { // the worker has no readiness event: poll with a deadline
		select {
		case err := <-done:
			t.Fatalf("worker stopped: %v", err)
		case <-ctx.Done():
			t.Fatal("worker not ready within 30 s")
		case <-time.After(5 * time.Millisecond):
		}
	}

	mux := http.NewServeMux()
	e.front = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == weblogin.PathCallback {
			e.mu.Lock()
			e.callbacks = append(e.callbacks, e.front.URL+r.URL.RequestURI())
			e.mu.Unlock()
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(e.front.Close)
	e.demoURL = e.front.URL + "/demo/"

	e.states, err = e.nats.JS.KeyValue(ctx, events.BucketLoginState)
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := weblogin.NewNATSJobs(e.nats.Conn(t), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jobs.Close)
	log := quiet()
	if o.logs != nil {
		log = slog.New(slog.NewTextHandler(o.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	h, err := weblogin.New(weblogin.Config{
		Apps: []weblogin.App{
			{AppID: e.demoApp.AppID, CallbackBase: e.front.URL, ReturnTo: []string{e.demoURL, e.front.URL + "/shop/login"}},
			{AppID: websiteApp, Website: true, CallbackBase: e.front.URL, ReturnTo: []string{e.demoURL}},
		},
		AuthorizeBase:  e.simURL,
		States:         weblogin.NewStateStore(e.states, 0, nil),
		Jobs:           jobs,
		Wait:           o.wait,
		AuthorizeRate:  o.authorizeRate,
		AuthorizeBurst: o.authorizeBurst,
		ClientRate:     o.clientRate,
		ClientBurst:    o.clientBurst,
		MaxClients:     o.maxClients,
		TrustedProxies: o.trustedProxies,
		Logger:         log,
	})
	if err != nil {
		t.Fatal(err)
	}
	page, err := demo.New(e.nats.Conn(t), demo.Config{AppID: e.demoApp.AppID, LoginBase: e.front.URL, SelfURL: e.demoURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(page.Close)
	mux.Handle("/oauth/", h)
	mux.Handle("/demo/", page)
	return e
}

// jobsPublished counts the jobs WX_JOBS ever stored (its last sequence).
func (e *loginEnv) jobsPublished(t *testing.T) uint64 {
	t.Helper()
	s, err := e.nats.JS.Stream(context.Background(), events.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// exchanges counts code exchanges at the simulator.
func (e *loginEnv) exchanges() int64 {
	return e.sim.Stats().CallCount(wechatsim.PathOAuthToken, e.demoApp.AppID)
}

// agent is one browser: an HTTP client with its own cookie jar that
// shows redirects instead of following them.
type agent struct{ c *http.Client }

func newAgent(t *testing.T) *agent {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := noFollow()
	c.Jar = jar
	return &agent{c: c}
}

func (a *agent) get(t *testing.T, u string) (*http.Response, string) {
	t.Helper()
	resp, err := a.c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// noFollow is an HTTP client that shows redirects instead of following.
func noFollow() *http.Client {
	return &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// profiles follows user.profile and returns the profile of job id, or
// fails after 20 s.
func (e *loginEnv) profiles(t *testing.T) func(id string) events.UserProfile {
	t.Helper()
	ch := make(chan *nats.Msg, 64)
	sub, err := e.nats.NC.ChanSubscribe(events.SubjectUserProfile, ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.nats.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	return func(id string) events.UserProfile {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case m := <-ch:
				var p events.UserProfile
				if err := json.Unmarshal(m.Data, &p); err != nil {
					t.Fatal(err)
				}
				if p.JobID == id {
					return p
				}
			case <-deadline:
				t.Fatalf("no user.profile for job %s within 20 s", id)
			}
		}
	}
}
