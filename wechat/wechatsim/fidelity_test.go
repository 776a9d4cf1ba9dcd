package wechatsim

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestErrorAnswersAreWeChats: a refused call of every endpoint answers as
// shared/wechat-api.md says WeChat does: HTTP 200, a JSON content type,
// exactly errcode and errmsg, errmsg the error table's message followed
// by " rid: " and three groups of 8 lowercase hex digits, the first the
// unix time.
func TestErrorAnswersAreWeChats(t *testing.T) {
	h := newHarness(t)
	seedUsers(t, h)
	tok := h.token(testApp, testSecret)
	userTok := h.exchange(testApp, testSecret, h.code(testApp, plainFollower.OpenID, ScopeBase)).str("access_token")
	creds := func(kv ...string) url.Values {
		return with(url.Values{"grant_type": {"client_credential"}, "appid": {testApp}, "secret": {testSecret}}, kv...)
	}
	stable := func(kv ...string) string {
		m := map[string]string{"grant_type": "client_credential", "appid": testApp, "secret": testSecret}
		for k, v := range with(url.Values{}, kv...) {
			m[k] = v[0]
		}
		return mustJSON(t, m)
	}
	withTok := func(tk string, kv ...string) url.Values { return with(url.Values{"access_token": {tk}}, kv...) }
	exchange := func(kv ...string) url.Values {
		return with(url.Values{"appid": {testApp}, "secret": {testSecret}, "code": {"0unknown"}, "grant_type": {"authorization_code"}}, kv...)
	}
	refresh := func(kv ...string) url.Values {
		return with(url.Values{"appid": {testApp}, "grant_type": {"refresh_token"}, "refresh_token": {"nope"}}, kv...)
	}
	const (
		invalidCred = "invalid credential, access_token is invalid or not latest"
		get, post   = http.MethodGet, http.MethodPost
	)
	cases := []struct {
		method, path string
		q            url.Values
		body         string
		code         int
		msg          string // errmsg before the rid; a prefix for 40001
	}{
		{get, PathToken, creds("grant_type", "password"), "", 40002, "invalid grant_type"},
		{get, PathToken, creds("grant_type", ""), "", 40002, "invalid grant_type"},
		{get, PathToken, creds("appid", "wxnope"), "", 40013, "invalid appid"},
		{get, PathToken, creds("appid", ""), "", 40013, "invalid appid"},
		{get, PathToken, creds("secret", "nope"), "", 40125, "invalid appsecret"},
		{get, PathToken, creds("secret", ""), "", 40125, "invalid appsecret"},

		{get, PathStableToken, nil, "", 43002, "require POST method"},
		{post, PathStableToken, nil, "{", 47001, "data format error"},
		{post, PathStableToken, nil, stable("grant_type", "x"), 40002, "invalid grant_type"},
		{post, PathStableToken, nil, stable("appid", "wxnope"), 40013, "invalid appid"},
		{post, PathStableToken, nil, stable("secret", "nope"), 40125, "invalid appsecret"},

		{get, PathUserInfo, withTok("", "openid", plainFollower.OpenID), "", 41001, "access_token missing"},
		{get, PathUserInfo, withTok("a b", "openid", plainFollower.OpenID), "", 40014, "invalid access_token"},
		{get, PathUserInfo, withTok(strings.Repeat("A", 150), "openid", plainFollower.OpenID), "", 40001, invalidCred},
		{get, PathUserInfo, withTok(userTok, "openid", plainFollower.OpenID), "", 40001, invalidCred},
		{get, PathUserInfo, withTok(tok, "openid", "oNobody"), "", 40003, "invalid openid"},

		{get, PathUserInfoBatch, withTok(tok), "", 43002, "require POST method"},
		{post, PathUserInfoBatch, withTok(tok), "x", 47001, "data format error"},
		{post, PathUserInfoBatch, withTok(tok), `{"user_list":[]}`, 40032, "invalid openid list size"},
		{post, PathUserInfoBatch, withTok(tok), `{"user_list":[{"openid":"oNobody"}]}`, 40003, "invalid openid"},
		{post, PathUserInfoBatch, withTok(""), `{"user_list":[{"openid":"o"}]}`, 41001, "access_token missing"},

		{get, PathCallbackIP, withTok(""), "", 41001, "access_token missing"},
		{get, PathCallbackIP, withTok("!"), "", 40014, "invalid access_token"},
		{get, PathAPIDomainIP, withTok(""), "", 41001, "access_token missing"},
		{get, PathAPIDomainIP, withTok(strings.Repeat("A", 150)), "", 40001, invalidCred},

		{get, PathOAuthToken, exchange(), "", 40029, "invalid code"},
		{get, PathOAuthToken, exchange("appid", "wxnope"), "", 40013, "invalid appid"},
		{get, PathOAuthToken, exchange("secret", "nope"), "", 40125, "invalid appsecret"},
		{get, PathOAuthToken, exchange("grant_type", "client_credential"), "", 40002, "invalid grant_type"},

		{get, PathOAuthRefresh, refresh(), "", 40030, "invalid refresh_token"},
		{get, PathOAuthRefresh, refresh("appid", "wxnope"), "", 40013, "invalid appid"},
		{get, PathOAuthRefresh, refresh("grant_type", "authorization_code"), "", 40002, "invalid grant_type"},

		{get, PathSNSUserInfo, withTok(userTok, "openid", plainFollower.OpenID), "", 48001, "api unauthorized"},
		{get, PathSNSUserInfo, withTok(userTok, "openid", fullFollower.OpenID), "", 40003, "invalid openid"},
		{get, PathSNSUserInfo, withTok(tok, "openid", plainFollower.OpenID), "", 40001, invalidCred},
		{get, PathSNSUserInfo, withTok("", "openid", plainFollower.OpenID), "", 41001, "access_token missing"},
		{get, PathSNSAuth, withTok(userTok, "openid", fullFollower.OpenID), "", 40003, "invalid openid"},
		{get, PathSNSAuth, withTok("x y", "openid", plainFollower.OpenID), "", 40014, "invalid access_token"},

		{get, PathClearQuota, withTok(tok), "", 43002, "require POST method"},
		{post, PathClearQuota, withTok(tok), `{"appid":"` + otherApp + `"}`, 40013, "invalid appid"},
		{post, PathQuotaGet, withTok(tok), `{"cgi_path":"/cgi-bin/nope"}`, 76021, "cgi_path not found, please check"},
		{post, PathQuotaGet, withTok(tok), `[`, 47001, "data format error"},
	}
	covered := map[string]bool{}
	for _, tc := range cases {
		covered[tc.path] = true
		t.Run(fmt.Sprintf("%s %s %d", tc.method, tc.path, tc.code), func(t *testing.T) {
			a := h.do(tc.method, tc.path, tc.q, tc.body)
			wantErr(t, a, tc.code)
			if !strings.HasPrefix(a.ctype, "application/json") {
				t.Fatalf("content type %q", a.ctype)
			}
			if len(a.m) != 2 || !a.has("errmsg") {
				t.Fatalf("fields %v, want errcode and errmsg only", keys(a.m))
			}
			m := ridRE.FindStringSubmatch(a.str("errmsg"))
			if m == nil || m[2] != fmt.Sprintf("%08x", h.clock.Now().Unix()) {
				t.Fatalf("errmsg %q: want \"<msg> rid: <unix time hex>-xxxxxxxx-xxxxxxxx\"", a.str("errmsg"))
			}
			if m[1] != tc.msg && (tc.code != 40001 || !strings.HasPrefix(m[1], tc.msg)) {
				t.Fatalf("errmsg %q, want %q", m[1], tc.msg)
			}
		})
	}
	for _, ep := range endpoints {
		if !covered[ep.path] {
			t.Errorf("%s has no row", ep.path)
		}
	}
}

