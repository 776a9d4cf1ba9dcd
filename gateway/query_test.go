package gateway_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// refusal is a request the front must answer 48001 "query not plain"
// (with why in the errmsg) before anything reads its query.
type refusal struct {
	name, method, target, why string
}

// queryEnv is an env with a stand-in for the web login mounted under
// /oauth/, counting the requests that reach it.
func queryEnv(t *testing.T) (*env, *atomic.Int64) {
	t.Helper()
	var mounted atomic.Int64
	e := startEnv(t, func(c *gateway.Config) {
		c.Mount = map[string]http.Handler{"/oauth/": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mounted.Add(1)
			fmt.Fprint(w, "login")
		})}
	})
	return e, &mounted
}

// unknownPathLabel is the path label of a call counted under the unknown
// client: WeChat's fixed paths by name, anything else "other" (see
// docs/gateway.md, Metrics).
func unknownPathLabel(target string) string {
	p, _, _ := strings.Cut(target, "?")
	switch p {
	case "/cgi-bin/token", "/cgi-bin/stable_token", "/sns/oauth2/access_token", "/sns/jscode2session",
		"/sns/userinfo", "/sns/auth", "/sns/oauth2/refresh_token":
		return p
	}
	return "other"
}

// assertRefused sends every request of tests and checks that each is
// answered 48001 saying why, that none reached WeChat or the mounted
// handler, that each is logged and counted once under the unknown client,
// and that no secret shows in the answers, logs or metrics. The caller
// must not run in parallel with other tests: the metrics are compared
// exactly, and every gateway test shares the registry.
func (e *env) assertRefused(t *testing.T, hc *http.Client, mounted *atomic.Int64, tests []refusal) {
	t.Helper()
	want := map[string]float64{}
	for _, tt := range tests {
		want[fmt.Sprintf(`wxhub_gateway_calls_total{client="unknown",errcode="48001",path=%q}`, unknownPathLabel(tt.target))]++
	}
	before := scrapeMetrics(t)
	relayedBefore, linesBefore := len(e.relayed()), len(e.callLines("unknown", "48001"))
	var answers []string
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a wxAnswer
			if tt.method == "POST" {
				a = post(t, hc, e.url+tt.target, "application/json", `{"user_list":[{"openid":"`+openID+`"}]}`)
			} else {
				a = get(t, hc, e.url+tt.target)
			}
			answers = append(answers, a.raw)
			if a.ErrCode != 48001 || !strings.Contains(a.ErrMsg, "(wxhub gateway: query not plain: "+tt.why) ||
				!strings.Contains(a.ErrMsg, " rid: ") || a.AccessToken != "" || a.OpenID != "" {
				t.Fatalf("answer %s, want 48001 saying the query is not plain: %s", a.raw, tt.why)
			}
		})
	}
	if got := e.relayed()[relayedBefore:]; len(got) != 0 {
		t.Errorf("%d refused calls reached WeChat, first %s %s?%s", len(got), got[0].Method, got[0].Path, redactValues(got[0].Query))
	}
	if n := mounted.Load(); n != 0 {
		t.Errorf("%d refused calls reached the mounted handler", n)
	}
	if n := len(e.callLines("unknown", "48001")) - linesBefore; n != len(tests) {
		t.Errorf("%d refusals logged under the unknown client, want %d", n, len(tests))
	}
	after := scrapeMetrics(t)
	for series, n := range want {
		if got := seriesValue(after, series) - seriesValue(before, series); got != n {
			t.Errorf("%s grew by %v, want %v", series, got, n)
		}
	}
	e.assertNoLeak("the answers", answers...)
	e.assertNoLeak("the logs", e.logs.String())
	e.assertNoLeak("the metrics", after)
}

// redactValues names a query's parameters without their values.
func redactValues(q url.Values) string {
	var names []string
	for k := range q {
		names = append(names, k)
	}
	return strings.Join(names, ",")
}

