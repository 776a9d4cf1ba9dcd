package weblogin_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/gateway/weblogin"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

func get(t *testing.T, u string) (*http.Response, string) {
	t.Helper()
	resp, err := noFollow().Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (e *loginEnv) authorize(q url.Values) string {
	return e.front.URL + weblogin.PathAuthorize + "?" + q.Encode()
}

func TestAuthorizeRedirectsToWeChatInItsOrder(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	cases := []struct {
		appid, scope, path, wantScope string
	}{
		{e.demoApp.AppID, "snsapi_userinfo", "/connect/oauth2/authorize", "snsapi_userinfo"},
		{e.demoApp.AppID, "snsapi_base", "/connect/oauth2/authorize", "snsapi_base"},
		{websiteApp, "", "/connect/qrconnect", "snsapi_login"},
		{websiteApp, "snsapi_login", "/connect/qrconnect", "snsapi_login"},
	}
	for _, c := range cases {
		resp, body := get(t, e.authorize(url.Values{"appid": {c.appid}, "scope": {c.scope}, "return_to": {e.demoURL + "done?x=1"}, "state": {"biz-42"}}))
		loc := resp.Header.Get("Location")
		re := regexp.MustCompile(`^` + regexp.QuoteMeta(e.simURL+c.path) + `\?appid=` + c.appid +
			`&redirect_uri=` + regexp.QuoteMeta(url.QueryEscape(e.front.URL+"/oauth/callback")) +
			`&response_type=code&scope=` + c.wantScope + `&state=([A-Za-z0-9]{16,128})#wechat_redirect$`)
		m := re.FindStringSubmatch(loc)
		if resp.StatusCode != http.StatusFound || m == nil {
			t.Fatalf("%s %q: %d Location %q, want WeChat's URL in its order with #wechat_redirect\n%s", c.appid, c.scope, resp.StatusCode, loc, body)
		}
		// The nonce is stored server-side with everything the callback needs.
		entry, err := e.states.Get(context.Background(), m[1])
		if err != nil {
			t.Fatalf("state %s not stored: %v", m[1], err)
		}
		var st weblogin.State
		if err := json.Unmarshal(entry.Value(), &st); err != nil {
			t.Fatal(err)
		}
		if st.AppID != c.appid || st.Scope != c.wantScope || st.ReturnTo != e.demoURL+"done?x=1" || st.State != "biz-42" || st.CreatedAt.IsZero() {
			t.Fatalf("stored state %+v", st)
		}
	}
}

func TestAuthorizeRefusesWithAPlain400(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	app := e.demoApp.AppID
	ok := e.demoURL
	host := strings.TrimPrefix(e.front.URL, "http://")
	cases := []struct {
		name              string
		appid, scope, rt  string
		state, wantInBody string
	}{
		{"no appid", "", "snsapi_base", ok, "", "appid is required"},
		{"unknown app", "wxunknown", "snsapi_base", ok, "", `unknown app &#34;wxunknown&#34;`},
		{"bad scope", app, "snsapi_all", ok, "", "bad scope"},
		{"no scope", app, "", ok, "", "bad scope"},
		{"login scope on an official account", app, "snsapi_login", ok, "", "bad scope"},
		{"userinfo scope on a website app", websiteApp, "snsapi_userinfo", ok, "", "bad scope"},
		{"no return_to", app, "snsapi_base", "", "", "return_to is required"},
		{"other origin", app, "snsapi_base", "http://evil.example.com/demo/", "", "not on this app&#39;s allow-list"},
		{"other port", app, "snsapi_base", "http://127.0.0.1:1/demo/", "", "allow-list"},
		{"other scheme", app, "snsapi_base", "https://" + host + "/demo/", "", "allow-list"},
		{"outside the path prefix", app, "snsapi_base", e.front.URL + "/admin", "", "allow-list"},
		{"prefix look-alike", app, "snsapi_base", e.front.URL + "/shop/loginx", "", "allow-list"},
		{"dot segments", app, "snsapi_base", e.demoURL + "../admin", "", "segments"},
		{"encoded dot segments", app, "snsapi_base", e.demoURL + "%2e%2e/admin", "", "segments"},
		{"scheme-relative", app, "snsapi_base", "//evil.example.com/demo/", "", "absolute"},
		{"javascript", app, "snsapi_base", "javascript:alert(1)", "", "absolute"},
		{"user info", app, "snsapi_base", "http://x@" + host + "/demo/", "", "user info"},
		{"state too long", app, "snsapi_base", ok, strings.Repeat("s", 513), "longer than 512"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := get(t, e.authorize(url.Values{"appid": {c.appid}, "scope": {c.scope}, "return_to": {c.rt}, "state": {c.state}}))
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, c.wantInBody) || resp.Header.Get("Location") != "" {
				t.Fatalf("%d, want 400 saying %q:\n%s", resp.StatusCode, c.wantInBody, body)
			}
		})
	}
	keys, err := e.states.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys.Keys() {
		t.Errorf("a refused authorize stored state %s", k)
	}
	// The allowed ones pass: sub-paths of the prefix, and the prefix itself.
	for _, rt := range []string{e.demoURL, e.demoURL + "a/b?c=d", e.front.URL + "/shop/login", e.front.URL + "/shop/login/next"} {
		if resp, body := get(t, e.authorize(url.Values{"appid": {app}, "scope": {"snsapi_base"}, "return_to": {rt}})); resp.StatusCode != http.StatusFound {
			t.Errorf("return_to %s: %d\n%s", rt, resp.StatusCode, body)
		}
	}
}

