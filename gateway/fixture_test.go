package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/holder"
	"github.com/wxhub/wxhub/internal/metrics"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

// Test credentials. The AppSecret and the keys must never show up in an
// answer to a handle client, a log line or a metric.
const (
	appA     = "wxgwtestappaaaa1"
	appB     = "wxgwtestappbbbb2"
	secretA  = "appsecret-A-0123456789abcdef"
	secretB  = "appsecret-B-0123456789abcdef"
	keyShop  = "client-key-shop-0123456789"
	keyOther = "client-key-other-0123456789"
	keyReal  = "client-key-real-0123456789"
	openID   = "oGatewayFollower01"
)

// env is real NATS, the simulator as WeChat, a holder keeping the tokens
// and a gateway serving over real HTTP.
type env struct {
	t       testing.TB
	sim     *wechatsim.Sim
	api     *httptest.Server
	holder  *holder.Holder
	tokens  *worker.TokenCache
	gw      *gateway.Gateway
	url     string
	logs    *wxhubtest.Buffer
	seen    *tokenSpy
	wechat  *requestLog // every request that reached "WeChat"
	stop    context.CancelFunc
	stopped chan error
}

type envOption func(*gateway.Config)

func clients() []gateway.Client {
	return []gateway.Client{
		{Name: "shop", Key: keyShop, AppIDs: []string{appA, appB}},
		{Name: "other", Key: keyOther, AppIDs: []string{appB}, Paths: []string{"/cgi-bin/user/"}},
		{Name: "tool", Key: keyReal, AppIDs: []string{appA}, RealToken: true},
	}
}

// requestLog records the requests that reached the upstream, as they
// arrived (method, escaped path, query).
type requestLog struct {
	mu   sync.Mutex
	reqs []arrival
}

type arrival struct {
	Method, RawPath, Path string
	Query                 url.Values
	Header                http.Header
}

func (l *requestLog) add(r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs = append(l.reqs, arrival{Method: r.Method, RawPath: r.URL.EscapedPath(), Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone()})
}

func (l *requestLog) all() []arrival {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]arrival(nil), l.reqs...)
}

// upstream wraps the simulator with two media endpoints (the simulator
// does not simulate media): an upload that answers the size, type and
// SHA-256 of the body it got, and a binary download. It records every
// request in log.
func upstream(sim *wechatsim.Sim, arrived chan<- struct{}, log *requestLog) http.Handler {
	mux := http.NewServeMux()
	valid := func(r *http.Request) bool {
		t := r.URL.Query().Get("access_token")
		return t != "" && (t == sim.ValidToken(appA) || t == sim.ValidToken(appB))
	}
	mux.HandleFunc("POST /cgi-bin/media/upload", func(w http.ResponseWriter, r *http.Request) {
		if !valid(r) {
			fmt.Fprint(w, `{"errcode":40001,"errmsg":"invalid credential rid: 0-0-0"}`)
			return
		}
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"type": r.URL.Query().Get("type"), "size": len(b),
			"sha256": sha(b), "content_type": r.Header.Get("Content-Type"), "media_id": "m-" + sha(b)[:8]})
	})
	mux.HandleFunc("GET /cgi-bin/media/get", func(w http.ResponseWriter, r *http.Request) {
		if !valid(r) {
			fmt.Fprint(w, `{"errcode":40001,"errmsg":"invalid credential rid: 0-0-0"}`)
			return
		}
		w.Header().Set("Content-Type", "image/jpeg")
		w.Header().Set("Content-Disposition", `attachment; filename="m.jpg"`)
		w.Write(mediaBytes)
	})
	// A large download, announced (Content-Length): more than the
	// sockets between the gateway and a client buffer, so that a client
	// that does not read holds the gateway's write.
	mux.HandleFunc("GET /cgi-bin/media/get/jssdk", func(w http.ResponseWriter, r *http.Request) {
		if !valid(r) {
			fmt.Fprint(w, `{"errcode":40001,"errmsg":"invalid credential rid: 0-0-0"}`)
			return
		}
		b := bigMedia()
		w.Header().Set("Content-Type", "audio/speex")
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Write(b)
	})
	// A mini program's code exchange (not simulated): the AppSecret
	// gives a session, anything else 40125; js_code minus-one is
	// answered -1 (a code WeChat used up while it failed).
	mux.HandleFunc("GET /sns/jscode2session", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		w.Header().Set("Content-Type", "application/json")
		if q.Get("js_code") == "minus-one" {
			fmt.Fprint(w, `{"errcode":-1,"errmsg":"system error rid: 0-0-0"}`)
			return
		}
		if (q.Get("appid") != appA || q.Get("secret") != secretA) && (q.Get("appid") != appB || q.Get("secret") != secretB) {
			fmt.Fprint(w, `{"errcode":40125,"errmsg":"invalid appsecret rid: 0-0-0"}`)
			return
		}
		fmt.Fprintf(w, `{"openid":"oMini-%s","session_key":"sk-0123456789"}`, q.Get("js_code"))
	})
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if arrived != nil && r.URL.Path == wechatsim.PathUserInfo {
			select {
			case arrived <- struct{}{}:
			default:
			}
		}
		sim.ServeHTTP(w, r)
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.add(r)
		mux.ServeHTTP(w, r)
	})
}