// TestRepeatedParametersAreRefused: the gateway reads the first of a
// repeated parameter, WeChat or a proxy between them may read another.
// A query giving a parameter the gateway reads or rewrites (readParams:
// access_token, secret, appid, grant_type, code, js_code, and the web
// login's state, scope, return_to) more than once is answered 48001
// before any routing: no token attached, no key checked or swapped for
// the AppSecret, nothing forwarded. Without the check, an empty first
// secret hid a client key, and a user's token a handle, from the gateway,
// and both went on to WeChat. Other parameters may repeat.
//
// Not parallel: it compares the metrics exactly.
func TestRepeatedParametersAreRefused(t *testing.T) {
	e, mounted := queryEnv(t)
	hc := &http.Client{}
	h := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken
	hOther := get(t, hc, tokenURL(e.url, appB, keyOther)).AccessToken
	if h == "" || hOther == "" {
		t.Fatal("no handles")
	}
	key := url.QueryEscape(keyShop)
	exchange := "/sns/oauth2/access_token?appid=" + appA + "&secret=" + key + "&code=c1&grant_type=authorization_code"
	mini := "/sns/jscode2session?appid=" + appA + "&secret=" + key + "&js_code=j1&grant_type=authorization_code"
	tokenAt := "/cgi-bin/token?grant_type=client_credential&appid=" + appA + "&secret=" + key
	userInfo := "/cgi-bin/user/info?openid=" + openID
	tests := []refusal{
		{"a handle behind a user's token on a /sns path", "GET", "/sns/userinfo?access_token=user-token&openid=o1&access_token=" + h, "access_token more than once"},
		{"a handle behind an empty access_token on a /sns path", "GET", "/sns/auth?access_token=&openid=o1&access_token=" + h, "access_token more than once"},
		{"a client key behind an empty secret on a /sns path", "GET", "/sns/userinfo?access_token=user-token&openid=o1&secret=&secret=" + key, "secret more than once"},
		{"a client key behind an empty secret on jscode2session", "GET", "/sns/jscode2session?appid=" + appA + "&secret=&secret=" + key + "&js_code=j1&grant_type=authorization_code", "secret more than once"},
		{"two handles on a relayed call", "GET", userInfo + "&access_token=" + h + "&access_token=" + hOther, "access_token more than once"},
		{"a made-up token before a handle", "GET", userInfo + "&access_token=made-up&access_token=" + h, "access_token more than once"},
		{"a repeated access_token without a value", "GET", userInfo + "&access_token=" + h + "&access_token", "access_token more than once"},
		{"two access_tokens on a POST", "POST", wechatsim.PathUserInfoBatch + "?access_token=" + h + "&access_token=" + h, "access_token more than once"},
		{"two secrets on the token endpoint", "GET", tokenAt + "&secret=" + url.QueryEscape(keyOther), "secret more than once"},
		{"two appids on the token endpoint", "GET", tokenAt + "&appid=" + appB, "appid more than once"},
		{"two grant_types on the token endpoint", "GET", tokenAt + "&grant_type=password", "grant_type more than once"},
		{"two appids on an OAuth exchange", "GET", exchange + "&appid=" + appB, "appid more than once"},
		{"two secrets on an OAuth exchange", "GET", exchange + "&secret=" + url.QueryEscape(keyOther), "secret more than once"},
		{"two codes on an OAuth exchange", "GET", exchange + "&code=c2", "code more than once"},
		{"two grant_types on an OAuth exchange", "GET", exchange + "&grant_type=refresh_token", "grant_type more than once"},
		{"two js_codes on jscode2session", "GET", mini + "&js_code=j2", "js_code more than once"},
		{"two appids on jscode2session", "GET", mini + "&appid=" + appB, "appid more than once"},
		{"two states on the web login's callback", "GET", "/oauth/callback?code=c1&state=s1&state=s2", "state more than once"},
		{"two codes on the web login's callback", "GET", "/oauth/callback?code=c1&state=s1&code=c2", "code more than once"},
		{"two return_tos on the web login", "GET", "/oauth/authorize?appid=" + appA + "&scope=snsapi_base&return_to=https%3A%2F%2Fshop.example%2F&return_to=https%3A%2F%2Fevil.example%2F", "return_to more than once"},
		{"two scopes on the web login", "GET", "/oauth/authorize?appid=" + appA + "&scope=snsapi_base&scope=snsapi_userinfo", "scope more than once"},
		{"a repeated name on a path the gateway serves itself", "GET", "/healthz?appid=" + appA + "&appid=" + appB, "appid more than once"},
	}
	e.assertRefused(t, hc, mounted, tests)

	// Parameters the gateway neither reads nor rewrites may repeat: they
	// reach WeChat as sent.
	before := len(e.relayed())
	if a := get(t, hc, e.url+userInfo+"&lang=zh_CN&lang=en&access_token="+h); a.ErrCode != 0 || a.OpenID != openID {
		t.Fatalf("a repeated lang on a relayed call: %s", a.raw)
	}
	if a := get(t, hc, e.url+"/sns/auth?access_token=user-token&openid=o1&openid=o2"); a.ErrCode == 48001 {
		t.Fatalf("a repeated openid on a /sns path: %s", a.raw)
	}
	got := e.relayed()[before:]
	if len(got) != 2 || len(got[0].Query["lang"]) != 2 || len(got[1].Query["openid"]) != 2 {
		t.Fatalf("repeated harmless parameters: %d calls reached WeChat, want 2 with both values", len(got))
	}
	if a := get(t, hc, e.url+tokenAt+"&x=1&x=2"); a.ErrCode != 0 || a.AccessToken != h {
		t.Fatalf("a repeated unread parameter on the token endpoint: errcode %d", a.ErrCode)
	}
	e.assertNoLeak("the logs", e.logs.String())
}