// with sets q's keys to the values that follow them in kv.
func with(q url.Values, kv ...string) url.Values {
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	return q
}

// TestSuccessAnswersAreWeChats: the success bodies of the token endpoints
// carry no errcode; plain acknowledgements are {"errcode":0,"errmsg":"ok"}.
func TestSuccessAnswersAreWeChats(t *testing.T) {
	h := newHarness(t)
	seedUsers(t, h)
	tok := h.token(testApp, testSecret)
	ex := h.exchange(testApp, testSecret, h.code(testApp, plainFollower.OpenID, ScopeUserInfo))
	oauthKeys := []string{"access_token", "expires_in", "refresh_token", "openid", "scope"}
	cases := []struct {
		name string
		a    answer
		keys []string // exactly these
	}{
		{"token", h.get(PathToken, url.Values{"grant_type": {"client_credential"}, "appid": {testApp}, "secret": {testSecret}}), []string{"access_token", "expires_in"}},
		{"stable_token", h.stable(testApp, testSecret, false), []string{"access_token", "expires_in"}},
		{"oauth exchange", ex, oauthKeys},
		{"oauth refresh: the exchange's shape", h.refresh(testApp, ex.str("refresh_token")), oauthKeys},
		{"sns/auth", h.get(PathSNSAuth, url.Values{"access_token": {ex.str("access_token")}, "openid": {plainFollower.OpenID}}), []string{"errcode", "errmsg"}},
		{"clear_quota", h.clearQuota(tok, testApp), []string{"errcode", "errmsg"}},
		{"getcallbackip", h.get(PathCallbackIP, url.Values{"access_token": {tok}}), []string{"ip_list"}},
		{"get_api_domain_ip", h.get(PathAPIDomainIP, url.Values{"access_token": {tok}}), []string{"ip_list"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.a.status != http.StatusOK || !strings.HasPrefix(tc.a.ctype, "application/json") {
				t.Fatalf("HTTP %d %q", tc.a.status, tc.a.ctype)
			}
			got := keys(tc.a.m)
			if len(got) != len(tc.keys) {
				t.Fatalf("fields %v, want %v: %s", got, tc.keys, tc.a.raw)
			}
			for _, k := range tc.keys {
				if !tc.a.has(k) {
					t.Fatalf("no %s: %s", k, tc.a.raw)
				}
			}
			if tc.a.has("errcode") && (tc.a.errcode() != 0 || tc.a.str("errmsg") != "ok") {
				t.Fatalf("acknowledgement %s", tc.a.raw)
			}
			if n, ok := tc.a.m["expires_in"].(float64); tc.a.has("expires_in") && (!ok || n != 7200) {
				t.Fatalf("expires_in %v, want the number 7200", tc.a.m["expires_in"])
			}
		})
	}
}
