package gateway_test

import (
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// TestForwardingHeadersDoNotReachWeChat: the addresses of the callers
// and the proxies in between (X-Forwarded-For and its kin) are not
// relayed to WeChat, which does not use them (its IP allowlist checks
// the connection's address), nor does the gateway add its own; other
// headers pass. The anonymous limit still reads X-Forwarded-For from a
// trusted proxy (TestAnonymousLimitIsPerClient).
func TestForwardingHeadersDoNotReachWeChat(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(c *gateway.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	hc := &http.Client{}
	h := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken
	dropped := map[string]string{
		"X-Forwarded-For":     "10.1.2.3, 10.9.9.9",
		"Forwarded":           "for=10.1.2.3;proto=https;by=10.9.9.9",
		"X-Forwarded-Host":    "crm.internal.example",
		"X-Forwarded-Proto":   "https",
		"X-Forwarded-Port":    "8443",
		"X-Forwarded-Server":  "proxy1.internal.example",
		"X-Real-Ip":           "10.1.2.3",
		"True-Client-Ip":      "10.1.2.3",
		"X-Client-Ip":         "10.1.2.3",
		"X-Cluster-Client-Ip": "10.1.2.3",
		"Cf-Connecting-Ip":    "10.1.2.3",
		"Via":                 "1.1 proxy1.internal.example",
	}
	tests := []struct{ name, method, target string }{
		{"relayed call", "GET", wechatsim.PathUserInfo + "?openid=" + openID + "&access_token=" + h},
		{"relayed POST", "POST", wechatsim.PathUserInfoBatch + "?access_token=" + h},
		{"call with the user's token", "GET", wechatsim.PathSNSAuth + "?access_token=user-token&openid=o1"},
		{"code exchange", "GET", "/sns/jscode2session?appid=" + appA + "&secret=" + keyShop + "&js_code=j1&grant_type=authorization_code"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.wechat.all())
			var body io.Reader
			if tt.method == "POST" {
				body = strings.NewReader(`{"user_list":[{"openid":"` + openID + `"}]}`)
			}
			req, err := http.NewRequest(tt.method, e.url+tt.target, body)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range dropped {
				req.Header.Set(k, v)
			}
			req.Header.Set("X-Request-Id", "r-1")
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			decodeAnswer(t, resp)
			all := e.wechat.all()
			if len(all) != before+1 {
				t.Fatalf("%d requests reached WeChat, want 1", len(all)-before)
			}
			got := all[before].Header
			for k := range got {
				if _, ok := dropped[k]; ok || strings.HasPrefix(k, "X-Forwarded-") {
					t.Errorf("WeChat got %s: %q", k, got.Values(k))
				}
			}
			if got.Get("X-Request-Id") != "r-1" {
				t.Errorf("WeChat got X-Request-Id %q, want the header passed", got.Get("X-Request-Id"))
			}
		})
	}
}
