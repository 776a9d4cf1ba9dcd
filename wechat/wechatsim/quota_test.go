package wechatsim

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

func (h *harness) clearQuota(tok, appid string) answer {
	h.t.Helper()
	return h.post(PathClearQuota, url.Values{"access_token": {tok}}, mustJSON(h.t, map[string]string{"appid": appid}))
}

func (h *harness) quotaGet(tok, path string) answer {
	h.t.Helper()
	return h.post(PathQuotaGet, url.Values{"access_token": {tok}}, mustJSON(h.t, map[string]string{"cgi_path": path}))
}

func TestClearQuota(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, h *harness, tok string)
	}{
		{"zeroes the day's token count", func(t *testing.T, h *harness, tok string) {
			h.sim.SetTokenDailyLimit(testApp, 2)
			tok = h.token(testApp, testSecret) // the 2nd today
			wantErr(t, h.get(PathToken, url.Values{"grant_type": {"client_credential"}, "appid": {testApp}, "secret": {testSecret}}), 45009)
			a := h.clearQuota(tok, testApp)
			wantErr(t, a, 0)
			if a.str("errmsg") != "ok" || len(a.m) != 2 {
				t.Fatalf("clear_quota answer %s, want {errcode 0, errmsg ok}", a.raw)
			}
			h.token(testApp, testSecret)
			h.token(testApp, testSecret)
		}},
		{"zeroes stable_token and user/info too", func(t *testing.T, h *harness, tok string) {
			if err := h.sim.SetDailyLimit(testApp, PathStableToken, 1); err != nil {
				t.Fatal(err)
			}
			if err := h.sim.SetDailyLimit(testApp, PathUserInfo, 1); err != nil {
				t.Fatal(err)
			}
			q := url.Values{"access_token": {tok}, "openid": {plainFollower.OpenID}}
			wantErr(t, h.stable(testApp, testSecret, false), 0)
			wantErr(t, h.get(PathUserInfo, q), 0)
			wantErr(t, h.stable(testApp, testSecret, false), 45009)
			wantErr(t, h.get(PathUserInfo, q), 45009)
			wantErr(t, h.clearQuota(tok, testApp), 0)
			wantErr(t, h.stable(testApp, testSecret, false), 0)
			wantErr(t, h.get(PathUserInfo, q), 0)
		}},
		{"not the 20 forced stable_token refreshes", func(t *testing.T, h *harness, tok string) {
			for range 20 {
				wantErr(t, h.stable(testApp, testSecret, true), 0)
				h.clock.Advance(31 * time.Second)
			}
			wantErr(t, h.clearQuota(tok, testApp), 0)
			wantErr(t, h.stable(testApp, testSecret, true), 45009)
		}},
		{"the 11th clear in a China month answers 48006", func(t *testing.T, h *harness, tok string) {
			h.clock.Set(time.Date(2025, 3, 31, 15, 0, 0, 0, time.UTC)) // 23:00 on 31 March in China
			tok = h.token(testApp, testSecret)
			for i := range 10 {
				if a := h.clearQuota(tok, testApp); a.errcode() != 0 {
					t.Fatalf("clear %d: %s", i+1, a.raw)
				}
			}
			wantErr(t, h.clearQuota(tok, testApp), 48006)
			wantErr(t, h.clearQuota(h.token(otherApp, otherSec), otherApp), 0) // per app
			h.clock.Advance(time.Hour)                                         // 1 April in China
			wantErr(t, h.clearQuota(tok, testApp), 0)
		}},
		{"another app's appid answers 40013", func(t *testing.T, h *harness, tok string) {
			wantErr(t, h.clearQuota(tok, otherApp), 40013)
			wantErr(t, h.clearQuota(tok, ""), 40013)
		}},
		{"GET answers 43002", func(t *testing.T, h *harness, tok string) {
			wantErr(t, h.get(PathClearQuota, url.Values{"access_token": {tok}}), 43002)
		}},
		{"not JSON answers 47001", func(t *testing.T, h *harness, tok string) {
			wantErr(t, h.post(PathClearQuota, url.Values{"access_token": {tok}}, "appid="+testApp), 47001)
		}},
		{"token errors", func(t *testing.T, h *harness, tok string) {
			wantErr(t, h.clearQuota("", testApp), 41001)
			wantErr(t, h.clearQuota("bad token!", testApp), 40014)
			h.clock.Advance(7200 * time.Second)
			wantErr(t, h.clearQuota(tok, testApp), 42001)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			seedUsers(t, h)
			tc.run(t, h, h.token(testApp, testSecret))
		})
	}
}

func TestQuotaGet(t *testing.T) {
	h := newHarness(t)
	seedUsers(t, h)
	tok := h.token(testApp, testSecret)
	h.token(testApp, testSecret)
	tok = h.token(testApp, testSecret) // 3 fetches
	h.stable(testApp, testSecret, false)
	h.stable(testApp, testSecret, false)
	h.get(PathUserInfo, url.Values{"access_token": {tok}, "openid": {plainFollower.OpenID}})
	if err := h.sim.SetDailyLimit(testApp, PathCallbackIP, 10); err != nil {
		t.Fatal(err)
	}
	h.use(tok)
	h.token(otherApp, otherSec) // another app's count is its own
	type quota struct{ limit, used, remain, calls, second int64 }
	cases := []struct {
		name   string
		method string
		body   string
		want   int
		q      quota
	}{
		{"token", http.MethodPost, `{"cgi_path":"/cgi-bin/token"}`, 0, quota{2000, 3, 1997, 0, 0}},
		{"stable_token", http.MethodPost, `{"cgi_path":"/cgi-bin/stable_token"}`, 0, quota{500000, 2, 499998, 10000, 60}},
		{"user/info: no limit", http.MethodPost, `{"cgi_path":"/cgi-bin/user/info"}`, 0, quota{0, 1, 0, 0, 0}},
		{"getcallbackip with a limit", http.MethodPost, `{"cgi_path":"/cgi-bin/getcallbackip"}`, 0, quota{10, 1, 9, 0, 0}},
		{"batchget: unused", http.MethodPost, `{"cgi_path":"/cgi-bin/user/info/batchget"}`, 0, quota{0, 0, 0, 0, 0}},
		{"unknown path", http.MethodPost, `{"cgi_path":"/cgi-bin/nope"}`, 76021, quota{}},
		{"an sns path", http.MethodPost, `{"cgi_path":"/sns/userinfo"}`, 76021, quota{}},
		{"no cgi_path", http.MethodPost, `{}`, 76021, quota{}},
		{"not JSON", http.MethodPost, `cgi_path=/cgi-bin/token`, 47001, quota{}},
		{"GET", http.MethodGet, ``, 43002, quota{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := h.do(tc.method, PathQuotaGet, url.Values{"access_token": {tok}}, tc.body)
			wantErr(t, a, tc.want)
			if tc.want != 0 {
				return
			}
			qm, _ := a.m["quota"].(map[string]any)
			rl, _ := a.m["rate_limit"].(map[string]any)
			got := quota{num(qm, "daily_limit"), num(qm, "used"), num(qm, "remain"), num(rl, "call_count"), num(rl, "refresh_second")}
			if !a.has("errcode") || a.str("errmsg") != "ok" || got != tc.q {
				t.Fatalf("answer %s: quota %+v, want %+v", a.raw, got, tc.q)
			}
		})
	}
	wantErr(t, h.quotaGet("", PathToken), 41001)
}

func num(m map[string]any, k string) int64 {
	f, ok := m[k].(float64)
	if !ok {
		return -1
	}
	return int64(f)
}
