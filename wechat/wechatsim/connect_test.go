package wechatsim

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

const cb = "http://login.example.com/oauth/callback"

// authorizeURL builds an authorize URL with WeChat's parameter order.
func authorizeURL(base, path, appid, redirect, scope, state string) string {
	return base + path + "?appid=" + appid + "&redirect_uri=" + url.QueryEscape(redirect) +
		"&response_type=code&scope=" + scope + "&state=" + state + "#wechat_redirect"
}

// noFollow is a client that shows redirects instead of following them.
func (h *harness) noFollow() *http.Client {
	c := *h.srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

func (h *harness) browse(c *http.Client, u string, cookies ...*http.Cookie) (*http.Response, string) {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, ck := range cookies {
		req.AddCookie(ck)
	}
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (h *harness) oauthApp() {
	h.sim.SetOAuthDomains(testApp, "login.example.com")
	if err := h.sim.AddSNSUser(testApp, Follower{OpenID: "oUser1", Nickname: "小红"}); err != nil {
		h.t.Fatal(err)
	}
	if err := h.sim.LogIn("", LoggedInUser{OpenID: "oUser1"}); err != nil {
		h.t.Fatal(err)
	}
}

func TestAuthorizeChecksParametersLikeWeChat(t *testing.T) {
	h := newHarness(t)
	h.oauthApp()
	h.sim.AddApp("wxweb0000000001", "websecret")
	h.sim.SetOAuthDomains("wxweb0000000001", "login.example.com")
	h.sim.SetWebsiteApp("wxweb0000000001", true)
	base := h.srv.URL
	cases := []struct {
		name, url string
		errcode   string
	}{
		{"unknown app", authorizeURL(base, PathConnectAuthorize, "wxnope", cb, ScopeBase, "S1"), "40013"},
		{"no appid", base + PathConnectAuthorize + "?redirect_uri=" + url.QueryEscape(cb) + "&response_type=code&scope=snsapi_base", "10012"},
		{"domain not registered", authorizeURL(base, PathConnectAuthorize, testApp, "http://evil.example.com/cb", ScopeBase, "S1"), "10003"},
		{"subdomain is another domain", authorizeURL(base, PathConnectAuthorize, testApp, "http://x.login.example.com/cb", ScopeBase, "S1"), "10003"},
		{"no redirect_uri", base + PathConnectAuthorize + "?appid=" + testApp + "&response_type=code&scope=snsapi_base", "10011"},
		{"bad response_type", strings.Replace(authorizeURL(base, PathConnectAuthorize, testApp, cb, ScopeBase, "S1"), "response_type=code", "response_type=token", 1), "10001"},
		{"bad scope", authorizeURL(base, PathConnectAuthorize, testApp, cb, "snsapi_all", "S1"), "10005"},
		{"no scope", authorizeURL(base, PathConnectAuthorize, testApp, cb, "", "S1"), "10010"},
		{"login scope on an official account", authorizeURL(base, PathConnectAuthorize, testApp, cb, ScopeLogin, "S1"), "10005"},
		{"qrconnect for an official account", authorizeURL(base, PathConnectQRConnect, testApp, cb, ScopeLogin, "S1"), "10005"},
		{"official scope on qrconnect", authorizeURL(base, PathConnectQRConnect, "wxweb0000000001", cb, ScopeUserInfo, "S1"), "10005"},
		{"bad state", authorizeURL(base, PathConnectAuthorize, testApp, cb, ScopeBase, "a-b"), "10013"},
		{"state of 129 characters", authorizeURL(base, PathConnectAuthorize, testApp, cb, ScopeBase, strings.Repeat("a", 129)), "10013"},
		{"parameters out of order", base + PathConnectAuthorize + "?redirect_uri=" + url.QueryEscape(cb) + "&appid=" + testApp + "&response_type=code&scope=snsapi_base&state=S", "10001"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := h.browse(h.noFollow(), c.url)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, c.errcode) {
				t.Fatalf("status %d, want 400 naming %s; body:\n%s", resp.StatusCode, c.errcode, body)
			}
		})
	}
}

