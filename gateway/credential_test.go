package gateway_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// TestRejectionWithAnotherTokenIsNotReported: WeChat answers 40001,
// 40014 or 42001 also when a call's other credential is bad (an expired
// component_access_token of the open platform, say). A client whose call
// carries a token-like parameter besides access_token could otherwise
// make the gateway report the valid global token at will: a refresh
// (one of 2000 daily fetches) and, within the holder's ConflictWindow, a
// false token.conflict. Such a rejection is not reported and not
// repeated: WeChat got the call once and the client gets its answer.
// The same rejection without the other token is reported, once.
func TestRejectionWithAnotherTokenIsNotReported(t *testing.T) {
	t.Parallel()
	spy := &reportSpy{}
	e := startEnv(t, withReportSpy(spy))
	hc := &http.Client{}
	h := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken
	before, _ := e.tokens.Current(appA)
	tests := []struct {
		name, method, path, query string
		code                      int
	}{
		{"an expired component_access_token", "GET", wechatsim.PathUserInfo, "&openid=" + openID + "&component_access_token=expired-component-token", 40001},
		{"an authorizer_access_token", "GET", wechatsim.PathUserInfo, "&authorizer_access_token=wrong&openid=" + openID, 42001},
		{"a suite_token on a POST", "POST", wechatsim.PathUserInfoBatch, "&suite_token=wrong", 40014},
		{"a parameter named token", "GET", wechatsim.PathCallbackIP, "&token=wrong", 40001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.sim.ResetStats()
			if err := e.sim.AddFault(wechatsim.Fault{Path: tt.path, ErrCode: tt.code, Count: 1}); err != nil {
				t.Fatal(err)
			}
			u := e.url + tt.path + "?access_token=" + h + tt.query
			var a wxAnswer
			if tt.method == "GET" {
				a = get(t, hc, u)
			} else {
				a = post(t, hc, u, "application/json", `{"user_list":[{"openid":"`+openID+`"}]}`)
			}
			if a.ErrCode != tt.code || !strings.Contains(a.ErrMsg, " rid: ") || strings.Contains(a.ErrMsg, "wxhub gateway") {
				t.Fatalf("answer %s, want WeChat's %d unchanged", a.raw, tt.code)
			}
			if n := e.sim.Stats().CallCount(tt.path, appA); n != 1 {
				t.Fatalf("WeChat got the call %d times, want 1 (not repeated)", n)
			}
			if n := spy.reports(); n != 0 {
				t.Fatalf("%d token.invalidated reports, want none", n)
			}
		})
	}
	if after, _ := e.tokens.Current(appA); after.Version != before.Version {
		t.Fatalf("token version %d → %d: a refresh", before.Version, after.Version)
	}
	if !strings.Contains(e.logs.String(), "not reported: the call carries another token") {
		t.Error("no log line says why the rejections were not reported")
	}

	// The same rejection of a call with access_token alone is about our
	// token: reported once, a newer token waited for, repeated once.
	e.sim.ResetStats()
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathUserInfo, ErrCode: 40001, Count: 1}); err != nil {
		t.Fatal(err)
	}
	a := get(t, hc, e.url+wechatsim.PathUserInfo+"?access_token="+h+"&openid="+openID)
	if a.ErrCode != 0 || a.OpenID != openID {
		t.Fatalf("a genuine rejection: %s, want the repeat's success", a.raw)
	}
	if n := spy.reports(); n != 1 {
		t.Fatalf("%d token.invalidated reports for a genuine rejection, want 1", n)
	}
	if n := e.sim.Stats().CallCount(wechatsim.PathUserInfo, appA); n != 2 {
		t.Fatalf("WeChat got the call %d times, want 2", n)
	}
	e.assertNoLeak("the logs", e.logs.String())
}
