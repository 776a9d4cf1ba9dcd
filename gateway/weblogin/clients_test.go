package weblogin_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/gateway/weblogin"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// from is an HTTP client whose connections come from the loopback
// address ip: the front listens on 127.0.0.1, and a request from
// 127.0.0.2 is another client's (another RemoteAddr) on real TCP.
func from(t *testing.T, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	c := noFollow()
	c.Transport = tr
	return c
}

// start asks the front to start a login with client c, X-Forwarded-For
// xff when not empty, and returns the status; a 429 must be the limit's
// page (Retry-After: 1, no redirect).
func (e *loginEnv) start(t *testing.T, c *http.Client, xff string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.authorize(url.Values{"appid": {e.demoApp.AppID}, "scope": {"snsapi_base"}, "return_to": {e.demoURL}}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusTooManyRequests &&
		(resp.Header.Get("Retry-After") != "1" || resp.Header.Get("Location") != "" || !strings.Contains(string(body), "too many logins")) {
		t.Fatalf("429 with Retry-After %q, Location %q\n%s", resp.Header.Get("Retry-After"), resp.Header.Get("Location"), body)
	}
	return resp.StatusCode
}

func (e *loginEnv) statesStored(t *testing.T) int {
	t.Helper()
	keys, err := e.states.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range keys.Keys() {
		n++
	}
	return n
}

func (e *loginEnv) wantStarts(t *testing.T, who string, c *http.Client, xff string, want ...int) {
	t.Helper()
	for i, w := range want {
		if got := e.start(t, c, xff); got != w {
			t.Fatalf("%s, login %d: %d, want %d", who, i+1, got, w)
		}
	}
}

// One client over its budget (burst 2, no refill within the test) is
// answered 429, as over the global limit, while another client still
// starts its logins: the first one's refusals spent nothing of the
// global budget (4: its 2 and the other's 2), which still holds for a
// third client.
func TestOneClientOverItsBudgetLeavesOtherClientsTheirLogins(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{clientRate: 0.001, clientBurst: 2, authorizeRate: 0.001, authorizeBurst: 4})
	e.wantStarts(t, "client 127.0.0.1", from(t, "127.0.0.1"), "", 302, 302, 429, 429, 429)
	e.wantStarts(t, "client 127.0.0.2", from(t, "127.0.0.2"), "", 302, 302)
	e.wantStarts(t, "client 127.0.0.3, over the global limit", from(t, "127.0.0.3"), "", 429)
	if n := e.statesStored(t); n != 4 {
		t.Fatalf("%d states stored, want 4", n)
	}
}

// Behind a trusted proxy (127.0.0.1) the client is the rightmost
// X-Forwarded-For address that is not a trusted proxy: two browsers
// behind it have their own budgets, and one cannot escape its own by
// putting made-up addresses left of its real one. A peer that is not
// trusted (127.0.0.2) is its own client whatever X-Forwarded-For it
// sends, and the log says once that the header was ignored.
func TestTrustedProxyNamesTheClient(t *testing.T) {
	t.Parallel()
	logs := &wxhubtest.Buffer{}
	e := newLoginEnv(t, envOptions{clientRate: 0.001, clientBurst: 1, logs: logs,
		trustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	proxy, direct := from(t, "127.0.0.1"), from(t, "127.0.0.2")
	e.wantStarts(t, "198.51.100.7 through the proxy", proxy, "198.51.100.7", 302, 429)
	e.wantStarts(t, "198.51.100.8 through the proxy", proxy, "198.51.100.8", 302)
	e.wantStarts(t, "198.51.100.7 with a made-up address left of it", proxy, "203.0.113.1, 198.51.100.7", 429)
	e.wantStarts(t, "198.51.100.9 through two trusted hops", proxy, "198.51.100.9, 127.0.0.1", 302, 429)
	e.wantStarts(t, "the proxy itself", proxy, "", 302)
	if strings.Contains(logs.String(), "X-Forwarded-For") {
		t.Fatalf("a trusted proxy's X-Forwarded-For was logged as ignored:\n%s", logs)
	}
	e.wantStarts(t, "an untrusted peer", direct, "198.51.100.20", 302)
	e.wantStarts(t, "an untrusted peer with another X-Forwarded-For", direct, "198.51.100.21", 429)
	if n := strings.Count(logs.String(), "X-Forwarded-For from a peer that is not a trusted proxy is ignored"); n != 1 {
		t.Fatalf("the ignored X-Forwarded-For logged %d times, want once:\n%s", n, logs)
	}
}

// By default no proxy is trusted: X-Forwarded-For names nobody, and a
// client rotating it is still one client.
func TestForwardedForIsIgnoredByDefault(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{clientRate: 0.001, clientBurst: 1})
	c := from(t, "127.0.0.1")
	e.wantStarts(t, "first", c, "198.51.100.1", 302)
	e.wantStarts(t, "rotating X-Forwarded-For", c, "198.51.100.2", 429)
	e.wantStarts(t, "rotating X-Forwarded-For", c, "198.51.100.3", 429)
}

// A full table of clients (2 here) forgets the one used least recently:
// that client starts again with a full burst, the others keep theirs.
func TestFullClientTableForgetsTheLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{clientRate: 0.001, clientBurst: 1, maxClients: 2,
		trustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	proxy := from(t, "127.0.0.1")
	e.wantStarts(t, "A", proxy, "198.51.100.1", 302, 429)
	e.wantStarts(t, "B", proxy, "198.51.100.2", 302)
	e.wantStarts(t, "C, A forgotten", proxy, "198.51.100.3", 302)
	e.wantStarts(t, "A again", proxy, "198.51.100.1", 302)
	e.wantStarts(t, "C, still remembered (B was forgotten)", proxy, "198.51.100.3", 429)
}

func TestConfigRefusesNegativeClientLimitsAndBadProxies(t *testing.T) {
	for _, cfg := range []weblogin.Config{
		{ClientRate: -1}, {ClientBurst: -1}, {MaxClients: -1},
		{TrustedProxies: []netip.Prefix{{}}},
	} {
		cfg.States, cfg.Jobs = &weblogin.StateStore{}, noJobs{}
		if _, err := weblogin.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted it", cfg)
		}
	}
}
