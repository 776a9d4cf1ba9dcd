package gateway_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// TestAnonymousCallsDoNotUseUpPathLabels: calls without a wxhub
// credential are labelled like unauthenticated ones (WeChat's fixed /sns
// paths by name, anything else "other"), so random /sns paths cannot use
// up the 200 path labels that the clients' calls need. (The simulator
// answers an unknown path a plain-text 404, which the gateway answers -1,
// counted as http_4xx.)
func TestAnonymousCallsDoNotUseUpPathLabels(t *testing.T) {
	t.Parallel()
	const key = "client-key-labels-0123456789"
	e := startEnv(t, func(c *gateway.Config) {
		c.AnonymousRate = 10000
		c.Clients = append(c.Clients, gateway.Client{Name: "labels", Key: key, AppIDs: []string{appA}})
	})
	hc := &http.Client{}
	for i := range 250 {
		resp, err := hc.Get(fmt.Sprintf("%s/sns/junk%d?access_token=user-token", e.url, i))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	auth := get(t, hc, e.url+wechatsim.PathSNSAuth+"?access_token=user-token&openid=o1")
	if auth.ErrCode == 0 {
		t.Fatalf("sns/auth with a made-up token: %s", auth.raw)
	}
	h := get(t, hc, tokenURL(e.url, appA, key)).AccessToken
	if a := get(t, hc, e.url+wechatsim.PathUserInfo+"?openid="+openID+"&access_token="+h); a.ErrCode != 0 {
		t.Fatalf("user/info: %s", a.raw)
	}
	m := scrapeMetrics(t)
	tests := []struct {
		series string
		want   bool
	}{
		{`wxhub_gateway_calls_total{client="labels",errcode="0",path="/cgi-bin/user/info"}`, true},
		{`wxhub_gateway_calls_total{client="anonymous",errcode="http_4xx",path="other"}`, true},
		{fmt.Sprintf(`wxhub_gateway_calls_total{client="anonymous",errcode="%d",path="/sns/auth"}`, auth.ErrCode), true},
		{`client="anonymous",errcode="http_4xx",path="/sns/junk`, false},
	}
	for _, tt := range tests {
		if strings.Contains(m, tt.series) != tt.want {
			t.Errorf("metrics have %s: %v, want %v", tt.series, !tt.want, tt.want)
		}
	}
}

// TestRefusedCallsTakeNoPathLabel: a call the gateway refuses itself (a
// path the client may not call, over its rate, a body over the limit) is
// counted under "other" unless its path has a label already: refusals
// cost nothing to make up by the hundred and must not use up the 200
// path labels that the clients' relayed calls need.
func TestRefusedCallsTakeNoPathLabel(t *testing.T) {
	t.Parallel()
	const slowKey, okKey = "client-key-slow-0123456789", "client-key-refused-ok-0123456789"
	e := startEnv(t, func(c *gateway.Config) {
		c.MaxRequestBody = 1 << 10
		c.Clients = append(c.Clients, gateway.Client{Name: "slow", Key: slowKey, AppIDs: []string{appA}, Rate: 0.001, Burst: 1},
			gateway.Client{Name: "refused-ok", Key: okKey, AppIDs: []string{appA}}) // its series is this test's alone
	})
	hc := &http.Client{}
	hShop := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken
	hOther := get(t, hc, tokenURL(e.url, appB, keyOther)).AccessToken
	hSlow := get(t, hc, tokenURL(e.url, appA, slowKey)).AccessToken // its one call
	tests := []struct {
		name, client, prefix string
		code                 int
		call                 func(path string) wxAnswer
	}{
		{"path not allowed", "other", "/cgi-bin/notallowed", 48001, func(p string) wxAnswer {
			return get(t, hc, e.url+p+"?access_token="+hOther)
		}},
		{"over the client's rate", "slow", "/cgi-bin/overrate", 45011, func(p string) wxAnswer {
			return get(t, hc, e.url+p+"?access_token="+hSlow)
		}},
		{"body over the limit", "shop", "/cgi-bin/toobig", 45001, func(p string) wxAnswer {
			return post(t, hc, e.url+p+"?access_token="+hShop, "application/octet-stream", strings.Repeat("x", 2<<10))
		}},
	}
	for _, tt := range tests {
		for i := range 70 { // 210 in all, more than the 200 labels
			if a := tt.call(fmt.Sprintf("%s%d", tt.prefix, i)); a.ErrCode != tt.code {
				t.Fatalf("%s: %s, want %d", tt.name, a.raw, tt.code)
			}
		}
	}
	if len(e.relayed()) != 0 {
		t.Fatal("a refused call reached WeChat")
	}
	hOK := get(t, hc, tokenURL(e.url, appA, okKey)).AccessToken
	if a := get(t, hc, e.url+wechatsim.PathUserInfo+"?openid="+openID+"&access_token="+hOK); a.ErrCode != 0 {
		t.Fatalf("user/info: %s", a.raw)
	}
	m := scrapeMetrics(t)
	if s := `wxhub_gateway_calls_total{client="refused-ok",errcode="0",path="/cgi-bin/user/info"}`; !strings.Contains(m, s) {
		t.Errorf("metrics lack %s: the refusals took the labels", s)
	}
	for _, tt := range tests {
		if s := fmt.Sprintf(`path="%s`, tt.prefix); strings.Contains(m, s) {
			t.Errorf("%s: a refused call took a path label (%s...)", tt.name, s)
		}
		if s := fmt.Sprintf(`wxhub_gateway_calls_total{client="%s",errcode="%d",path="other"}`, tt.client, tt.code); !strings.Contains(m, s) {
			t.Errorf("%s: metrics lack %s", tt.name, s)
		}
	}
}