// TestSemicolonInQueryIsRefused: the gateway splits the query on '&'
// only (and Go's url.ParseQuery drops a pair with a ';'), while some
// servers and proxies split on ';' too. A query with a raw ';' is
// answered 48001 before any routing. Without the check, "openid=o1;
// secret=K" on a /sns path reached WeChat with the client key, a handle
// after a ';' reached it too, and a relayed call was answered 41001 (no
// access_token) or forwarded with the ';' for WeChat to make sense of.
// An escaped ';' (%3B) in a value is fine.
//
// Not parallel: it compares the metrics exactly.
func TestSemicolonInQueryIsRefused(t *testing.T) {
	e, mounted := queryEnv(t)
	hc := &http.Client{}
	h := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken
	if h == "" {
		t.Fatal("no handle")
	}
	key := url.QueryEscape(keyShop)
	const why = "a ';' in the query"
	tests := []refusal{
		{"a client key after a ';' on a /sns path", "GET", "/sns/userinfo?access_token=user-token&openid=o1;secret=" + key, why},
		{"a handle after a ';' on a /sns path", "GET", "/sns/auth?openid=o1;access_token=" + h, why},
		{"a handle after a ';' on a relayed call", "GET", "/cgi-bin/user/info?openid=" + openID + ";access_token=" + h, why},
		{"a ';' in a value of a relayed call", "GET", "/cgi-bin/user/info?access_token=" + h + "&openid=" + openID + ";lang=en", why},
		{"a trailing ';'", "GET", "/cgi-bin/user/info?openid=" + openID + "&access_token=" + h + ";", why},
		{"a ';' on a POST", "POST", wechatsim.PathUserInfoBatch + "?access_token=" + h + ";x=1", why},
		{"a ';' on the token endpoint", "GET", "/cgi-bin/token?grant_type=client_credential&appid=" + appA + ";secret=" + key, why},
		{"a ';' after the key on the token endpoint", "GET", "/cgi-bin/token?grant_type=client_credential&appid=" + appA + "&secret=" + key + ";appid=" + appB, why},
		{"a ';' on an OAuth exchange", "GET", "/sns/oauth2/access_token?appid=" + appA + "&secret=" + key + ";code=c1&grant_type=authorization_code", why},
		{"a ';' on jscode2session", "GET", "/sns/jscode2session?appid=" + appA + "&js_code=j1;secret=" + key + "&grant_type=authorization_code", why},
		{"a ';' on the web login", "GET", "/oauth/authorize?appid=" + appA + ";return_to=https://evil.example/", why},
		{"a ';' beside an escaped name", "GET", "/cgi-bin/user/info?openid=" + openID + ";access%5Ftoken=" + h, why},
	}
	e.assertRefused(t, hc, mounted, tests)

	// An escaped ';' in a value reaches WeChat as sent.
	before := len(e.relayed())
	if a := get(t, hc, e.url+"/cgi-bin/user/info?openid="+openID+"&note=a%3Bb&access_token="+h); a.ErrCode != 0 || a.OpenID != openID {
		t.Fatalf("an escaped ';' in a value: %s", a.raw)
	}
	if got := e.relayed()[before:]; len(got) != 1 || got[0].Query.Get("note") != "a;b" {
		t.Fatalf("an escaped ';' in a value: %d calls reached WeChat, want 1 with note=a;b", len(got))
	}
	e.assertNoLeak("the logs", e.logs.String())
}
