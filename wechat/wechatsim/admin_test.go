package wechatsim

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestAdminBadInput(t *testing.T) {
	cases := []struct {
		name, method, path, body string
		status                   int
		errHas                   string
	}{
		{"apps: not JSON", http.MethodPost, "/_sim/apps", "appid=x", 400, "bad JSON"},
		{"apps: empty body", http.MethodPost, "/_sim/apps", "", 400, "empty body"},
		{"apps: no appid", http.MethodPost, "/_sim/apps", `{"secret":"s"}`, 400, "appid is required"},
		{"apps: no secret", http.MethodPost, "/_sim/apps", `{"appid":"wxa"}`, 400, "secret is required"},
		{"apps: negative limit", http.MethodPost, "/_sim/apps", `{"appid":"wxa","secret":"s","token_daily_limit":-1}`, 400, "token_daily_limit"},
		{"apps: unknown field", http.MethodPost, "/_sim/apps", `{"appid":"wxa","secret":"s","sekret":"x"}`, 400, "sekret"},
		{"apps: trailing data", http.MethodPost, "/_sim/apps", `{"appid":"wxa","secret":"s"} {}`, 400, "trailing"},
		{"apps: GET", http.MethodGet, "/_sim/apps", "", 405, ""},
		{"followers: unknown app", http.MethodPost, "/_sim/followers", `{"appid":"wxnope","openid":"o1"}`, 400, "unknown appid"},
		{"followers: no appid", http.MethodPost, "/_sim/followers", `{"openid":"o1"}`, 400, "appid is required"},
		{"followers: no openid", http.MethodPost, "/_sim/followers", `{"appid":"` + testApp + `"}`, 400, "openid is required"},
		{"followers: wrong type", http.MethodPost, "/_sim/followers", `{"appid":"` + testApp + `","openid":"o","tagid_list":"x"}`, 400, "tagid_list"},
		{"followers: sex is no longer WeChat's", http.MethodPost, "/_sim/followers", `{"appid":"` + testApp + `","openid":"o","sex":1}`, 400, "sex"},
		{"followers: subscribe is 0 or 1", http.MethodPost, "/_sim/followers", `{"appid":"` + testApp + `","openid":"o","subscribe":2}`, 400, "subscribe must be 0 or 1"},
		{"followers: unknown subscribe_scene", http.MethodPost, "/_sim/followers", `{"appid":"` + testApp + `","openid":"o","subscribe_scene":"ADD_SCENE_MAGIC"}`, 400, "subscribe_scene"},
		{"codes: bad scope", http.MethodPost, "/_sim/codes", `{"appid":"` + testApp + `","openid":"o","scope":"x"}`, 400, "scope"},
		{"codes: unknown app", http.MethodPost, "/_sim/codes", `{"appid":"wxnope","openid":"o","scope":"snsapi_base"}`, 400, "unknown appid"},
		{"faults: unknown path", http.MethodPost, "/_sim/faults", `{"path":"/nope","errcode":-1}`, 400, "not a simulated endpoint"},
		{"faults: nothing", http.MethodPost, "/_sim/faults", `{"path":"*"}`, 400, "errcode, http_status or delay_ms"},
		{"faults: bad rate", http.MethodPost, "/_sim/faults", `{"errcode":-1,"rate":2}`, 400, "rate"},
		{"latency: missing ms", http.MethodPost, "/_sim/latency", `{}`, 400, "ms is required"},
		{"latency: negative", http.MethodPost, "/_sim/latency", `{"ms":-5}`, 400, "ms"},
		{"clock: real clock", http.MethodPost, "/_sim/clock", `{"advance_ms":1000}`, 409, "real clock"},
		{"clock: missing", http.MethodPost, "/_sim/clock", `{}`, 400, "advance_ms"},
		{"unknown admin path", http.MethodGet, "/_sim/nope", "", 404, ""},
	}
	h := newHarness(t)
	real := httptestServer(t, New(WithLogger(quiet)))
	real.sim.AddApp(testApp, testSecret)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := h
			if tc.status == 409 {
				srv = real
			}
			a := srv.do(tc.method, tc.path, nil, tc.body)
			if a.status != tc.status {
				t.Fatalf("HTTP %d, want %d: %s", a.status, tc.status, a.raw)
			}
			if tc.errHas != "" && !strings.Contains(a.str("error"), tc.errHas) {
				t.Fatalf("error %q does not name %q", a.str("error"), tc.errHas)
			}
		})
	}
}

// httptestServer serves sim without a ManualClock.
func httptestServer(t *testing.T, sim *Sim) *harness {
	h := &harness{t: t, sim: sim}
	h.srv = newServer(t, sim)
	return h
}