var mediaBytes = func() []byte {
	b := make([]byte, 3<<20)
	for i := range b {
		b[i] = byte(i*7 + i>>9)
	}
	return b
}()

// bigMedia is the large download's body (made on first use).
var bigMedia = sync.OnceValue(func() []byte {
	b := make([]byte, 24<<20)
	for i := range b {
		b[i] = byte(i*13 + i>>11)
	}
	return b
})

// startEnv starts everything; the gateway stops at the end of the test.
func startEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	return startEnvWith(t, nil, opts...)
}

func startEnvWith(t testing.TB, arrived chan<- struct{}, opts ...envOption) *env {
	t.Helper()
	nats := brokertest.Start(t)
	nc := nats.Conn(t)
	js, err := jetstreamNew(nc)
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := broker.Provision(pctx, broker.LocalJetStreams(js, grants.Provision), broker.Topology{}); err != nil {
		t.Fatal(err)
	}
	sim := wechatsim.New(wechatsim.WithLogger(slog.New(slog.DiscardHandler)))
	sim.AddApp(appA, secretA)
	sim.AddApp(appB, secretB)
	for _, a := range []string{appA, appB} {
		if err := sim.AddFollower(a, wechatsim.Follower{OpenID: openID}); err != nil {
			t.Fatal(err)
		}
	}
	wlog := &requestLog{}
	api := httptest.NewServer(upstream(sim, arrived, wlog))
	t.Cleanup(api.Close)

	logs := &wxhubtest.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	wc, err := wechat.NewClient(wechat.Config{BaseURL: api.URL})
	if err != nil {
		t.Fatal(err)
	}
	h, err := holder.New(holder.Config{Conn: nc, WeChat: wc, ID: "h1", LeaseTTL: 5 * time.Second,
		MinForceInterval: 100 * time.Millisecond, Jitter: -1,
		Apps:   []holder.App{{AppID: appA, Secret: secretA}, {AppID: appB, Secret: secretB}},
		Logger: log.With("role", "holder")})
	if err != nil {
		t.Fatal(err)
	}
	tokens := worker.NewTokenCache(log)
	spy := &tokenSpy{TokenCache: tokens, seen: map[string]bool{}}
	cfg := gateway.Config{
		Tokens:      spy,
		Invalidator: worker.NewInvalidator(js, "", "gw-test", time.Second),
		BaseURL:     api.URL,
		Apps:        []gateway.App{{AppID: appA, Secret: secretA}, {AppID: appB, Secret: secretB}},
		Clients:     clients(),
		Listen:      "127.0.0.1:0",
		TokenWait:   5 * time.Second,
		Logger:      log.With("role", "gateway"),
	}
	for _, o := range opts {
		o(&cfg)
	}
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	hctx, stopHolder := context.WithCancel(context.Background())
	holderDone := make(chan error, 1)
	go func() { holderDone <- h.Run(hctx) }()
	wctx, stopWatch := context.WithCancel(context.Background())
	watchDone := make(chan error, 1)
	go func() {
		tokens.FollowBucket(wctx, js, nc, events.SubjectTokenRefreshed, []string{appA, appB}, 0)
		watchDone <- nil
	}()
	if err := gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, sim: sim, api: api, holder: h, tokens: tokens, gw: gw, url: gw.URL(), logs: logs, seen: spy, wechat: wlog, stop: stop, stopped: make(chan error, 1)}
	go func() { e.stopped <- gw.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		<-e.stopped
		stopWatch()
		<-watchDone
		stopHolder()
		<-holderDone
	})
	e.waitReady()
	return e
}

// waitReady waits (on token events, bounded) until the gateway has a
// token for every app.
func (e *env) waitReady() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, a := range []string{appA, appB} {
		if _, err := e.tokens.WaitNewer(ctx, a, 0); err != nil {
			e.t.Fatalf("no token for %s: %v", a, err)
		}
	}
}

