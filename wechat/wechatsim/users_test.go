package wechatsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	fullFollower = Follower{
		OpenID: "oFull00000000000000000000001", UnionID: "uFull0000000000000000000001",
		SubscribeTime: 1700000000, Language: "zh_TW", Remark: "vip", GroupID: 2, TagIDList: []int{128, 2},
		SubscribeScene: "ADD_SCENE_QR_CODE", QRScene: 98765, QRSceneStr: "promo",
		Nickname: "Nick", HeadImgURL: "https://example.invalid/h.png",
	}
	plainFollower = Follower{OpenID: "oPlain0000000000000000000002"}
	goneFollower  = Follower{OpenID: "oGone00000000000000000000003", UnionID: "uGone0000000000000000000003", Subscribe: intp(0), SubscribeTime: 5, Remark: "x"}
	snsOnly       = Follower{OpenID: "oSNS000000000000000000000004", UnionID: "uSNS00000000000000000000004", Nickname: "Visitor"}
)

func seedUsers(t *testing.T, h *harness) {
	t.Helper()
	for _, f := range []Follower{fullFollower, plainFollower, goneFollower} {
		if err := h.sim.AddFollower(testApp, f); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.sim.AddSNSUser(testApp, snsOnly); err != nil {
		t.Fatal(err)
	}
}

func TestUserInfo(t *testing.T) {
	full := map[string]any{
		"subscribe": 1.0, "openid": fullFollower.OpenID, "language": "zh_TW", "subscribe_time": 1700000000.0,
		"unionid": fullFollower.UnionID, "remark": "vip", "groupid": 2.0, "tagid_list": []any{128.0, 2.0},
		"subscribe_scene": "ADD_SCENE_QR_CODE", "qr_scene": 98765.0, "qr_scene_str": "promo",
	}
	fullUnbound := map[string]any{}
	for k, v := range full {
		if k != "unionid" {
			fullUnbound[k] = v
		}
	}
	cases := []struct {
		name    string
		openid  string
		lang    string
		unbound bool
		other   bool // use otherApp's token
		want    int
		fields  map[string]any
	}{
		{"full follower", fullFollower.OpenID, "zh_CN", false, false, 0, full},
		{"lang en gives the same answer", fullFollower.OpenID, "en", false, false, 0, full},
		{"unknown lang treated as zh_CN", fullFollower.OpenID, "fr", false, false, 0, full},
		{"no lang", fullFollower.OpenID, "", false, false, 0, full},
		{"unbound app: no unionid", fullFollower.OpenID, "zh_CN", true, false, 0, fullUnbound},
		{"defaults", plainFollower.OpenID, "zh_CN", false, false, 0, map[string]any{
			"subscribe": 1.0, "openid": plainFollower.OpenID, "language": "zh_CN", "subscribe_time": 0.0,
			"remark": "", "groupid": 0.0, "tagid_list": []any{}, "subscribe_scene": "ADD_SCENE_OTHERS",
			"qr_scene": 0.0, "qr_scene_str": "",
		}},
		{"unsubscribed: subscribe, openid, unionid only", goneFollower.OpenID, "zh_CN", false, false, 0, map[string]any{
			"subscribe": 0.0, "openid": goneFollower.OpenID, "unionid": goneFollower.UnionID,
		}},
		{"unsubscribed, unbound", goneFollower.OpenID, "zh_CN", true, false, 0, map[string]any{
			"subscribe": 0.0, "openid": goneFollower.OpenID,
		}},
		{"not a follower", "oNobody000000000000000000000", "zh_CN", false, false, 40003, nil},
		{"SNS-only user is not a follower", snsOnly.OpenID, "zh_CN", false, false, 40003, nil},
		{"another app's follower", fullFollower.OpenID, "zh_CN", false, true, 40003, nil},
		{"missing openid", "", "zh_CN", false, false, 40003, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			seedUsers(t, h)
			h.sim.SetBoundToOpenPlatform(testApp, !tc.unbound)
			tok := h.token(testApp, testSecret)
			if tc.other {
				tok = h.token(otherApp, otherSec)
			}
			a := h.get(PathUserInfo, url.Values{"access_token": {tok}, "openid": {tc.openid}, "lang": {tc.lang}})
			wantErr(t, a, tc.want)
			if tc.fields == nil {
				return
			}
			got, _ := json.Marshal(a.m)
			want, _ := json.Marshal(tc.fields)
			if string(got) != string(want) {
				t.Fatalf("answer\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestUserInfoReplacesFollower(t *testing.T) {
	h := newHarness(t)
	f := plainFollower
	f.Remark = "first"
	if err := h.sim.AddFollower(testApp, f); err != nil {
		t.Fatal(err)
	}
	f.Remark = "second"
	if err := h.sim.AddFollower(testApp, f); err != nil {
		t.Fatal(err)
	}
	a := h.get(PathUserInfo, url.Values{"access_token": {h.token(testApp, testSecret)}, "openid": {f.OpenID}})
	if a.str("remark") != "second" {
		t.Fatalf("remark %q", a.str("remark"))
	}
	if err := h.sim.AddFollower("wxnope", f); err == nil {
		t.Fatal("AddFollower to an unknown app succeeded")
	}
	if err := h.sim.AddFollower(testApp, Follower{}); err == nil {
		t.Fatal("AddFollower without openid succeeded")
	}
}

func TestUserInfoMethods(t *testing.T) {
	h := newHarness(t)
	seedUsers(t, h)
	q := url.Values{"access_token": {h.token(testApp, testSecret)}, "openid": {plainFollower.OpenID}}
	cases := []struct {
		method string
		want   int
	}{{http.MethodGet, 0}, {http.MethodPost, 0}}
	for _, tc := range cases {
		t.Run(tc.method, func(t *testing.T) {
			a := h.do(tc.method, PathUserInfo, q, "")
			wantErr(t, a, tc.want)
			if a.str("openid") != plainFollower.OpenID {
				t.Fatalf("answer %s", a.raw)
			}
		})
	}
}

func TestBatchGet(t *testing.T) {
	h := newHarness(t)
	seedUsers(t, h)
	tok := h.token(testApp, testSecret)
	list := func(ids ...string) string {
		var parts []string
		for _, id := range ids {
			parts = append(parts, fmt.Sprintf(`{"openid":%q,"lang":"zh_CN"}`, id))
		}
		return `{"user_list":[` + strings.Join(parts, ",") + `]}`
	}
	many := func(n int) string {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = plainFollower.OpenID
		}
		return list(ids...)
	}
	cases := []struct {
		name   string
		method string
		token  string
		body   string
		want   int
		openid []string
	}{
		{"ok in order", http.MethodPost, tok, list(plainFollower.OpenID, fullFollower.OpenID, goneFollower.OpenID), 0,
			[]string{plainFollower.OpenID, fullFollower.OpenID, goneFollower.OpenID}},
		{"100 entries", http.MethodPost, tok, many(100), 0, nil},
		{"101 entries", http.MethodPost, tok, many(101), 40032, nil},
		{"empty list", http.MethodPost, tok, `{"user_list":[]}`, 40032, nil},
		{"no list", http.MethodPost, tok, `{}`, 40032, nil},
		{"a bad openid", http.MethodPost, tok, list(plainFollower.OpenID, "oNobody000000000000000000000"), 40003, nil},
		{"not JSON", http.MethodPost, tok, `user_list=1`, 47001, nil},
		{"GET", http.MethodGet, tok, "", 43002, nil},
		{"no token", http.MethodPost, "", list(plainFollower.OpenID), 41001, nil},
		{"unknown token", http.MethodPost, strings.Repeat("x", 140), list(plainFollower.OpenID), 40001, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := url.Values{}
			if tc.token != "" {
				q.Set("access_token", tc.token)
			}
			a := h.do(tc.method, PathUserInfoBatch, q, tc.body)
			wantErr(t, a, tc.want)
			if tc.want != 0 {
				return
			}
			infos, ok := a.m["user_info_list"].([]any)
			if !ok {
				t.Fatalf("no user_info_list: %s", a.raw)
			}
			if tc.openid != nil {
				var got []string
				for _, u := range infos {
					got = append(got, u.(map[string]any)["openid"].(string))
				}
				if !slices.Equal(got, tc.openid) {
					t.Fatalf("openids %v, want %v", got, tc.openid)
				}
			} else if len(infos) != 100 {
				t.Fatalf("%d entries", len(infos))
			}
		})
	}
}

func TestIPLists(t *testing.T) {
	h := newHarness(t)
	tok := h.token(testApp, testSecret)
	for _, path := range []string{PathCallbackIP, PathAPIDomainIP} {
		cases := []struct {
			name  string
			token string
			want  int
		}{{"ok", tok, 0}, {"missing token", "", 41001}, {"unknown token", strings.Repeat("Q", 150), 40001}}
		for _, tc := range cases {
			t.Run(path+"/"+tc.name, func(t *testing.T) {
				a := h.get(path, url.Values{"access_token": {tc.token}})
				wantErr(t, a, tc.want)
				if ips, _ := a.m["ip_list"].([]any); tc.want == 0 && len(ips) == 0 {
					t.Fatalf("no ip_list: %s", a.raw)
				}
			})
		}
	}
}

func TestRouting(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		name, method, path string
		status             int
		json               bool
	}{
		{"unknown path", http.MethodGet, "/cgi-bin/nope", http.StatusNotFound, false},
		{"root", http.MethodGet, "/", http.StatusNotFound, false},
		{"trailing slash is another path", http.MethodGet, "/cgi-bin/token/", http.StatusNotFound, false},
		{"known path", http.MethodGet, PathToken, http.StatusOK, true},
		{"PUT on batchget", http.MethodPut, PathUserInfoBatch, http.StatusOK, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := h.do(tc.method, tc.path, nil, "")
			if a.status != tc.status || (a.m != nil) != tc.json {
				t.Fatalf("HTTP %d json=%v: %s", a.status, a.m != nil, a.raw)
			}
		})
	}
}

func TestDailyLimitOfTokenEndpoints(t *testing.T) {
	type call func(h *harness, tok string) answer
	userInfo := func(openid string) call {
		return func(h *harness, tok string) answer {
			return h.get(PathUserInfo, url.Values{"access_token": {tok}, "openid": {openid}})
		}
	}
	batch := func(h *harness, tok string) answer {
		return h.post(PathUserInfoBatch, url.Values{"access_token": {tok}}, `{"user_list":[{"openid":"`+plainFollower.OpenID+`"}]}`)
	}
	ips := func(path string) call {
		return func(h *harness, tok string) answer { return h.get(path, url.Values{"access_token": {tok}}) }
	}
	cases := []struct {
		name  string
		path  string // SetDailyLimit(path, 2)
		calls []call // answered before the limit bites
		next  call
		want  int
	}{
		{"user/info: the 3rd call answers 45009", PathUserInfo, []call{userInfo(plainFollower.OpenID), userInfo(fullFollower.OpenID)}, userInfo(plainFollower.OpenID), 45009},
		{"user/info: a call with a bad openid counts", PathUserInfo, []call{userInfo("oNobody"), userInfo(plainFollower.OpenID)}, userInfo(plainFollower.OpenID), 45009},
		{"user/info: batchget has its own count", PathUserInfo, []call{userInfo(plainFollower.OpenID), userInfo(plainFollower.OpenID)}, batch, 0},
		{"batchget", PathUserInfoBatch, []call{batch, batch}, batch, 45009},
		{"getcallbackip", PathCallbackIP, []call{ips(PathCallbackIP), ips(PathCallbackIP)}, ips(PathCallbackIP), 45009},
		{"get_api_domain_ip", PathAPIDomainIP, []call{ips(PathAPIDomainIP), ips(PathAPIDomainIP)}, ips(PathAPIDomainIP), 45009},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			seedUsers(t, h)
			if err := h.sim.SetDailyLimit(testApp, tc.path, 2); err != nil {
				t.Fatal(err)
			}
			tok := h.token(testApp, testSecret)
			// A call with a bad token is not the app's: it does not count.
			wantErr(t, tc.next(h, strings.Repeat("Q", 150)), 40001)
			for _, c := range tc.calls {
				if a := c(h, tok); a.errcode() == 45009 {
					t.Fatalf("refused before the limit: %s", a.raw)
				}
			}
			wantErr(t, tc.next(h, tok), tc.want)
			if a := tc.next(h, h.token(otherApp, otherSec)); a.errcode() == 45009 {
				t.Fatalf("another app's call refused: %s", a.raw)
			}
			h.clock.Advance(14 * time.Hour) // 10:00 → 00:00 the next China day
			if a := tc.next(h, h.token(testApp, testSecret)); a.errcode() == 45009 {
				t.Fatalf("the next China day: %s", a.raw)
			}
		})
	}
}