func TestAuthorizeBaseIsSilentAndCodeWorksOnce(t *testing.T) {
	h := newHarness(t)
	h.oauthApp()
	resp, _ := h.browse(h.noFollow(), authorizeURL(h.srv.URL, PathConnectAuthorize, testApp, cb+"?x=1", ScopeBase, "Nonce1"))
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("status %d, want 302", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	m := regexp.MustCompile(`^` + regexp.QuoteMeta(cb) + `\?x=1&code=([0-9A-Za-z_-]+)&state=Nonce1$`).FindStringSubmatch(loc)
	if m == nil {
		t.Fatalf("Location %q, want %s?x=1&code=C&state=Nonce1", loc, cb)
	}
	a := h.do(http.MethodGet, PathOAuthToken, url.Values{"appid": {testApp}, "secret": {testSecret}, "code": {m[1]}, "grant_type": {"authorization_code"}}, "")
	if a.errcode() != 0 || a.str("openid") != "oUser1" || a.str("scope") != ScopeBase || a.has("is_snapshotuser") {
		t.Fatalf("exchange: %s", a.raw)
	}
	if a := h.do(http.MethodGet, PathOAuthToken, url.Values{"appid": {testApp}, "secret": {testSecret}, "code": {m[1]}, "grant_type": {"authorization_code"}}, ""); a.errcode() != codeCodeUsed {
		t.Fatalf("second exchange: %s, want 40163", a.raw)
	}
}

var ticketRe = regexp.MustCompile(`name="ticket" value="([^"]+)"`)

func (h *harness) consent(cookies ...*http.Cookie) (ticket, page string) {
	h.t.Helper()
	resp, body := h.browse(h.noFollow(), authorizeURL(h.srv.URL, PathConnectAuthorize, testApp, cb, ScopeUserInfo, "Nonce2"), cookies...)
	m := ticketRe.FindStringSubmatch(body)
	if resp.StatusCode != http.StatusOK || m == nil || !strings.Contains(body, `id="allow"`) || !strings.Contains(body, `id="refuse"`) {
		h.t.Fatalf("consent page: status %d\n%s", resp.StatusCode, body)
	}
	return m[1], body
}

func (h *harness) reply(ticket, action string) *http.Response {
	h.t.Helper()
	resp, err := h.noFollow().PostForm(h.srv.URL+PathConnectReply, url.Values{"ticket": {ticket}, "action": {action}})
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestConsentPageAllowRefuseAndTicketOnce(t *testing.T) {
	h := newHarness(t)
	h.oauthApp()

	ticket, page := h.consent()
	if !strings.Contains(page, "小红") {
		t.Errorf("consent page does not name the logged-in user:\n%s", page)
	}
	resp := h.reply(ticket, "allow")
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !regexp.MustCompile(`\?code=[^&]+&state=Nonce2$`).MatchString(loc) {
		t.Fatalf("allow: %d %q", resp.StatusCode, loc)
	}
	if resp := h.reply(ticket, "allow"); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a ticket answered twice: %d, want 400", resp.StatusCode)
	}

	ticket, _ = h.consent()
	resp = h.reply(ticket, "refuse")
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != cb+"?state=Nonce2" {
		t.Fatalf("refuse: %d %q, want %s?state=Nonce2 (no code)", resp.StatusCode, loc, cb)
	}
}

func TestSnapshotUserGetsVirtualOpenIDSilently(t *testing.T) {
	h := newHarness(t)
	h.oauthApp()
	// The cookie overrides the admin login for this browser.
	resp, _ := h.browse(h.noFollow(), authorizeURL(h.srv.URL, PathConnectAuthorize, testApp, cb, ScopeUserInfo, "N3"),
		&http.Cookie{Name: CookieOpenID, Value: "oReal9"}, &http.Cookie{Name: CookieSnapshot, Value: "1"})
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || loc == nil || loc.Query().Get("code") == "" {
		t.Fatalf("snapshot user: %d %q, want a silent redirect with a code", resp.StatusCode, resp.Header.Get("Location"))
	}
	a := h.do(http.MethodGet, PathOAuthToken, url.Values{"appid": {testApp}, "secret": {testSecret}, "code": {loc.Query().Get("code")}, "grant_type": {"authorization_code"}}, "")
	if a.num("is_snapshotuser") != 1 || a.str("openid") != VirtualOpenID(testApp, "oReal9") || a.str("openid") == "oReal9" || a.str("scope") != ScopeBase {
		t.Fatalf("exchange: %s; want is_snapshotuser 1, a virtual openid, scope snsapi_base", a.raw)
	}
}

func TestWebsiteAppQRConnectAndUserInfo(t *testing.T) {
	h := newHarness(t)
	h.oauthApp()
	h.sim.SetWebsiteApp(testApp, true)
	resp, body := h.browse(h.noFollow(), authorizeURL(h.srv.URL, PathConnectQRConnect, testApp, cb, ScopeLogin, "N4"))
	m := ticketRe.FindStringSubmatch(body)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("qrconnect: %d\n%s", resp.StatusCode, body)
	}
	resp = h.reply(m[1], "allow")
	loc, _ := url.Parse(resp.Header.Get("Location"))
	a := h.do(http.MethodGet, PathOAuthToken, url.Values{"appid": {testApp}, "secret": {testSecret}, "code": {loc.Query().Get("code")}, "grant_type": {"authorization_code"}}, "")
	if a.str("scope") != ScopeLogin {
		t.Fatalf("exchange: %s", a.raw)
	}
	ui := h.do(http.MethodGet, PathSNSUserInfo, url.Values{"access_token": {a.str("access_token")}, "openid": {"oUser1"}}, "")
	if ui.str("nickname") != "小红" {
		t.Fatalf("userinfo with snsapi_login: %s", ui.raw)
	}
}

