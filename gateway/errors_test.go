package gateway_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// TestWeChatShapedRefusals: what the gateway refuses it answers the way
// WeChat would, so SDKs report it as usual; none of it reaches WeChat.
func TestWeChatShapedRefusals(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	hc := &http.Client{}
	shopB := get(t, hc, tokenURL(e.url, appB, keyShop)).AccessToken
	otherB := get(t, hc, tokenURL(e.url, appB, keyOther)).AccessToken
	if shopB == "" || otherB == "" || shopB == otherB {
		t.Fatalf("handles %q %q: want two different ones", shopB, otherB)
	}
	e.sim.ResetStats()
	tests := []struct {
		name, method, url, body string
		code                    int
	}{
		{"wrong key", "GET", tokenURL(e.url, appA, "not-a-client-key-at-all"), "", 40125},
		{"the AppSecret is not a client key", "GET", tokenURL(e.url, appA, secretA), "", 40125},
		{"an app the client may not use", "GET", tokenURL(e.url, appA, keyOther), "", 40125},
		{"unknown appid", "GET", tokenURL(e.url, "wxnotconfigured01", keyShop), "", 40013},
		{"bad grant_type", "GET", e.url + "/cgi-bin/token?grant_type=password&appid=" + appA + "&secret=" + keyShop, "", 40002},
		{"no grant_type", "GET", e.url + "/cgi-bin/token?appid=" + appA + "&secret=" + keyShop, "", 40002},
		{"stable_token by GET", "GET", e.url + "/cgi-bin/stable_token", "", 43002},
		{"stable_token not JSON", "POST", e.url + "/cgi-bin/stable_token", "grant_type=client_credential", 47001},
		{"stable_token wrong key", "POST", e.url + "/cgi-bin/stable_token", `{"grant_type":"client_credential","appid":"` + appA + `","secret":"nope-nope-nope-nope"}`, 40125},
		{"a path the client may not call", "GET", e.url + "/cgi-bin/getcallbackip?access_token=" + otherB, "", 48001},
		{"not a handle", "GET", e.url + "/cgi-bin/user/info?access_token=made-up&openid=" + openID, "", 40001},
		{"no access_token", "GET", e.url + "/cgi-bin/user/info?openid=" + openID, "", 41001},
		{"oauth with a wrong key", "GET", e.url + "/sns/oauth2/access_token?appid=" + appA + "&secret=wrong-wrong-wrong-wrong&code=c&grant_type=authorization_code", "", 40125},
		{"oauth with an unknown app", "GET", e.url + "/sns/oauth2/access_token?appid=wxnope00000000001&secret=" + keyShop + "&code=c&grant_type=authorization_code", "", 40013},
		{"oauth on a path the client may not call", "GET", e.url + "/sns/oauth2/access_token?appid=" + appB + "&secret=" + keyOther + "&code=c&grant_type=authorization_code", "", 48001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a wxAnswer
			if tt.method == "GET" {
				a = get(t, hc, tt.url)
			} else {
				a = post(t, hc, tt.url, "application/json", tt.body)
			}
			if a.ErrCode != tt.code || !strings.Contains(a.ErrMsg, " rid: ") || a.AccessToken != "" {
				t.Fatalf("answer %s, want errcode %d with a rid", a.raw, tt.code)
			}
		})
	}
	st := e.sim.Stats()
	for path, byApp := range st.Calls {
		for _, n := range byApp {
			if n > 0 {
				t.Errorf("a refused call reached WeChat: %s", path)
			}
		}
	}
	// The allowed path for the same client works.
	if a := get(t, hc, e.url+"/cgi-bin/user/info?access_token="+otherB+"&openid="+openID); a.ErrCode != 0 || a.OpenID != openID {
		t.Fatalf("allowed path: %s", a.raw)
	}
	e.assertNoLeak("the logs", e.logs.String())
}

// TestPostAnsweredMinusOneIsNotRetried: a POST that may have reached
// WeChat is never repeated (a message must not be sent twice); a GET is.
func TestPostAnsweredMinusOneIsNotRetried(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	hc := &http.Client{}
	h := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken

	e.sim.ResetStats()
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathUserInfoBatch, ErrCode: -1, Count: 1}); err != nil {
		t.Fatal(err)
	}
	a := post(t, hc, e.url+wechatsim.PathUserInfoBatch+"?access_token="+h, "application/json", `{"user_list":[{"openid":"`+openID+`"}]}`)
	if a.ErrCode != -1 {
		t.Fatalf("POST answered %s, want WeChat's -1 passed through", a.raw)
	}
	if n := e.sim.Stats().CallCount(wechatsim.PathUserInfoBatch, appA); n != 1 {
		t.Fatalf("WeChat got the POST %d times, want 1", n)
	}

	if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathUserInfo, ErrCode: -1, Count: 2}); err != nil {
		t.Fatal(err)
	}
	a = get(t, hc, e.url+wechatsim.PathUserInfo+"?access_token="+h+"&openid="+openID)
	if a.ErrCode != 0 || a.OpenID != openID {
		t.Fatalf("GET after two -1: %s, want the third attempt's success", a.raw)
	}
	if n := e.sim.Stats().CallCount(wechatsim.PathUserInfo, appA); n != 3 {
		t.Fatalf("WeChat got the GET %d times, want 3", n)
	}
}