func TestSetDailyLimitValidation(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		name, appid, path string
		n                 int
		ok                bool
	}{
		{"user/info", testApp, PathUserInfo, 10, true},
		{"no call at all", testApp, PathUserInfo, 0, true},
		{"no limit", testApp, PathToken, -1, true},
		{"unknown app", "wxnope", PathUserInfo, 10, false},
		{"sns paths have no quota", testApp, PathSNSUserInfo, 10, false},
		{"not an endpoint", testApp, "/cgi-bin/nope", 10, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := h.sim.SetDailyLimit(tc.appid, tc.path, tc.n); (err == nil) != tc.ok {
				t.Fatalf("err %v", err)
			}
		})
	}
}

func TestDailyLimitZeroRefusesAllNegativeNone(t *testing.T) {
	fetch := func(h *harness) answer {
		return h.get(PathToken, url.Values{"grant_type": {"client_credential"}, "appid": {testApp}, "secret": {testSecret}})
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, h *harness)
		want  int // errcode of the next fetch
	}{
		{"SetDailyLimit 0 refuses the first fetch", func(t *testing.T, h *harness) {
			if err := h.sim.SetDailyLimit(testApp, PathToken, 0); err != nil {
				t.Fatal(err)
			}
		}, 45009},
		{"SetTokenDailyLimit 0 too", func(t *testing.T, h *harness) { h.sim.SetTokenDailyLimit(testApp, 0) }, 45009},
		{"a negative limit lifts one used up", func(t *testing.T, h *harness) {
			h.sim.SetTokenDailyLimit(testApp, 1)
			h.token(testApp, testSecret)
			if err := h.sim.SetDailyLimit(testApp, PathToken, -1); err != nil {
				t.Fatal(err)
			}
		}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			tc.setup(t, h)
			wantErr(t, fetch(h), tc.want)
		})
	}
}