// login runs authorize → simulator (snsapi_base: silent) in a fresh
// browser and returns the callback URL the simulator sent it to, not yet
// opened, and the browser (which holds the login cookie).
func (e *loginEnv) login(t *testing.T, scope, returnTo, state string) (string, *agent) {
	t.Helper()
	b := newAgent(t)
	resp, body := b.get(t, e.authorize(url.Values{"appid": {e.demoApp.AppID}, "scope": {scope}, "return_to": {returnTo}, "state": {state}}))
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: %d\n%s", resp.StatusCode, body)
	}
	resp, body = b.get(t, resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("simulator authorize: %d\n%s", resp.StatusCode, body)
	}
	return resp.Header.Get("Location"), b
}

// storedState reads the State kept under nonce without taking it.
func (e *loginEnv) storedState(t *testing.T, nonce string) weblogin.State {
	t.Helper()
	entry, err := e.states.Get(context.Background(), nonce)
	if err != nil {
		t.Fatalf("state %s: %v", nonce, err)
	}
	var st weblogin.State
	if err := json.Unmarshal(entry.Value(), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func query(t *testing.T, loc string) url.Values {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query()
}

func TestCallbackExchangesOnceThenRefusesReplays(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	cbURL, b := e.login(t, "snsapi_base", e.demoURL+"done?keep=1", "biz-1")
	nonce := query(t, cbURL).Get("state")
	if !strings.HasPrefix(cbURL, e.front.URL+"/oauth/callback?code=") {
		t.Fatalf("simulator sent the browser to %q", cbURL)
	}
	jobID := e.storedState(t, nonce).JobID

	resp, body := b.get(t, cbURL)
	loc := resp.Header.Get("Location")
	q := query(t, loc)
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, e.demoURL+"done?") ||
		q.Get("wxhub_job") != jobID || q.Get("state") != "biz-1" || q.Get("keep") != "1" || q.Has("error") {
		t.Fatalf("callback: %d Location %q\n%s", resp.StatusCode, loc, body)
	}
	if n, x := e.jobsPublished(t), e.exchanges(); n != 1 || x != 1 {
		t.Fatalf("after one login: %d jobs, %d exchanges; want 1 and 1", n, x)
	}

	// A reload (or a replay by anyone who saw the URL): the nonce is gone.
	for range 3 {
		resp, body := b.get(t, cbURL)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "already used") {
			t.Fatalf("replayed callback: %d\n%s", resp.StatusCode, body)
		}
	}
	if n, x := e.jobsPublished(t), e.exchanges(); n != 1 || x != 1 {
		t.Fatalf("after replays: %d jobs, %d exchanges; want still 1 and 1", n, x)
	}
}

