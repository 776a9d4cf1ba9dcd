package wechatsim

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestOAuthExchange(t *testing.T) {
	type step struct {
		appid, secret, grant, code string
	}
	cases := []struct {
		name    string
		unbound bool
		setup   func(h *harness) step
		want    int
		fields  map[string]any // exact values expected; nil value = key must be absent
	}{
		{"base scope", false, func(h *harness) step {
			return step{code: h.code(testApp, fullFollower.OpenID, ScopeBase)}
		}, 0, map[string]any{"openid": fullFollower.OpenID, "scope": ScopeBase, "expires_in": 7200.0, "unionid": nil, "is_snapshotuser": nil}},
		{"userinfo scope, bound, follower with unionid", false, func(h *harness) step {
			return step{code: h.code(testApp, fullFollower.OpenID, ScopeUserInfo)}
		}, 0, map[string]any{"openid": fullFollower.OpenID, "scope": ScopeUserInfo, "unionid": fullFollower.UnionID}},
		{"userinfo scope, unbound app", true, func(h *harness) step {
			return step{code: h.code(testApp, fullFollower.OpenID, ScopeUserInfo)}
		}, 0, map[string]any{"unionid": nil}},
		{"userinfo scope, SNS-only user with unionid", false, func(h *harness) step {
			return step{code: h.code(testApp, snsOnly.OpenID, ScopeUserInfo)}
		}, 0, map[string]any{"openid": snsOnly.OpenID, "unionid": snsOnly.UnionID}},
		{"userinfo scope, unknown user", false, func(h *harness) step {
			return step{code: h.code(testApp, "oStranger0000000000000000000", ScopeUserInfo)}
		}, 0, map[string]any{"openid": "oStranger0000000000000000000", "unionid": nil}},
		{"snapshot user", false, func(h *harness) step {
			c, err := h.sim.IssueCodeWith(CodeRequest{AppID: testApp, OpenID: plainFollower.OpenID, Scope: ScopeBase, SnapshotUser: true})
			if err != nil {
				t.Fatal(err)
			}
			return step{code: c}
		}, 0, map[string]any{"is_snapshotuser": 1.0}},
		{"code at 4m59s", false, func(h *harness) step {
			c := h.code(testApp, plainFollower.OpenID, ScopeBase)
			h.clock.Advance(5*time.Minute - time.Second)
			return step{code: c}
		}, 0, nil},
		{"code expired at 5m", false, func(h *harness) step {
			c := h.code(testApp, plainFollower.OpenID, ScopeBase)
			h.clock.Advance(5 * time.Minute)
			return step{code: c}
		}, 40029, nil},
		{"website code at 9m59s", false, func(h *harness) step {
			c := h.code(testApp, plainFollower.OpenID, ScopeLogin)
			h.clock.Advance(10*time.Minute - time.Second)
			return step{code: c}
		}, 0, map[string]any{"scope": ScopeLogin}},
		{"website code expired at 10m", false, func(h *harness) step {
			c := h.code(testApp, plainFollower.OpenID, ScopeLogin)
			h.clock.Advance(10 * time.Minute)
			return step{code: c}
		}, 40029, nil},
		{"code reused", false, func(h *harness) step {
			c := h.code(testApp, plainFollower.OpenID, ScopeBase)
			if a := h.exchange(testApp, testSecret, c); a.errcode() != 0 {
				t.Fatalf("first exchange: %s", a.raw)
			}
			return step{code: c}
		}, 40163, nil},
		{"unknown code", false, func(h *harness) step { return step{code: "0abcdefghijklmnopqrstuvwxyz01234"} }, 40029, nil},
		{"another app's code", false, func(h *harness) step {
			return step{code: h.code(otherApp, plainFollower.OpenID, ScopeBase)}
		}, 40029, nil},
		{"missing code", false, func(h *harness) step { return step{code: ""} }, 41008, nil},
		{"unknown appid", false, func(h *harness) step {
			return step{appid: "wxnope", code: h.code(testApp, plainFollower.OpenID, ScopeBase)}
		}, 40013, nil},
		{"wrong secret", false, func(h *harness) step {
			return step{secret: otherSec, code: h.code(testApp, plainFollower.OpenID, ScopeBase)}
		}, 40125, nil},
		{"bad grant_type", false, func(h *harness) step {
			return step{grant: "client_credential", code: h.code(testApp, plainFollower.OpenID, ScopeBase)}
		}, 40002, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			seedUsers(t, h)
			h.sim.SetBoundToOpenPlatform(testApp, !tc.unbound)
			st := tc.setup(h)
			if st.appid == "" {
				st.appid = testApp
			}
			if st.secret == "" {
				st.secret = testSecret
			}
			if st.grant == "" {
				st.grant = "authorization_code"
			}
			a := h.get(PathOAuthToken, url.Values{"appid": {st.appid}, "secret": {st.secret}, "code": {st.code}, "grant_type": {st.grant}})
			wantErr(t, a, tc.want)
			if tc.want != 0 {
				return
			}
			if a.has("errcode") || !tokenCharset.MatchString(a.str("access_token")+strings.Repeat("x", 40)) ||
				a.str("refresh_token") == "" || a.num("expires_in") != 7200 {
				t.Fatalf("bad success answer: %s", a.raw)
			}
			if h.use(a.str("access_token")) != 40001 {
				t.Fatal("a user token was accepted as a global token")
			}
			for k, v := range tc.fields {
				if v == nil {
					if a.has(k) {
						t.Errorf("%s present: %s", k, a.raw)
					}
				} else if a.m[k] != v {
					t.Errorf("%s = %v, want %v", k, a.m[k], v)
				}
			}
		})
	}
}

