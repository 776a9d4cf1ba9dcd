package wechatsim

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestFaultValidation(t *testing.T) {
	cases := []struct {
		name  string
		fault Fault
		ok    bool
		msg   string
	}{
		{"errcode", Fault{Path: PathUserInfo, ErrCode: -1}, true, ""},
		{"wildcard empty", Fault{ErrCode: 45011, Count: 2}, true, ""},
		{"wildcard star", Fault{Path: "*", HTTPStatus: 503, Rate: 0.5}, true, ""},
		{"delay only", Fault{Path: PathToken, DelayMS: 10}, true, ""},
		{"nothing to do", Fault{Path: PathToken}, false, "errcode, http_status or delay_ms"},
		{"unknown path", Fault{Path: "/cgi-bin/nope", ErrCode: -1}, false, "not a simulated endpoint"},
		{"errcode and status", Fault{ErrCode: -1, HTTPStatus: 500}, false, "exclusive"},
		{"status 200", Fault{HTTPStatus: 200}, false, "http_status"},
		{"status 700", Fault{HTTPStatus: 700}, false, "http_status"},
		{"negative delay", Fault{DelayMS: -1}, false, "delay_ms"},
		{"negative count", Fault{ErrCode: -1, Count: -1}, false, "count"},
		{"rate above 1", Fault{ErrCode: -1, Rate: 1.5}, false, "rate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := New(WithLogger(quiet)).AddFault(tc.fault)
			if (err == nil) != tc.ok {
				t.Fatalf("err %v", err)
			}
			if err != nil && (!errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), tc.msg)) {
				t.Fatalf("err %q does not name %q", err, tc.msg)
			}
		})
	}
}

func TestFaults(t *testing.T) {
	cases := []struct {
		name   string
		faults []Fault
		path   string
		// want is the errcode (or -HTTP status when < -1) of consecutive calls.
		want []int
	}{
		{"count 2 then normal", []Fault{{Path: PathCallbackIP, ErrCode: -1, Count: 2}}, PathCallbackIP, []int{-1, -1, 0, 0}},
		{"forever", []Fault{{Path: PathCallbackIP, ErrCode: 45011}}, PathCallbackIP, []int{45011, 45011, 45011}},
		{"other path untouched", []Fault{{Path: PathUserInfo, ErrCode: -1}}, PathCallbackIP, []int{0, 0}},
		{"wildcard", []Fault{{Path: "*", ErrCode: -1, Count: 1}}, PathCallbackIP, []int{-1, 0}},
		{"empty path is wildcard", []Fault{{ErrCode: -1, Count: 1}}, PathCallbackIP, []int{-1, 0}},
		{"HTTP status", []Fault{{Path: PathCallbackIP, HTTPStatus: 502, Count: 1}}, PathCallbackIP, []int{-502, 0}},
		{"first that fires decides", []Fault{
			{Path: PathCallbackIP, ErrCode: 45011, Count: 1},
			{Path: PathCallbackIP, ErrCode: -1, Count: 2},
		}, PathCallbackIP, []int{45011, -1, -1, 0}},
		{"rate 1 always fires", []Fault{{Path: PathCallbackIP, ErrCode: -1, Rate: 1}}, PathCallbackIP, []int{-1, -1, -1}},
		{"rate with count removes itself", []Fault{{Path: PathCallbackIP, ErrCode: -1, Rate: 1, Count: 1}}, PathCallbackIP, []int{-1, 0}},
		{"delay answers normally", []Fault{{Path: PathCallbackIP, DelayMS: 1, Count: 1}}, PathCallbackIP, []int{0, 0}},
		{"delay with errcode", []Fault{{Path: PathCallbackIP, DelayMS: 1, ErrCode: -1, Count: 1}}, PathCallbackIP, []int{-1, 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			tok := h.token(testApp, testSecret)
			for _, f := range tc.faults {
				if err := h.sim.AddFault(f); err != nil {
					t.Fatal(err)
				}
			}
			for i, want := range tc.want {
				a := h.get(tc.path, url.Values{"access_token": {tok}})
				if want < -1 {
					if a.status != -want || strings.HasPrefix(a.ctype, "application/json") {
						t.Fatalf("call %d: HTTP %d %q, want %d non-JSON", i, a.status, a.ctype, -want)
					}
					continue
				}
				wantErr(t, a, want)
				if want != 0 && !ridRE.MatchString(a.str("errmsg")) {
					t.Fatalf("fault errmsg without rid: %q", a.str("errmsg"))
				}
			}
		})
	}
}

func TestFaultRate(t *testing.T) {
	h := newHarness(t)
	tok := h.token(testApp, testSecret)
	if err := h.sim.AddFault(Fault{Path: PathCallbackIP, ErrCode: -1, Rate: 0.5}); err != nil {
		t.Fatal(err)
	}
	const n = 400
	fired := 0
	for range n {
		if h.use(tok) == -1 {
			fired++
		}
	}
	if fired < n/4 || fired > 3*n/4 {
		t.Fatalf("rate 0.5 fired %d of %d", fired, n)
	}
	h.sim.ClearFaults()
	if h.use(tok) != 0 || len(h.sim.Faults()) != 0 {
		t.Fatal("ClearFaults left a fault")
	}
}

