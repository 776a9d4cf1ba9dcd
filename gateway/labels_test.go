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