func TestOAuthFaultStillConsumesCode(t *testing.T) {
	cases := []struct {
		name  string
		fault Fault
	}{
		{"errcode -1", Fault{Path: PathOAuthToken, ErrCode: -1, Count: 1}},
		{"HTTP 502", Fault{Path: PathOAuthToken, HTTPStatus: 502, Count: 1}},
		{"wildcard -1", Fault{Path: "*", ErrCode: -1, Count: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			c := h.code(testApp, plainFollower.OpenID, ScopeBase)
			if err := h.sim.AddFault(tc.fault); err != nil {
				t.Fatal(err)
			}
			first := h.exchange(testApp, testSecret, c)
			if tc.fault.ErrCode != 0 {
				wantErr(t, first, tc.fault.ErrCode)
			} else if first.status != tc.fault.HTTPStatus {
				t.Fatalf("HTTP %d", first.status)
			}
			wantErr(t, h.exchange(testApp, testSecret, c), 40163)
			// An unrelated fresh code still works: the fault is spent.
			if a := h.exchange(testApp, testSecret, h.code(testApp, plainFollower.OpenID, ScopeBase)); a.errcode() != 0 {
				t.Fatalf("fresh code: %s", a.raw)
			}
		})
	}
}

func (h *harness) refresh(appid, rt string) answer {
	h.t.Helper()
	return h.get(PathOAuthRefresh, url.Values{"appid": {appid}, "grant_type": {"refresh_token"}, "refresh_token": {rt}})
}

func (h *harness) snsAuth(tok, openid string) int {
	h.t.Helper()
	a := h.get(PathSNSAuth, url.Values{"access_token": {tok}, "openid": {openid}})
	if a.errcode() == 0 && a.str("errmsg") != "ok" {
		h.t.Fatalf("sns/auth success without errmsg ok: %s", a.raw)
	}
	return a.errcode()
}

