package gateway_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// TestSecretIsReplacedOnlyOnExchangePaths: the client key in `secret`
// is replaced by the AppSecret on the code exchanges only
// (/sns/oauth2/access_token, /sns/jscode2session). Any other /sns path
// carrying `secret` is refused with 48001 and never forwarded: the
// AppSecret must not go anywhere else.
func TestSecretIsReplacedOnlyOnExchangePaths(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	hc := &http.Client{}
	q := "?appid=" + appA + "&secret=" + keyShop
	refused := []namedTarget{
		{"the token endpoint's query on another /sns path", "/sns/token" + q + "&grant_type=client_credential"},
		{"user info", "/sns/userinfo" + q + "&access_token=user-token&openid=o1"},
		{"token check", "/sns/auth" + q + "&access_token=user-token&openid=o1"},
		{"refresh (takes no secret)", "/sns/oauth2/refresh_token" + q + "&grant_type=refresh_token&refresh_token=r1"},
		{"an exchange path with a suffix", "/sns/jscode2session/x" + q + "&js_code=j1&grant_type=authorization_code"},
		{"the exchange path with a trailing slash", "/sns/oauth2/access_token/" + q + "&code=c1&grant_type=authorization_code"},
		{"a component's exchange", "/sns/component/jscode2session" + q + "&js_code=j1&grant_type=authorization_code"},
		{"an unknown client key", "/sns/userinfo?appid=" + appA + "&secret=not-a-key-not-a-key&access_token=t&openid=o1"},
	}
	e.getRefused(t, hc, refused, "not a code exchange", "secret only on a code exchange")
	if n := len(e.callLines("unknown", "48001")); n != len(refused) {
		t.Errorf("%d refusals logged under the unknown client, want %d", n, len(refused))
	}

	// The exchanges get the AppSecret.
	code, err := e.sim.IssueCode(appA, openID, "snsapi_base")
	if err != nil {
		t.Fatal(err)
	}
	if a := get(t, hc, e.url+"/sns/oauth2/access_token"+q+"&code="+code+"&grant_type=authorization_code"); a.ErrCode != 0 || a.OpenID != openID {
		t.Fatalf("OAuth exchange: %s", a.raw)
	}
	if a := get(t, hc, e.url+"/sns/jscode2session"+q+"&js_code=j1&grant_type=authorization_code"); a.ErrCode != 0 || a.OpenID != "oMini-j1" {
		t.Fatalf("mini program exchange: %s", a.raw)
	}
	for _, a := range e.relayed() {
		if s := a.Query.Get("secret"); s != secretA {
			t.Errorf("%s reached WeChat with secret %q, want the AppSecret", a.Path, s)
		}
	}
	if n := len(e.relayed()); n != 2 {
		t.Errorf("%d calls reached WeChat, want the 2 exchanges", n)
	}
	e.assertNoLeak("the logs", e.logs.String())
}

