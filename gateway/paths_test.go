package gateway_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/wxhub/wxhub/gateway"
)

// TestOnlyPlainPathsAreServed: a path with an escape that is not the
// default encoding (%2F, %2E, %69), a backslash, an empty segment or a dot
// segment is refused with 48001 before routing: the relay would forward
// it raw, and a WeChat front that decodes and resolves it would serve
// another path than the one the client's path list allowed. Nothing of it
// reaches WeChat; the gateway's own paths and the mounted ones still work.
func TestOnlyPlainPathsAreServed(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(c *gateway.Config) {
		c.Mount = map[string]http.Handler{"/oauth/": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "login ", r.URL.Query().Get("return_to"))
		})}
	})
	hc := &http.Client{}
	other := get(t, hc, tokenURL(e.url, appB, keyOther)).AccessToken // limited to /cgi-bin/user/
	shop := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken
	if other == "" || shop == "" {
		t.Fatal("no handles")
	}
	tests := []struct{ name, method, target string }{
		{"encoded slashes out of an allowed prefix", "POST", "/cgi-bin/user/..%2F..%2Fcgi-bin%2Fmessage%2Fcustom%2Fsend?access_token=" + other},
		{"encoded dot segments", "GET", "/cgi-bin/user/%2E%2E/%2e%2e/cgi-bin/getcallbackip?access_token=" + other},
		{"an encoded plain letter", "GET", "/cgi-bin/user/%69nfo?openid=" + openID + "&access_token=" + shop},
		{"a dot-dot segment", "GET", "/cgi-bin/user/../getcallbackip?access_token=" + other},
		{"a trailing dot-dot segment", "GET", "/cgi-bin/user/info/..?access_token=" + other},
		{"a dot segment", "GET", "/cgi-bin/./user/info?openid=" + openID + "&access_token=" + shop},
		{"an empty segment", "GET", "/cgi-bin//user/info?openid=" + openID + "&access_token=" + shop},
		{"a backslash", "GET", "/cgi-bin/user/..%5Cgetcallbackip?access_token=" + other},
		{"a secret exchange smuggled to the token endpoint", "GET", "/sns/..%2Fcgi-bin%2Ftoken?grant_type=client_credential&appid=" + appA + "&secret=" + keyShop},
		{"an encoded slash on a user-token path", "GET", "/sns%2Fuserinfo?access_token=user-token&openid=o1"},
		{"an encoded slash on a mounted path", "GET", "/oauth%2Fauthorize?appid=" + appA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a wxAnswer
			if tt.method == "GET" {
				a = get(t, hc, e.url+tt.target)
			} else {
				a = post(t, hc, e.url+tt.target, "application/json", `{"touser":"`+openID+`"}`)
			}
			if a.ErrCode != 48001 || !strings.Contains(a.ErrMsg, "(wxhub gateway: path not plain") || !strings.Contains(a.ErrMsg, " rid: ") || a.AccessToken != "" {
				t.Fatalf("answer %s, want 48001 saying the path is not plain", a.raw)
			}
		})
	}
	if got := e.relayed(); len(got) != 0 {
		t.Errorf("%d refused calls reached WeChat, first %s %s", len(got), got[0].Method, got[0].RawPath)
	}
	if n := len(e.callLines("unknown", "48001")); n != len(tests) {
		t.Errorf("%d refusals logged under the unknown client, want %d", n, len(tests))
	}

	// What is plain still works: the relay, the gateway's own paths, the
	// mounted web login (escapes in the query are fine).
	if a := get(t, hc, e.url+"/cgi-bin/user/info?openid="+openID+"&access_token="+other); a.ErrCode != 0 || a.OpenID != openID {
		t.Fatalf("a plain allowed path: %s", a.raw)
	}
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "gateway: ok",
		"/oauth/authorize?appid=" + appA + "&return_to=https%3A%2F%2Fshop.example%2Fback%3Fa%3D1": "login https://shop.example/back?a=1",
	} {
		resp, err := hc.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != want {
			t.Errorf("GET %s: %d %q, want %q", path, resp.StatusCode, b, want)
		}
	}
	e.assertNoLeak("the logs", e.logs.String())
}

// TestEscapedParameterNamesAreRefused: the gateway finds access_token and
// secret by their names as sent, WeChat decodes the names. A query with
// an escaped name (access%5Ftoken, s%65cret, or '+') is answered 48001
// before routing, so a handle or a client key cannot slip past the
// gateway as an "anonymous" call and reach WeChat under its real name.
func TestEscapedParameterNamesAreRefused(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(c *gateway.Config) {
		c.Mount = map[string]http.Handler{"/oauth/": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "login")
		})}
	})
	hc := &http.Client{}
	h := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken
	tests := []struct{ name, target string }{
		{"a handle as access%5Ftoken on a /sns path", "/sns/userinfo?access%5Ftoken=" + h + "&openid=o1"},
		{"a handle as access%5ftoken on a relayed path", "/cgi-bin/user/info?openid=" + openID + "&access%5ftoken=" + h},
		{"a client key as s%65cret on a /sns path", "/sns/userinfo?access_token=user-token&openid=o1&s%65cret=" + keyShop},
		{"a client key as s%65cret on an exchange", "/sns/jscode2session?appid=" + appA + "&s%65cret=" + keyShop + "&js_code=j1&grant_type=authorization_code"},
		{"a + in a name", "/sns/auth?access+token=" + h + "&openid=o1"},
		{"an escaped name on the token endpoint", "/cgi-bin/token?grant_type=client_credential&appid=" + appA + "&s%65cret=" + keyShop},
		{"an escaped name on a mounted path", "/oauth/authorize?app%69d=" + appA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := get(t, hc, e.url+tt.target)
			if a.ErrCode != 48001 || !strings.Contains(a.ErrMsg, "(wxhub gateway: query not plain") || !strings.Contains(a.ErrMsg, " rid: ") || a.AccessToken != "" {
				t.Fatalf("answer %s, want 48001 saying the query is not plain", a.raw)
			}
		})
	}
	if got := e.relayed(); len(got) != 0 {
		t.Errorf("%d refused calls reached WeChat, first %s", len(got), got[0].Path)
	}
	if n := len(e.callLines("unknown", "48001")); n != len(tests) {
		t.Errorf("%d refusals logged under the unknown client, want %d", n, len(tests))
	}
	// Escaped values are fine.
	if a := get(t, hc, e.url+"/cgi-bin/user/info?openid="+openID+"&lang=zh%5FCN&access_token="+url.QueryEscape(h)); a.ErrCode != 0 || a.OpenID != openID {
		t.Fatalf("escaped values: %s", a.raw)
	}
	e.assertNoLeak("the logs", e.logs.String())
}