func TestOAuthRefresh(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, h *harness, ex answer)
	}{
		{"not expired: same token, expiry extended", func(t *testing.T, h *harness, ex answer) {
			h.clock.Advance(7000 * time.Second)
			r := h.refresh(testApp, ex.str("refresh_token"))
			wantErr(t, r, 0)
			if r.str("access_token") != ex.str("access_token") || r.num("expires_in") != 7200 ||
				r.str("refresh_token") != ex.str("refresh_token") || r.str("openid") != plainFollower.OpenID || r.str("scope") != ScopeUserInfo {
				t.Fatalf("refresh: %s", r.raw)
			}
			h.clock.Advance(7000 * time.Second) // 14000 s after issue: valid thanks to the extension
			if got := h.snsAuth(ex.str("access_token"), plainFollower.OpenID); got != 0 {
				t.Fatalf("extended token: %d", got)
			}
		}},
		{"expired: new token", func(t *testing.T, h *harness, ex answer) {
			h.clock.Advance(7200 * time.Second)
			if got := h.snsAuth(ex.str("access_token"), plainFollower.OpenID); got != 42001 {
				t.Fatalf("expired user token: %d, want 42001", got)
			}
			r := h.refresh(testApp, ex.str("refresh_token"))
			wantErr(t, r, 0)
			if r.str("access_token") == ex.str("access_token") || r.num("expires_in") != 7200 {
				t.Fatalf("refresh: %s", r.raw)
			}
			if h.snsAuth(r.str("access_token"), plainFollower.OpenID) != 0 {
				t.Fatal("new user token does not work")
			}
		}},
		{"refresh_token lives 30 days and is not extended", func(t *testing.T, h *harness, ex answer) {
			h.clock.Advance(29 * 24 * time.Hour)
			wantErr(t, h.refresh(testApp, ex.str("refresh_token")), 0)
			h.clock.Advance(24 * time.Hour)
			wantErr(t, h.refresh(testApp, ex.str("refresh_token")), 42002)
		}},
		{"unknown refresh_token", func(t *testing.T, h *harness, ex answer) {
			wantErr(t, h.refresh(testApp, strings.Repeat("r", 100)), 40030)
		}},
		{"another app's refresh_token", func(t *testing.T, h *harness, ex answer) {
			wantErr(t, h.refresh(otherApp, ex.str("refresh_token")), 40030)
		}},
		{"unknown appid", func(t *testing.T, h *harness, ex answer) {
			wantErr(t, h.refresh("wxnope", ex.str("refresh_token")), 40013)
		}},
		{"bad grant_type", func(t *testing.T, h *harness, ex answer) {
			wantErr(t, h.get(PathOAuthRefresh, url.Values{"appid": {testApp}, "grant_type": {"authorization_code"}, "refresh_token": {ex.str("refresh_token")}}), 40002)
		}},
		{"42007 by fault", func(t *testing.T, h *harness, ex answer) {
			if err := h.sim.AddFault(Fault{Path: PathOAuthRefresh, ErrCode: 42007}); err != nil {
				t.Fatal(err)
			}
			wantErr(t, h.refresh(testApp, ex.str("refresh_token")), 42007)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			seedUsers(t, h)
			ex := h.exchange(testApp, testSecret, h.code(testApp, plainFollower.OpenID, ScopeUserInfo))
			wantErr(t, ex, 0)
			tc.run(t, h, ex)
		})
	}
}

