package deploy_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/gateway/weblogin"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

// TestWebLoginUnderTheGatewayGrant: the web login (gateway/weblogin) does
// its whole job as the shipped gateway user — state created, read and
// deleted once in wx_login_state, the oauth.code.received job published
// with an ack, the result received — with a real worker as the worker
// user, and no permission violation on either connection.
func TestWebLoginUnderTheGatewayGrant(t *testing.T) {
	t.Parallel()
	s := provisioned(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	gw := connectAs(t, s, grants.Gateway)
	wu := connectAs(t, s, grants.Worker)
	noViolations(t, gw, wu)

	sim := wechatsim.New(wechatsim.WithLogger(slog.New(slog.DiscardHandler)))
	demo := sim.SeedDemo()
	api := httptest.NewServer(sim)
	t.Cleanup(api.Close)
	wc, err := wechat.NewClient(wechat.Config{BaseURL: api.URL, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{Conn: wu.nc, Accounts: true, WeChat: wc, ID: "deploy-weblogin", Logger: slog.New(slog.DiscardHandler),
		Apps: []worker.App{{AppID: demo.AppID, Secret: demo.Secret}}})
	if err != nil {
		t.Fatal(err)
	}
	wxhubtest.Background(t, "worker", w.Run)

	kv, err := gw.js.KeyValue(ctx, events.BucketLoginState)
	if err != nil {
		t.Fatalf("the gateway cannot bind %s: %v", events.BucketLoginState, err)
	}
	jobs, err := weblogin.NewNATSJobs(gw.nc, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jobs.Close)
	front := httptest.NewUnstartedServer(nil)
	front.Start()
	t.Cleanup(front.Close)
	h, err := weblogin.New(weblogin.Config{
		Apps:          []weblogin.App{{AppID: demo.AppID, CallbackBase: front.URL, ReturnTo: []string{front.URL + "/shop/"}}},
		AuthorizeBase: api.URL, States: weblogin.NewStateStore(kv, 0, nil), Jobs: jobs, Wait: 20 * time.Second,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	front.Config.Handler = h

	jar, err := cookiejar.New(nil) // the browser: the login cookie binds the callback to it
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	hop := func(u string, want int) string {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d, want %d\n%s", u, resp.StatusCode, want, b)
		}
		return resp.Header.Get("Location")
	}
	toSim := hop(front.URL+"/oauth/authorize?"+url.Values{"appid": {demo.AppID}, "scope": {"snsapi_base"}, "return_to": {front.URL + "/shop/"}, "state": {"s1"}}.Encode(), http.StatusFound)
	callback := hop(toSim, http.StatusFound) // snsapi_base: silent
	back := hop(callback, http.StatusFound)
	if !strings.HasPrefix(back, front.URL+"/shop/?") || !strings.Contains(back, "wxhub_job=weblogin-") || strings.Contains(back, "error=") {
		t.Fatalf("back on the shop page at %s, want wxhub_job and no error", back)
	}
	hop(callback, http.StatusBadRequest) // used once, also under the grant
}