func TestCallbackForgedOrTamperedStateIs400WithoutAJob(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	cbURL, b := e.login(t, "snsapi_base", e.demoURL, "")
	q := query(t, cbURL)
	nonce := []byte(q.Get("state"))
	nonce[0] ^= 1 // one character off
	for _, state := range []string{string(nonce), "", "Forged0000000000000000000A", "a.b", strings.Repeat("A", 200)} {
		resp, body := b.get(t, e.front.URL+"/oauth/callback?"+url.Values{"code": {q.Get("code")}, "state": {state}}.Encode())
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("state %q: %d\n%s", state, resp.StatusCode, body)
		}
	}
	if n, x := e.jobsPublished(t), e.exchanges(); n != 0 || x != 0 {
		t.Fatalf("forged states published %d jobs and made %d exchanges", n, x)
	}
	// The genuine callback still works once.
	if resp, _ := b.get(t, cbURL); resp.StatusCode != http.StatusFound || query(t, resp.Header.Get("Location")).Has("error") {
		t.Fatalf("genuine callback after forgeries: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestCallbackWithoutCodeIsAccessDenied(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	cbURL, b := e.login(t, "snsapi_base", e.demoURL, "biz-9")
	nonce := query(t, cbURL).Get("state")
	resp, _ := b.get(t, e.front.URL+"/oauth/callback?state="+nonce) // WeChat's answer to a refusal
	q := query(t, resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || q.Get("error") != weblogin.ErrorAccessDenied || q.Get("state") != "biz-9" || q.Has("wxhub_job") {
		t.Fatalf("refusal: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if n := e.jobsPublished(t); n != 0 {
		t.Fatalf("a refusal published %d jobs", n)
	}
	if resp, _ := b.get(t, cbURL); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("the refused login's nonce worked afterwards: %d", resp.StatusCode)
	}
}

func TestCallbackReportsAFailedJob(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	cbURL, b := e.login(t, "snsapi_base", e.demoURL, "biz-2")
	q := query(t, cbURL)
	jobID := e.storedState(t, q.Get("state")).JobID
	// The code was exchanged elsewhere first: WeChat answers 40163.
	if _, err := (&http.Client{}).Get(e.simURL + wechatsim.PathOAuthToken + "?" + url.Values{"appid": {e.demoApp.AppID}, "secret": {e.demoApp.Secret}, "code": {q.Get("code")}, "grant_type": {"authorization_code"}}.Encode()); err != nil {
		t.Fatal(err)
	}
	resp, _ := b.get(t, cbURL)
	rq := query(t, resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || rq.Get("error") != "wechat" || rq.Get("wxhub_job") != jobID || rq.Get("state") != "biz-2" {
		t.Fatalf("failed job: %d %q; want error=wechat with wxhub_job and state", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestCallbackTimesOutBoundedAndSaysSo(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{wait: 300 * time.Millisecond})
	cbURL, b := e.login(t, "snsapi_base", e.demoURL, "biz-3")
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathOAuthToken, DelayMS: 3000, Count: 1}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, _ := b.get(t, cbURL)
	took := time.Since(start)
	q := query(t, resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || q.Get("error") != weblogin.ErrorTimeout || q.Get("wxhub_job") == "" || q.Get("state") != "biz-3" {
		t.Fatalf("slow job: %d %q; want error=timeout with wxhub_job", resp.StatusCode, resp.Header.Get("Location"))
	}
	if took > 2500*time.Millisecond {
		t.Fatalf("the callback waited %v with a 300 ms bound", took)
	}
	// The job goes on without the browser and ends in one result.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := e.nats.JS.Stream(ctx, "WX_RESULTS")
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Next(jetstream.FetchMaxWait(20 * time.Second))
	if err != nil {
		t.Fatalf("no result for the timed-out job: %v", err)
	}
	if !strings.Contains(string(m.Data()), q.Get("wxhub_job")) {
		t.Fatalf("result %s is not for job %s", m.Data(), q.Get("wxhub_job"))
	}
}

// The consent page's form, answered over HTTP: returns the simulator's
// redirect (to the callback).
func consent(t *testing.T, consentURL string, cookies []*http.Cookie, action string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, consentURL, nil)
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := noFollow().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="ticket" value="([^"]+)"`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("no consent form at %s: %d\n%s", consentURL, resp.StatusCode, b)
	}
	reply, _ := url.Parse(consentURL)
	reply.Path, reply.RawQuery = wechatsim.PathConnectReply, ""
	resp, err = noFollow().PostForm(reply.String(), url.Values{"ticket": {m[1]}, "action": {action}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("Location")
}

func TestWebsiteAppLoginThroughQRConnectGetsTheProfile(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	profile := e.profiles(t)
	if err := e.sim.LogIn(websiteApp, wechatsim.LoggedInUser{OpenID: "oWeb_user1"}); err != nil {
		t.Fatal(err)
	}
	b := newAgent(t)
	resp, _ := b.get(t, e.authorize(url.Values{"appid": {websiteApp}, "return_to": {e.demoURL}, "state": {"w1"}}))
	cbURL := consent(t, resp.Header.Get("Location"), nil, "allow")
	resp, _ = b.get(t, cbURL)
	q := query(t, resp.Header.Get("Location"))
	if q.Has("error") || q.Get("wxhub_job") == "" {
		t.Fatalf("website login: %q", resp.Header.Get("Location"))
	}
	p := profile(q.Get("wxhub_job"))
	if p.OpenID != "oWeb_user1" || p.Scope != "snsapi_login" || p.Nickname != "网站用户" {
		t.Fatalf("profile %+v: want the website user's nickname (snsapi_login entitles sns/userinfo)", p)
	}
}

// "A snapshot-page visitor: virtual openid, is_snapshotuser 1 in user.profile".
func TestSnapshotUserProfileIsMarked(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	profile := e.profiles(t)
	b := newAgent(t)
	resp, _ := b.get(t, e.authorize(url.Values{"appid": {e.demoApp.AppID}, "scope": {"snsapi_userinfo"}, "return_to": {e.demoURL}}))
	req, _ := http.NewRequest(http.MethodGet, resp.Header.Get("Location"), nil)
	req.AddCookie(&http.Cookie{Name: wechatsim.CookieOpenID, Value: e.demoApp.OpenIDs[1]})
	req.AddCookie(&http.Cookie{Name: wechatsim.CookieSnapshot, Value: "1"})
	resp, err := noFollow().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("snapshot visitor: %d, want a silent redirect", resp.StatusCode)
	}
	resp, _ = b.get(t, resp.Header.Get("Location"))
	q := query(t, resp.Header.Get("Location"))
	p := profile(q.Get("wxhub_job"))
	if p.IsSnapshotUser != 1 || p.OpenID != wechatsim.VirtualOpenID(e.demoApp.AppID, e.demoApp.OpenIDs[1]) || p.Nickname != "" {
		t.Fatalf("profile %+v: want is_snapshotuser 1, the virtual openid and no profile fields", p)
	}
}

// The business's own check, as the demo page does it: a finished login
// passed off on another browser (login CSRF) carries a state that browser
// was never given, so the page refuses it and shows no profile.
func TestDemoPageRefusesALoginStartedElsewhere(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	// The attacker starts and finishes a login in their own browser, but
	// stops before opening the final URL...
	cbURL, b := e.login(t, "snsapi_base", e.demoURL, "attacker-state")
	resp, _ := b.get(t, cbURL)
	final := resp.Header.Get("Location")
	if !strings.Contains(final, "wxhub_job=") {
		t.Fatalf("attacker's login: %q", final)
	}
	// ...and sends it to the victim, whose browser has no such state.
	resp, body := get(t, final)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="state-check">The state that came back is not the one`) || strings.Contains(body, `id="openid"`) {
		t.Fatalf("the demo page accepted a login started elsewhere:\n%s", body)
	}
}

// TestAuthorizeIsRateLimited: /oauth/authorize stores a state per call,
// so logins started are limited (all browsers together): a burst beyond
// the limit is answered 429 with Retry-After and stores nothing, while a
// bad link still gets its 400 saying what is wrong.
func TestAuthorizeIsRateLimited(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{authorizeRate: 0.001, authorizeBurst: 2}) // no refill within the test
	start := e.authorize(url.Values{"appid": {e.demoApp.AppID}, "scope": {"snsapi_base"}, "return_to": {e.demoURL}})
	for i, want := range []int{http.StatusFound, http.StatusFound, http.StatusTooManyRequests, http.StatusTooManyRequests, http.StatusTooManyRequests} {
		resp, body := get(t, start)
		if resp.StatusCode != want {
			t.Fatalf("call %d: %d, want %d\n%s", i+1, resp.StatusCode, want, body)
		}
		if want == http.StatusTooManyRequests && (resp.Header.Get("Retry-After") == "" || resp.Header.Get("Location") != "" || !strings.Contains(body, "too many logins")) {
			t.Fatalf("call %d: Retry-After %q, Location %q\n%s", i+1, resp.Header.Get("Retry-After"), resp.Header.Get("Location"), body)
		}
	}
	if resp, body := get(t, e.authorize(url.Values{"appid": {e.demoApp.AppID}, "scope": {"snsapi_all"}, "return_to": {e.demoURL}})); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a bad link over the limit: %d, want its 400\n%s", resp.StatusCode, body)
	}
	keys, err := e.states.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range keys.Keys() {
		n++
	}
	if n != 2 {
		t.Fatalf("%d states stored, want the 2 within the burst", n)
	}
}

func TestConfigRefusesANegativeAuthorizeRate(t *testing.T) {
	_, err := weblogin.New(weblogin.Config{States: &weblogin.StateStore{}, Jobs: noJobs{}, AuthorizeRate: -1})
	if err == nil || !strings.Contains(err.Error(), "AuthorizeRate") {
		t.Fatalf("New: %v, want it to name AuthorizeRate", err)
	}
}

type noJobs struct{}

func (noJobs) RunOAuthJob(context.Context, events.OAuthCodeReceived, string) (weblogin.Outcome, error) {
	return weblogin.Outcome{}, errors.New("no jobs")
}