// TestNonIdempotentCallsReachWeChatOnce: Go's Transport itself re-sends a
// request it deems replayable (a GET, or any call with an Idempotency-Key
// header) when a reused keep-alive connection is closed after the request
// was written. WeChat may have executed it: a code exchange would then be
// answered 40163. The calls the gateway does not repeat go out on a fresh
// connection, which is never re-sent; WeChat sees each exactly once.
func TestNonIdempotentCallsReachWeChatOnce(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		trap    string // the path whose next arrival is dropped after reading it
		arrived = map[string]int{}
		next    atomic.Value
	)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrived[r.URL.Path]++
		drop := r.URL.Path == trap
		if drop {
			trap = ""
		}
		mu.Unlock()
		if drop { // WeChat read the call (and used the code), then the connection broke
			io.Copy(io.Discard, r.Body)
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		next.Load().(http.Handler).ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	e := startEnv(t, func(c *gateway.Config) { c.BaseURL = front.URL })
	next.Store(e.api.Config.Handler)
	hc := &http.Client{}
	h := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken
	code, err := e.sim.IssueCode(appA, openID, "snsapi_base")
	if err != nil {
		t.Fatal(err)
	}
	batch := `{"user_list":[{"openid":"` + openID + `"}]}`
	tests := []struct {
		name, method, path, query, header, body string
	}{
		{"OAuth code exchange", "GET", "/sns/oauth2/access_token", "appid=" + appA + "&secret=" + keyShop + "&code=" + code + "&grant_type=authorization_code", "", ""},
		{"mini program code exchange", "GET", "/sns/jscode2session", "appid=" + appA + "&secret=" + keyShop + "&js_code=j1&grant_type=authorization_code", "", ""},
		{"POST with Idempotency-Key", "POST", wechatsim.PathUserInfoBatch, "access_token=" + h, "Idempotency-Key", batch},
		{"POST with X-Idempotency-Key", "POST", wechatsim.PathUserInfoBatch, "access_token=" + h, "X-Idempotency-Key", batch},
		{"plain POST", "POST", wechatsim.PathUserInfoBatch, "access_token=" + h, "", batch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A relayed GET leaves a keep-alive connection to WeChat idle.
			if a := get(t, hc, e.url+wechatsim.PathUserInfo+"?openid="+openID+"&access_token="+h); a.ErrCode != 0 {
				t.Fatalf("warm-up: %s", a.raw)
			}
			mu.Lock()
			trap, arrived[tt.path] = tt.path, 0
			mu.Unlock()
			req, _ := http.NewRequest(tt.method, e.url+tt.path+"?"+tt.query, strings.NewReader(tt.body))
			if tt.header != "" {
				req.Header.Set(tt.header, "k-"+tt.name)
			}
			if tt.body != "" {
				req.Header.Set("Content-Type", "application/json")
			} else {
				req.Body = http.NoBody
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if a := decodeAnswer(t, resp); a.ErrCode != -1 {
				t.Errorf("answer %s, want -1 (WeChat unreachable)", a.raw)
			}
			mu.Lock()
			n := arrived[tt.path]
			mu.Unlock()
			if n != 1 {
				t.Fatalf("WeChat got the call %d times, want once", n)
			}
		})
	}
}

// TestCodeExchangeWithoutASecretIsNotRepeated: a mini program's code
// exchange that carries no secret at all goes through as a call of the
// user's own (the gateway has no key to replace), and like every code
// exchange it is never repeated after -1: WeChat counts the code as used
// even then.
func TestCodeExchangeWithoutASecretIsNotRepeated(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	const path = "/sns/jscode2session"
	if a := get(t, &http.Client{}, e.url+path+"?appid="+appA+"&js_code=minus-one&grant_type=authorization_code"); a.ErrCode != -1 {
		t.Fatalf("answered %s, want WeChat's -1", a.raw)
	}
	n := 0
	for _, a := range e.wechat.all() {
		if a.Path == path {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("the exchange reached WeChat %d times, want 1", n)
	}
}

// TestSecretIsRefusedOffTheSNSPaths: outside /sns (the token endpoints
// read their own `secret`) nothing WeChat serves takes `secret` in the
// query: a call carrying one, with a valid handle or not, empty or not,
// is refused with 48001 and never forwarded, so a client key (or an
// AppSecret a misconfigured SDK sends) never reaches WeChat or its logs
// through the relay. The key is in no log line.
func TestSecretIsRefusedOffTheSNSPaths(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	hc := &http.Client{}
	h := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken
	call := wechatsim.PathUserInfo + "?access_token=" + h + "&openid=" + openID
	refused := []namedTarget{
		{"the client key with a handle", call + "&secret=" + keyShop},
		{"the AppSecret with a handle", call + "&secret=" + secretA},
		{"an empty secret", call + "&secret="},
		{"a secret without a value", call + "&secret"},
		{"secret first", wechatsim.PathUserInfo + "?secret=" + keyShop + "&access_token=" + h + "&openid=" + openID},
		{"no access_token", wechatsim.PathUserInfo + "?appid=" + appA + "&secret=" + keyShop},
		{"the token endpoint's query under another path", "/cgi-bin/token/x?grant_type=client_credential&appid=" + appA + "&secret=" + keyShop},
	}
	e.getRefused(t, hc, refused, "secret on a path that is not a token endpoint", "no secret off the /sns paths")
	if n := len(e.callLines("unknown", "48001")); n != len(refused) {
		t.Errorf("%d refusals logged under the unknown client, want %d", n, len(refused))
	}
	// A parameter that merely contains the name is no secret.
	if a := get(t, hc, e.url+call+"&client_secret_hint=1"); a.ErrCode != 0 {
		t.Fatalf("user/info with another parameter: %s", a.raw)
	}
	e.assertNoLeak("the logs", e.logs.String())
}