func TestAdminFlow(t *testing.T) {
	h := newHarness(t)
	const app, secret = "wxadmin000000001", "adminsecret"
	steps := []struct {
		name   string
		method string
		path   string
		body   any
		status int
		check  func(t *testing.T, a answer)
	}{
		{"add app", http.MethodPost, "/_sim/apps", map[string]any{"appid": app, "secret": secret, "token_daily_limit": 1, "bound_to_open_platform": true}, 201,
			func(t *testing.T, a answer) {
				if a.str("appid") != app {
					t.Fatalf("%s", a.raw)
				}
			}},
		{"add follower", http.MethodPost, "/_sim/followers", map[string]any{"appid": app, "openid": "oAdmin1", "unionid": "uAdmin1", "remark": "r", "tagid_list": []int{3}}, 201, nil},
		{"add SNS-only user", http.MethodPost, "/_sim/followers", map[string]any{"appid": app, "openid": "oAdmin2", "follower": false, "nickname": "N"}, 201, nil},
		{"set latency", http.MethodPost, "/_sim/latency", map[string]any{"ms": 0}, 200, nil},
		{"get latency", http.MethodGet, "/_sim/latency", nil, 200, func(t *testing.T, a answer) {
			if !a.has("ms") || a.num("ms") != 0 {
				t.Fatalf("%s", a.raw)
			}
		}},
		{"add fault", http.MethodPost, "/_sim/faults", map[string]any{"path": PathUserInfo, "errcode": -1, "count": 1}, 201, nil},
		{"list faults", http.MethodGet, "/_sim/faults", nil, 200, func(t *testing.T, a answer) {
			if !strings.Contains(string(a.raw), PathUserInfo) {
				t.Fatalf("%s", a.raw)
			}
		}},
		{"clear faults", http.MethodDelete, "/_sim/faults", nil, 204, nil},
		{"advance clock", http.MethodPost, "/_sim/clock", map[string]any{"advance_ms": 60000}, 200, func(t *testing.T, a answer) {
			if !h.clock.Now().Equal(t0.Add(time.Minute)) {
				t.Fatalf("clock at %v", h.clock.Now())
			}
		}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			var a answer
			if st.body != nil {
				a = h.do(st.method, st.path, nil, mustJSON(t, st.body))
			} else {
				a = h.do(st.method, st.path, nil, "")
			}
			if a.status != st.status {
				t.Fatalf("HTTP %d, want %d: %s", a.status, st.status, a.raw)
			}
			if st.check != nil {
				st.check(t, a)
			}
		})
	}

	// The app, limit, followers and codes set over HTTP work on the API.
	tok := h.token(app, secret)
	wantErr(t, h.get(PathToken, url.Values{"grant_type": {"client_credential"}, "appid": {app}, "secret": {secret}}), 45009)
	info := h.get(PathUserInfo, url.Values{"access_token": {tok}, "openid": {"oAdmin1"}})
	if info.errcode() != 0 || info.str("remark") != "r" || info.str("unionid") != "uAdmin1" {
		t.Fatalf("user/info: %s", info.raw)
	}
	wantErr(t, h.get(PathUserInfo, url.Values{"access_token": {tok}, "openid": {"oAdmin2"}}), 40003)
	c := h.postJSON("/_sim/codes", map[string]any{"appid": app, "openid": "oAdmin2", "scope": ScopeUserInfo})
	if c.status != 200 || c.str("code") == "" {
		t.Fatalf("codes: %d %s", c.status, c.raw)
	}
	ex := h.exchange(app, secret, c.str("code"))
	wantErr(t, ex, 0)
	ui := h.get(PathSNSUserInfo, url.Values{"access_token": {ex.str("access_token")}, "openid": {"oAdmin2"}})
	if ui.str("nickname") != "N" {
		t.Fatalf("sns/userinfo: %s", ui.raw)
	}

	stats := h.get("/_sim/stats", nil)
	calls, _ := stats.m["calls"].(map[string]any)
	ui2, _ := calls[PathUserInfo].(map[string]any)
	if stats.status != 200 || ui2[app] != 2.0 {
		t.Fatalf("stats: %s", stats.raw)
	}
	if tokens, _ := stats.m["tokens_issued"].(map[string]any); tokens[app] != 1.0 {
		t.Fatalf("stats tokens_issued: %s", stats.raw)
	}
	if errs, _ := stats.m["errcodes"].(map[string]any); errs["45009"] != 1.0 {
		t.Fatalf("stats errcodes: %s", stats.raw)
	}
	if a := h.do(http.MethodDelete, "/_sim/stats", nil, ""); a.status != 204 {
		t.Fatalf("DELETE stats: %d", a.status)
	}
	if n := h.sim.Stats().TotalCalls(PathUserInfo); n != 0 {
		t.Fatalf("stats not reset: %d", n)
	}
	if a := h.postJSON("/_sim/latency", map[string]any{"ms": 25}); a.status != 200 || h.sim.Latency() != 25*time.Millisecond {
		t.Fatalf("latency: %d %v", a.status, h.sim.Latency())
	}
}