func TestAuthorizeWithoutLoggedInUser(t *testing.T) {
	h := newHarness(t)
	h.sim.SetOAuthDomains(testApp, "login.example.com")
	resp, body := h.browse(h.noFollow(), authorizeURL(h.srv.URL, PathConnectAuthorize, testApp, cb, ScopeBase, "N5"))
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "/_sim/oauth/user") {
		t.Fatalf("%d\n%s", resp.StatusCode, body)
	}
	a := h.do(http.MethodPost, "/_sim/oauth/user", nil, `{"appid":"`+testApp+`","openid":"oAdmin1"}`)
	if a.status != http.StatusOK {
		t.Fatalf("admin login: %d %s", a.status, a.raw)
	}
	if resp, _ := h.browse(h.noFollow(), authorizeURL(h.srv.URL, PathConnectAuthorize, testApp, cb, ScopeBase, "N5")); resp.StatusCode != http.StatusFound {
		t.Fatalf("after admin login: %d", resp.StatusCode)
	}
}

// TestUserInfoConsentSkippedFromTheAccount: snsapi_userinfo asks for
// consent unless the user follows the account and came from its menu or
// chat.
func TestUserInfoConsentSkippedFromTheAccount(t *testing.T) {
	cases := []struct {
		name        string
		openid      string
		fromAccount bool
		viaLogIn    bool // LogIn instead of the cookies
		silent      bool
	}{
		{"follower from the account's chat", plainFollower.OpenID, true, false, true},
		{"follower from the account's menu (LogIn)", plainFollower.OpenID, true, true, true},
		{"follower from elsewhere", plainFollower.OpenID, false, false, false},
		{"unsubscribed follower from the chat", goneFollower.OpenID, true, false, false},
		{"not a follower, from a shared link in the chat", snsOnly.OpenID, true, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			seedUsers(t, h)
			h.sim.SetOAuthDomains(testApp, "login.example.com")
			var cookies []*http.Cookie
			if tc.viaLogIn {
				if a := h.postJSON("/_sim/oauth/user", map[string]any{"appid": testApp, "openid": tc.openid, "from_account": tc.fromAccount}); a.status != http.StatusOK {
					t.Fatalf("log in: %d %s", a.status, a.raw)
				}
			} else {
				cookies = append(cookies, &http.Cookie{Name: CookieOpenID, Value: tc.openid})
				if tc.fromAccount {
					cookies = append(cookies, &http.Cookie{Name: CookieFromAccount, Value: "1"})
				}
			}
			resp, body := h.browse(h.noFollow(), authorizeURL(h.srv.URL, PathConnectAuthorize, testApp, cb, ScopeUserInfo, "N6"), cookies...)
			if !tc.silent {
				if resp.StatusCode != http.StatusOK || !ticketRe.MatchString(body) {
					t.Fatalf("status %d, want the consent page:\n%s", resp.StatusCode, body)
				}
				return
			}
			loc, _ := url.Parse(resp.Header.Get("Location"))
			if resp.StatusCode != http.StatusFound || loc == nil || loc.Query().Get("code") == "" || loc.Query().Get("state") != "N6" {
				t.Fatalf("status %d Location %q, want a redirect with a code at once", resp.StatusCode, resp.Header.Get("Location"))
			}
			a := h.exchange(testApp, testSecret, loc.Query().Get("code"))
			if a.errcode() != 0 || a.str("openid") != tc.openid || a.str("scope") != ScopeUserInfo {
				t.Fatalf("exchange: %s", a.raw)
			}
		})
	}
}

// TestAuthorizeStateUpTo128: state is [a-zA-Z0-9]{0,128} and comes back
// unchanged.
func TestAuthorizeStateUpTo128(t *testing.T) {
	h := newHarness(t)
	h.oauthApp()
	for _, state := range []string{"", "Z9", strings.Repeat("aB3", 42) + "xy"} {
		t.Run(fmt.Sprintf("%d characters", len(state)), func(t *testing.T) {
			resp, body := h.browse(h.noFollow(), authorizeURL(h.srv.URL, PathConnectAuthorize, testApp, cb, ScopeBase, state))
			loc, _ := url.Parse(resp.Header.Get("Location"))
			if resp.StatusCode != http.StatusFound || loc == nil || loc.Query().Get("code") == "" || !strings.HasSuffix(loc.RawQuery, "&state="+state) {
				t.Fatalf("status %d Location %q:\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
			}
		})
	}
}
