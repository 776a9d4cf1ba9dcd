package gateway_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// reportSpy records every token.invalidated report the gateway makes,
// then passes it on.
type reportSpy struct {
	next gateway.Invalidator
	mu   sync.Mutex
	got  []string // the appids reported
}

func (s *reportSpy) Invalidate(ctx context.Context, appid string, version uint64, errcode int) error {
	s.mu.Lock()
	s.got = append(s.got, appid)
	s.mu.Unlock()
	return s.next.Invalidate(ctx, appid, version, errcode)
}

func (s *reportSpy) reports() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

// withReportSpy puts a reportSpy in front of the env's Invalidator.
func withReportSpy(spy *reportSpy) envOption {
	return func(c *gateway.Config) { spy.next, c.Invalidator = c.Invalidator, spy }
}

// TestWxhubTokenOnSNSPathIsRefused: /sns endpoints take the user's own
// OAuth token, never the global one. A handle (or a RealToken client's
// real token) sent to one is answered 48001 and goes nowhere: relayed
// with the real token, WeChat would answer 40001 and the gateway would
// report the valid global token as rejected, pushing the holder into a
// refresh (one of 2000 daily fetches; the old token dies 5 minutes
// later). A user's token still passes through, and its 40001 is never
// reported either.
func TestWxhubTokenOnSNSPathIsRefused(t *testing.T) {
	t.Parallel()
	spy := &reportSpy{}
	e := startEnv(t, withReportSpy(spy))
	hc := &http.Client{}
	handle := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken
	real := get(t, hc, tokenURL(e.url, appA, keyReal)).AccessToken
	if !strings.HasPrefix(handle, "wxh1_") || real != e.sim.ValidToken(appA) {
		t.Fatalf("handle %t, real token %t", strings.HasPrefix(handle, "wxh1_"), real == e.sim.ValidToken(appA))
	}
	before, _ := e.tokens.Current(appA)
	tests := []namedTarget{
		{"a handle to userinfo", wechatsim.PathSNSUserInfo + "?access_token=" + handle + "&openid=o1"},
		{"a handle to auth", wechatsim.PathSNSAuth + "?openid=o1&access_token=" + handle},
		{"a handle to another /sns path", "/sns/jscode2session?access_token=" + handle + "&js_code=j1"},
		{"the real token of a RealToken client", wechatsim.PathSNSUserInfo + "?access_token=" + real + "&openid=o1"},
		{"a handle this gateway no longer knows", wechatsim.PathSNSUserInfo + "?access_token=wxh1_" + strings.Repeat("A", 43) + "&openid=o1"},
	}
	e.getRefused(t, hc, tests, "take the user's own OAuth token", "/sns calls take the user's token")

	// A user's own token passes through; WeChat's 40001 for it is the
	// user's business, not a report against the global token.
	if a := get(t, hc, e.url+wechatsim.PathSNSUserInfo+"?access_token=user-token&openid=o1"); a.ErrCode == 0 || a.ErrCode == 48001 {
		t.Fatalf("a made-up user token: %s, want WeChat's refusal", a.raw)
	}
	if n := len(e.relayed()); n != 1 {
		t.Fatalf("%d calls reached WeChat, want the user-token one", n)
	}
	if n := spy.reports(); n != 0 {
		t.Fatalf("%d token.invalidated reports, want none", n)
	}
	if after, _ := e.tokens.Current(appA); after.Version != before.Version {
		t.Fatalf("token version %d → %d: a refresh", before.Version, after.Version)
	}
	if n := len(e.callLines("shop", "48001")); n != 3 {
		t.Errorf("%d refusals logged under the shop client, want 3", n)
	}
	e.assertNoLeak("the logs", e.logs.String())
	e.assertNoLeak("the metrics", scrapeMetrics(t))
}