// tokenSpy remembers every real token the gateway was given, to prove
// none of them leaks.
type tokenSpy struct {
	*worker.TokenCache
	mu   sync.Mutex
	seen map[string]bool
}

func (s *tokenSpy) note(rec events.TokenRecord) events.TokenRecord {
	if rec.AccessToken != "" {
		s.mu.Lock()
		s.seen[rec.AccessToken] = true
		s.mu.Unlock()
	}
	return rec
}

func (s *tokenSpy) Current(appid string) (events.TokenRecord, bool) {
	rec, ok := s.TokenCache.Current(appid)
	return s.note(rec), ok
}

func (s *tokenSpy) WaitNewer(ctx context.Context, appid string, v uint64) (events.TokenRecord, error) {
	rec, err := s.TokenCache.WaitNewer(ctx, appid, v)
	return s.note(rec), err
}

func (s *tokenSpy) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.seen {
		out = append(out, k)
	}
	return out
}

// secrets are the values that must never leak to a handle client, a log
// or a metric.
func (e *env) secrets() map[string]string {
	m := map[string]string{"AppSecret A": secretA, "AppSecret B": secretB,
		"key shop": keyShop, "key other": keyOther, "key tool": keyReal}
	for i, tok := range e.seen.all() {
		m[fmt.Sprintf("real token #%d", i)] = tok
	}
	return m
}

// assertNoLeak fails if any secret appears in any of the texts.
func (e *env) assertNoLeak(where string, texts ...string) {
	e.t.Helper()
	for name, s := range e.secrets() {
		for _, txt := range texts {
			if strings.Contains(txt, s) {
				e.t.Errorf("%s contains the %s", where, name)
				break
			}
		}
	}
}

func scrapeMetrics(t testing.TB) string {
	t.Helper()
	rec := httptest.NewRecorder()
	metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// wxAnswer is a WeChat JSON answer.
type wxAnswer struct {
	ErrCode     int    `json:"errcode"`
	ErrMsg      string `json:"errmsg"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	OpenID      string `json:"openid"`
	raw         string
}

// get calls the gateway (or any URL) and decodes a WeChat answer.
func get(t testing.TB, hc *http.Client, u string) wxAnswer {
	t.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", redact(u), err)
	}
	return decodeAnswer(t, resp)
}

func post(t testing.TB, hc *http.Client, u, ctype, body string) wxAnswer {
	t.Helper()
	resp, err := hc.Post(u, ctype, strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", redact(u), err)
	}
	return decodeAnswer(t, resp)
}

func decodeAnswer(t testing.TB, resp *http.Response) wxAnswer {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var a wxAnswer
	if resp.StatusCode != 200 {
		t.Fatalf("HTTP %d: %s", resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("not JSON: %q", b)
	}
	a.raw = string(b)
	return a
}

func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "?"
	}
	return p.Path
}

func tokenURL(base, appid, key string) string {
	return base + "/cgi-bin/token?grant_type=client_credential&appid=" + appid + "&secret=" + url.QueryEscape(key)
}

// relayed returns the requests that reached WeChat other than the
// holder's own token fetches.
func (e *env) relayed() []arrival {
	var out []arrival
	for _, a := range e.wechat.all() {
		if a.Path != wechatsim.PathToken && a.Path != wechatsim.PathStableToken {
			out = append(out, a)
		}
	}
	return out
}

// namedTarget is a request target and the name of its subtest.
type namedTarget struct{ name, target string }

// getRefused GETs each target in a subtest and wants 48001 with msg and
// WeChat's rid in the errmsg (want says what the refusal is for), then
// that none of them reached WeChat.
func (e *env) getRefused(t *testing.T, hc *http.Client, targets []namedTarget, msg, want string) {
	t.Helper()
	for _, tt := range targets {
		t.Run(tt.name, func(t *testing.T) {
			a := get(t, hc, e.url+tt.target)
			if a.ErrCode != 48001 || !strings.Contains(a.ErrMsg, msg) || !strings.Contains(a.ErrMsg, " rid: ") {
				t.Fatalf("answer %s, want 48001: %s", a.raw, want)
			}
		})
	}
	if got := e.relayed(); len(got) != 0 {
		t.Fatalf("%d refused calls reached WeChat, first %s", len(got), got[0].Path)
	}
}

// callLines returns the gateway's debug lines for the calls it answered
// for client with errcode.
func (e *env) callLines(client, errcode string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(e.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		if m["msg"] == "gateway call" && m["client"] == client && m["errcode"] == errcode {
			out = append(out, m)
		}
	}
	return out
}