// TestOAuthExchangeWithoutTheAppSecret: the business sends its client key
// as `secret`; WeChat gets the AppSecret. The user's token passes through
// for /sns/userinfo and is never logged.
func TestOAuthExchangeWithoutTheAppSecret(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	hc := &http.Client{}
	if err := e.sim.AddSNSUser(appA, wechatsim.Follower{OpenID: "oSNSUser01", Nickname: "Ann"}); err != nil {
		t.Fatal(err)
	}
	code, err := e.sim.IssueCode(appA, "oSNSUser01", "snsapi_userinfo")
	if err != nil {
		t.Fatal(err)
	}
	e.sim.ResetStats()
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathOAuthToken, ErrCode: -1, Count: 1}); err != nil {
		t.Fatal(err)
	}
	ex := e.url + "/sns/oauth2/access_token?appid=" + appA + "&secret=" + keyShop + "&code=" + url.QueryEscape(code) + "&grant_type=authorization_code"
	if a := get(t, hc, ex); a.ErrCode != -1 {
		t.Fatalf("exchange under a -1 fault: %s", a.raw)
	}
	if n := e.sim.Stats().CallCount(wechatsim.PathOAuthToken, appA); n != 1 {
		t.Fatalf("the code exchange reached WeChat %d times, want 1 (a code is used up even by -1)", n)
	}
	code, err = e.sim.IssueCode(appA, "oSNSUser01", "snsapi_userinfo")
	if err != nil {
		t.Fatal(err)
	}
	ex = e.url + "/sns/oauth2/access_token?appid=" + appA + "&secret=" + keyShop + "&code=" + url.QueryEscape(code) + "&grant_type=authorization_code"
	a := get(t, hc, ex)
	if a.ErrCode != 0 || a.OpenID != "oSNSUser01" || a.AccessToken == "" {
		t.Fatalf("exchange: %s", a.raw)
	}
	ui := get(t, hc, e.url+"/sns/userinfo?access_token="+url.QueryEscape(a.AccessToken)+"&openid=oSNSUser01&lang=zh_CN")
	if ui.ErrCode != 0 || !strings.Contains(ui.raw, "Ann") {
		t.Fatalf("sns/userinfo: %s", ui.raw)
	}
	logs := e.logs.String()
	for what, s := range map[string]string{"user token": a.AccessToken, "code": code} {
		if strings.Contains(logs, s) {
			t.Errorf("the logs contain the %s", what)
		}
	}
	e.assertNoLeak("the logs", logs)
	e.assertNoLeak("the metrics", scrapeMetrics(t))
}

// TestRealTokenClient: a client allowed the real token gets WeChat's
// token itself, and may relay with it.
func TestRealTokenClient(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	hc := &http.Client{}
	a := get(t, hc, tokenURL(e.url, appA, keyReal))
	if a.ErrCode != 0 || a.AccessToken != e.sim.ValidToken(appA) {
		t.Fatalf("real-token client got %s", a.raw)
	}
	if a.ExpiresIn < 7000 || a.ExpiresIn > 7200 {
		t.Fatalf("expires_in %d, want the real remaining life (~7200)", a.ExpiresIn)
	}
	if u := get(t, hc, e.url+"/cgi-bin/user/info?access_token="+a.AccessToken+"&openid="+openID); u.ErrCode != 0 {
		t.Fatalf("relay with the real token: %s", u.raw)
	}
	h := get(t, hc, tokenURL(e.url, appA, keyShop))
	if h.AccessToken == a.AccessToken || !strings.HasPrefix(h.AccessToken, "wxh1_") {
		t.Fatalf("a handle client got %q", h.AccessToken)
	}
}

// TestClientRateLimit: over its rate a client is told to slow down with
// WeChat's minute-quota error.
func TestClientRateLimit(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(c *gateway.Config) {
		c.Clients[0].Rate, c.Clients[0].Burst = 0.001, 2
	})
	hc := &http.Client{}
	for i, want := range []int{0, 0, 45011} {
		if a := get(t, hc, tokenURL(e.url, appA, keyShop)); a.ErrCode != want {
			t.Fatalf("call %d: %s, want errcode %d", i+1, a.raw, want)
		}
	}
	if a := get(t, hc, tokenURL(e.url, appB, keyOther)); a.ErrCode != 0 {
		t.Fatalf("another client is not limited: %s", a.raw)
	}
}
