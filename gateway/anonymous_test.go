package gateway_test

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// TestAnonymousLimitIsPerClient: the calls without a wxhub credential
// (the /sns calls with the user's own token) are limited per client
// address, not all together: one client over its rate is answered 45011
// while another still gets WeChat's answer. The test's connections all
// come from 127.0.0.1; behind it as a trusted proxy, X-Forwarded-For
// names the client. From a peer that is not trusted, X-Forwarded-For is
// ignored (said once in the log): the peer is the one client.
func TestAnonymousLimitIsPerClient(t *testing.T) {
	t.Parallel()
	type call struct {
		xff     string // X-Forwarded-For, "" for none
		limited bool   // answered 45011 by the gateway
	}
	cases := []struct {
		name    string
		trusted []netip.Prefix
		calls   []call
		warned  bool
	}{
		{"behind a trusted proxy", []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, []call{
			{"198.51.100.1", false}, {"198.51.100.1", false}, {"198.51.100.1", true},
			{"198.51.100.2", false},                                                           // another client: its own budget
			{"203.0.113.9, 198.51.100.1", true},                                               // a made-up hop does not help
			{"2001:db8:1:2::1", false}, {"2001:db8:1:2::2", false}, {"2001:db8:1:2::3", true}, // one /64
			{"2001:db8:1:3::1", false},
			{"", false}, // the proxy itself
		}, false},
		{"no trusted proxy", nil, []call{
			{"198.51.100.1", false}, {"198.51.100.2", false}, {"198.51.100.3", true},
		}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := startEnv(t, func(cfg *gateway.Config) {
				cfg.AnonymousRate, cfg.AnonymousBurst = 0.001, 2
				cfg.TrustedProxies = c.trusted
			})
			hc := &http.Client{}
			relayed := 0
			for i, cl := range c.calls {
				req, err := http.NewRequest("GET", e.url+wechatsim.PathSNSAuth+"?access_token=user-token&openid=o1", nil)
				if err != nil {
					t.Fatal(err)
				}
				if cl.xff != "" {
					req.Header.Set("X-Forwarded-For", cl.xff)
				}
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				a := decodeAnswer(t, resp)
				if limited := a.ErrCode == 45011; limited != cl.limited {
					t.Fatalf("call %d from %q: %s; limited %v, want %v", i, cl.xff, a.raw, limited, cl.limited)
				}
				if !cl.limited {
					relayed++
				}
				if n := len(e.relayed()); n != relayed {
					t.Fatalf("after call %d from %q, %d calls reached WeChat, want %d", i, cl.xff, n, relayed)
				}
			}
			warned := strings.Count(e.logs.String(), "X-Forwarded-For from a peer that is not a trusted proxy")
			if (warned > 0) != c.warned || warned > 1 {
				t.Fatalf("ignored X-Forwarded-For logged %d times, want %v (once)", warned, c.warned)
			}
		})
	}
}