func TestDelayFaultAndLatencyTakeTime(t *testing.T) {
	cases := []struct {
		name    string
		latency time.Duration
		fault   *Fault
		min     time.Duration
	}{
		{"latency", 60 * time.Millisecond, nil, 60 * time.Millisecond},
		{"delay fault", 0, &Fault{Path: PathCallbackIP, DelayMS: 60}, 60 * time.Millisecond},
		{"delay adds to latency", 40 * time.Millisecond, &Fault{Path: PathCallbackIP, DelayMS: 40}, 80 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, WithLatency(tc.latency))
			tok := h.token(testApp, testSecret)
			if tc.fault != nil {
				if err := h.sim.AddFault(*tc.fault); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			if got := h.use(tok); got != 0 {
				t.Fatalf("errcode %d", got)
			}
			if el := time.Since(start); el < tc.min {
				t.Fatalf("answered after %v, want at least %v", el, tc.min)
			}
			// The admin API is never delayed.
			start = time.Now()
			if a := h.get("/_sim/latency", nil); a.status != http.StatusOK || time.Since(start) >= tc.min {
				t.Fatalf("admin call delayed or failed: %d", a.status)
			}
		})
	}
}

func TestLatencyHonoursCancellation(t *testing.T) {
	cases := []struct {
		name string
		opt  Option
		f    *Fault
	}{
		{"latency", WithLatency(time.Hour), nil},
		{"delay fault", WithLatency(0), &Fault{DelayMS: 3_600_000}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.opt)
			if tc.f != nil {
				if err := h.sim.AddFault(*tc.f); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.srv.URL+PathCallbackIP, nil)
			if resp, err := h.srv.Client().Do(req); err == nil {
				resp.Body.Close()
				t.Fatal("answered despite an hour of latency")
			}
			// httptest.Server.Close waits for in-flight handlers: it returns
			// only if the handler stopped sleeping when the client left.
			done := make(chan struct{})
			go func() { h.srv.Close(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("handler still sleeping after the client went away")
			}
			if n := h.sim.Stats().TotalCalls(PathCallbackIP); n != 0 {
				t.Fatalf("abandoned call counted: %d", n)
			}
		})
	}
}

func TestStats(t *testing.T) {
	h := newHarness(t)
	seedUsers(t, h)
	tok := h.token(testApp, testSecret)
	h.token(testApp, testSecret)
	h.stable(otherApp, otherSec, false)
	h.get(PathUserInfo, url.Values{"access_token": {tok}, "openid": {plainFollower.OpenID}})
	h.get(PathUserInfo, url.Values{"access_token": {tok}, "openid": {"oNobody"}})                // 40003, testApp
	h.get(PathUserInfo, url.Values{"access_token": {strings.Repeat("u", 100)}, "openid": {"x"}}) // 40001, unknown app
	h.get(PathToken, url.Values{"grant_type": {"client_credential"}, "appid": {"wxnope"}})       // 40013, unknown app
	if err := h.sim.AddFault(Fault{Path: PathUserInfo, ErrCode: -1, Count: 1}); err != nil {
		t.Fatal(err)
	}
	h.get(PathUserInfo, url.Values{"access_token": {tok}, "openid": {plainFollower.OpenID}}) // -1, testApp

	st := h.sim.Stats()
	checks := []struct {
		name      string
		got, want int64
	}{
		{"token calls testApp", st.CallCount(PathToken, testApp), 2},
		{"token calls unknown", st.CallCount(PathToken, ""), 1},
		{"stable calls otherApp", st.CallCount(PathStableToken, otherApp), 1},
		{"user/info testApp", st.CallCount(PathUserInfo, testApp), 3},
		{"user/info unknown", st.CallCount(PathUserInfo, ""), 1},
		{"user/info total", st.TotalCalls(PathUserInfo), 4},
		{"tokens issued testApp", st.TokensIssued[testApp], 2},
		{"tokens issued otherApp", st.TokensIssued[otherApp], 1},
		{"errcode 40003", st.ErrCodes["40003"], 1},
		{"errcode 40001", st.ErrCodes["40001"], 1},
		{"errcode 40013", st.ErrCodes["40013"], 1},
		{"errcode -1", st.ErrCodes["-1"], 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.name, c.got, c.want)
		}
	}
	h.sim.ResetStats()
	st = h.sim.Stats()
	if len(st.Calls) != 0 || len(st.TokensIssued) != 0 || len(st.ErrCodes) != 0 {
		t.Fatalf("after reset: %+v", st)
	}
}

// TestFault40164NamesTheCaller: WeChat's 40164 names the caller's
// address, the one to add to the IP whitelist.
func TestFault40164NamesTheCaller(t *testing.T) {
	cases := []struct{ remote, msg string }{
		{"203.0.113.7:4242", "invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist"},
		{"[::ffff:198.51.100.2]:80", "invalid ip 198.51.100.2 ipv6 ::ffff:198.51.100.2, not in whitelist"},
		{"[2001:db8::1]:443", "invalid ip 2001:db8::1 ipv6 2001:db8::1, not in whitelist"},
	}
	sim := New(WithClock(NewManualClock(t0)), WithLogger(quiet))
	sim.AddApp(testApp, testSecret)
	if err := sim.AddFault(Fault{Path: PathToken, ErrCode: 40164}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.remote, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, PathToken+"?grant_type=client_credential&appid="+testApp+"&secret="+testSecret, nil)
			req.RemoteAddr = tc.remote
			rec := httptest.NewRecorder()
			sim.ServeHTTP(rec, req)
			var a struct {
				ErrCode int    `json:"errcode"`
				ErrMsg  string `json:"errmsg"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
				t.Fatal(err)
			}
			m := ridRE.FindStringSubmatch(a.ErrMsg)
			if a.ErrCode != 40164 || m == nil || m[1] != tc.msg {
				t.Fatalf("answer %s, want errcode 40164 and errmsg %q with a rid", rec.Body.Bytes(), tc.msg)
			}
		})
	}
}
