package weblogin_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/gateway/weblogin"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

// A gateway stopped while a web-login callback waits for a slow job
// drains it: the drain covers the web login's wait (MountWait), not
// only a relayed call. The code exchange takes longer than the old fixed
// 30 s drain, so the test takes that long.
func TestGatewayStopDrainsAWaitingCallback(t *testing.T) {
	t.Parallel()
	const (
		delay = 32 * time.Second // longer than the old fixed drain
		wait  = 45 * time.Second // the web login's wait: longer than delay
	)
	e := newLoginEnv(t, envOptions{wechatTimeout: 2 * wait})
	jobs, err := weblogin.NewNATSJobs(e.nats.Conn(t), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jobs.Close)
	// A second handler on the same state store, served by a real gateway:
	// the login starts on the env's front, its callback comes here.
	h, err := weblogin.New(weblogin.Config{
		Apps:   []weblogin.App{{AppID: e.demoApp.AppID, CallbackBase: e.front.URL, ReturnTo: []string{e.demoURL}}},
		States: weblogin.NewStateStore(e.states, 0, nil), Jobs: jobs, Wait: wait, Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{
		Tokens: worker.NewTokenCache(quiet()), BaseURL: e.simURL,
		Apps:    []gateway.App{{AppID: e.demoApp.AppID}},
		Clients: []gateway.Client{{Name: "shop", Key: "shop-key-0123456789abcdef", AppIDs: []string{"*"}}},
		Listen:  "127.0.0.1:0", Mount: map[string]http.Handler{"/oauth/": h}, MountWait: wait,
		Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if err := gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- gw.Run(ctx) }()

	published := make(chan *nats.Msg, 1)
	sub, err := e.nats.NC.ChanSubscribe(events.SubjectOAuthCodeReceived, published)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.nats.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	fault := `{"path":"` + wechatsim.PathOAuthToken + `","delay_ms":` + itoa(delay.Milliseconds()) + `,"count":1}`
	resp, err := http.Post(e.simURL+"/_sim/faults", "application/json", strings.NewReader(fault))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST /_sim/faults: %s", resp.Status)
	}

	cbURL, b := e.login(t, "snsapi_base", e.demoURL, "biz-drain")
	cu, _ := url.Parse(cbURL)
	req, err := http.NewRequest(http.MethodGet, gw.URL()+cu.RequestURI(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range b.c.Jar.Cookies(cu) {
		req.AddCookie(c)
	}
	type answer struct {
		resp *http.Response
		err  error
	}
	answered := make(chan answer, 1)
	client := noFollow()
	client.Timeout = 2 * wait
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		answered <- answer{resp, err}
	}()
	select { // the callback published its job: it now waits for the result
	case <-published:
	case a := <-answered:
		t.Fatalf("the callback answered before publishing: %v %v", a.resp, a.err)
	case <-time.After(20 * time.Second):
		t.Fatal("the callback published no job within 20 s")
	}
	stop() // SIGTERM

	a := <-answered
	if a.err != nil {
		t.Fatalf("callback cut by the stop: %v", a.err)
	}
	q := query(t, a.resp.Header.Get("Location"))
	if a.resp.StatusCode != http.StatusFound || q.Get("wxhub_job") == "" || q.Has("error") || q.Get("state") != "biz-drain" {
		t.Fatalf("callback during the stop: %d %q, want a redirect with wxhub_job, the state and no error", a.resp.StatusCode, a.resp.Header.Get("Location"))
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("gateway Run after the stop: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("gateway Run did not return within 10 s of the callback's answer")
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