func TestSNSUserInfoAndAuth(t *testing.T) {
	type tok struct{ token, openid string }
	exchange := func(h *harness, openid, scope string) tok {
		a := h.exchange(testApp, testSecret, h.code(testApp, openid, scope))
		wantErr(h.t, a, 0)
		return tok{a.str("access_token"), openid}
	}
	cases := []struct {
		name     string
		unbound  bool
		setup    func(h *harness) tok
		want     int
		wantAuth int
		fields   map[string]any
	}{
		{"follower profile", false, func(h *harness) tok { return exchange(h, fullFollower.OpenID, ScopeUserInfo) }, 0, 0, map[string]any{
			"openid": fullFollower.OpenID, "nickname": "Nick", "sex": 0.0, "province": "", "city": "", "country": "",
			"headimgurl": "https://example.invalid/h.png", "privilege": []any{}, "unionid": fullFollower.UnionID,
		}},
		{"sex and region are gone since 2021 (demo follower)", false, func(h *harness) tok {
			d := h.sim.SeedDemo()
			a := h.exchange(d.AppID, d.Secret, h.code(d.AppID, d.OpenIDs[0], ScopeUserInfo))
			wantErr(h.t, a, 0)
			return tok{a.str("access_token"), d.OpenIDs[0]}
		}, 0, 0, map[string]any{"nickname": "小明", "sex": 0.0, "province": "", "city": "", "country": ""}},
		{"unbound: no unionid", true, func(h *harness) tok { return exchange(h, fullFollower.OpenID, ScopeUserInfo) }, 0, 0, map[string]any{
			"unionid": nil, "nickname": "Nick",
		}},
		{"SNS-only user", false, func(h *harness) tok { return exchange(h, snsOnly.OpenID, ScopeUserInfo) }, 0, 0, map[string]any{
			"nickname": "Visitor", "sex": 0.0, "country": "", "unionid": snsOnly.UnionID,
		}},
		{"unknown user gets WeChat's defaults", false, func(h *harness) tok { return exchange(h, "oStranger0000000000000000000", ScopeUserInfo) }, 0, 0, map[string]any{
			"nickname": defaultNickname, "headimgurl": defaultHeadImgURL, "unionid": nil,
		}},
		{"snsapi_base token", false, func(h *harness) tok { return exchange(h, fullFollower.OpenID, ScopeBase) }, 48001, 0, nil},
		{"openid mismatch", false, func(h *harness) tok {
			k := exchange(h, fullFollower.OpenID, ScopeUserInfo)
			k.openid = plainFollower.OpenID
			return k
		}, 40003, 40003, nil},
		{"expired", false, func(h *harness) tok {
			k := exchange(h, fullFollower.OpenID, ScopeUserInfo)
			h.clock.Advance(7200 * time.Second)
			return k
		}, 42001, 42001, nil},
		{"unknown token", false, func(h *harness) tok { return tok{strings.Repeat("Zz9", 40), fullFollower.OpenID} }, 40001, 40001, nil},
		{"malformed token", false, func(h *harness) tok { return tok{"not a token", fullFollower.OpenID} }, 40014, 40014, nil},
		{"missing token", false, func(h *harness) tok { return tok{"", fullFollower.OpenID} }, 41001, 41001, nil},
		{"global token is not a user token", false, func(h *harness) tok { return tok{h.token(testApp, testSecret), fullFollower.OpenID} }, 40001, 40001, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			seedUsers(t, h)
			h.sim.SetBoundToOpenPlatform(testApp, !tc.unbound)
			k := tc.setup(h)
			a := h.get(PathSNSUserInfo, url.Values{"access_token": {k.token}, "openid": {k.openid}, "lang": {"zh_CN"}})
			wantErr(t, a, tc.want)
			for f, v := range tc.fields {
				if v == nil {
					if a.has(f) {
						t.Errorf("%s present: %s", f, a.raw)
					}
					continue
				}
				if l, ok := v.([]any); ok {
					if got, _ := a.m[f].([]any); got == nil || len(got) != len(l) {
						t.Errorf("%s = %v, want %v", f, a.m[f], v)
					}
					continue
				}
				if a.m[f] != v {
					t.Errorf("%s = %v, want %v", f, a.m[f], v)
				}
			}
			if got := h.snsAuth(k.token, k.openid); got != tc.wantAuth {
				t.Fatalf("sns/auth errcode %d, want %d", got, tc.wantAuth)
			}
		})
	}
}

func TestIssueCodeValidation(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		name                 string
		appid, openid, scope string
		ok                   bool
	}{
		{"ok base", testApp, "o1", ScopeBase, true},
		{"ok userinfo", testApp, "o1", ScopeUserInfo, true},
		{"unknown app", "wxnope", "o1", ScopeBase, false},
		{"no openid", testApp, "", ScopeBase, false},
		{"ok login (website apps)", testApp, "o1", ScopeLogin, true},
		{"bad scope", testApp, "o1", "snsapi_all", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := h.sim.IssueCode(tc.appid, tc.openid, tc.scope)
			if (err == nil) != tc.ok || (tc.ok && len(c) < 20) {
				t.Fatalf("code %q err %v", c, err)
			}
		})
	}
}
