package wechatsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/events"
)

var ridRE = regexp.MustCompile(`^(.+) rid: ([0-9a-f]{8})-[0-9a-f]{8}-[0-9a-f]{8}$`)

func TestErrorShapeAndRid(t *testing.T) {
	h := newHarness(t)
	a := h.get(PathToken, url.Values{"grant_type": {"client_credential"}, "appid": {"wxnope"}, "secret": {"x"}})
	wantErr(t, a, 40013)
	if !strings.HasPrefix(a.ctype, "application/json") {
		t.Fatalf("content type %q", a.ctype)
	}
	m := ridRE.FindStringSubmatch(a.str("errmsg"))
	if m == nil {
		t.Fatalf("errmsg %q has no rid suffix", a.str("errmsg"))
	}
	if m[1] != "invalid appid" {
		t.Fatalf("message %q", m[1])
	}
	if want := fmt.Sprintf("%08x", t0.Unix()); m[2] != want {
		t.Fatalf("rid starts %s, want unix time %s", m[2], want)
	}
	if len(a.m) != 2 {
		t.Fatalf("error answer has extra fields: %v", keys(a.m))
	}
	b := h.get(PathToken, url.Values{"grant_type": {"client_credential"}, "appid": {"wxnope"}, "secret": {"x"}})
	if b.str("errmsg") == a.str("errmsg") {
		t.Fatal("two answers share a rid")
	}
}

var tokenCharset = regexp.MustCompile(`^[A-Za-z0-9_-]{136,}$`)

func TestTokenEndpoint(t *testing.T) {
	cases := []struct {
		name          string
		grant, id, sc string
		want          int
	}{
		{"ok", "client_credential", testApp, testSecret, 0},
		{"bad grant_type", "authorization_code", testApp, testSecret, 40002},
		{"missing grant_type", "", testApp, testSecret, 40002},
		{"unknown appid", "client_credential", "wx9999999999999999", testSecret, 40013},
		{"wrong secret", "client_credential", testApp, otherSec, 40125},
		{"other app's secret pairing", "client_credential", otherApp, testSecret, 40125},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			a := h.get(PathToken, url.Values{"grant_type": {tc.grant}, "appid": {tc.id}, "secret": {tc.sc}})
			wantErr(t, a, tc.want)
			if tc.want != 0 {
				if h.sim.Stats().TokensIssued[tc.id] != 0 {
					t.Fatal("a failed call issued a token")
				}
				return
			}
			if a.has("errcode") {
				t.Fatalf("token success carries errcode: %s", a.raw)
			}
			if !tokenCharset.MatchString(a.str("access_token")) {
				t.Fatalf("token %q is not realistic", a.str("access_token"))
			}
			if a.num("expires_in") != 7200 {
				t.Fatalf("expires_in %d", a.num("expires_in"))
			}
			if h.sim.ValidToken(testApp) != a.str("access_token") {
				t.Fatal("ValidToken does not return the new token")
			}
			if h.token(testApp, testSecret) == a.str("access_token") {
				t.Fatal("a second fetch returned the same token")
			}
		})
	}
}

func TestTokenValidity(t *testing.T) {
	type tokens struct{ probe, other string }
	cases := []struct {
		name  string
		setup func(h *harness) tokens
		want  int
		// wantOther is the errcode of tokens.other (if set).
		wantOther int
	}{
		{"missing", func(h *harness) tokens { return tokens{probe: ""} }, 41001, 0},
		{"too short", func(h *harness) tokens { return tokens{probe: "abc"} }, 40014, 0},
		{"contains a space", func(h *harness) tokens { return tokens{probe: h.token(testApp, testSecret)[:50] + " x"} }, 40014, 0},
		{"bad charset", func(h *harness) tokens { return tokens{probe: strings.Repeat("a", 40) + "!*"} }, 40014, 0},
		{"unknown", func(h *harness) tokens { return tokens{probe: strings.Repeat("Ab0_", 40)} }, 40001, 0},
		{"fresh", func(h *harness) tokens { return tokens{probe: h.token(testApp, testSecret)} }, 0, 0},
		{"fresh one second before expiry", func(h *harness) tokens {
			tok := h.token(testApp, testSecret)
			h.clock.Advance(7199 * time.Second)
			return tokens{probe: tok}
		}, 0, 0},
		{"expired", func(h *harness) tokens {
			tok := h.token(testApp, testSecret)
			h.clock.Advance(7200 * time.Second)
			return tokens{probe: tok}
		}, 42001, 0},
		{"superseded within the 300 s grace", func(h *harness) tokens {
			old := h.token(testApp, testSecret)
			cur := h.token(testApp, testSecret)
			h.clock.Advance(299 * time.Second)
			return tokens{probe: old, other: cur}
		}, 0, 0},
		{"superseded past the grace", func(h *harness) tokens {
			old := h.token(testApp, testSecret)
			cur := h.token(testApp, testSecret)
			h.clock.Advance(300 * time.Second)
			return tokens{probe: old, other: cur}
		}, 40001, 0},
		{"grace is measured from the supersede, not the issue", func(h *harness) tokens {
			old := h.token(testApp, testSecret)
			h.clock.Advance(1000 * time.Second)
			cur := h.token(testApp, testSecret)
			h.clock.Advance(250 * time.Second)
			return tokens{probe: old, other: cur}
		}, 0, 0},
		{"superseded near expiry lives to its own expiry only", func(h *harness) tokens {
			old := h.token(testApp, testSecret)
			h.clock.Advance(7000 * time.Second)
			cur := h.token(testApp, testSecret)
			h.clock.Advance(200 * time.Second)
			return tokens{probe: old, other: cur}
		}, 42001, 0},
		{"only the latest supersede counts (third fetch)", func(h *harness) tokens {
			first := h.token(testApp, testSecret)
			h.token(testApp, testSecret)
			h.clock.Advance(200 * time.Second)
			h.token(testApp, testSecret) // must not extend first's grace
			h.clock.Advance(100 * time.Second)
			return tokens{probe: first}
		}, 40001, 0},
		{"another app's fetch does not touch ours", func(h *harness) tokens {
			mine := h.token(testApp, testSecret)
			h.token(otherApp, otherSec)
			h.clock.Advance(time.Hour)
			return tokens{probe: mine}
		}, 0, 0},
		{"stable token is accepted and survives /cgi-bin/token fetches", func(h *harness) tokens {
			st := h.stable(testApp, testSecret, false).str("access_token")
			tok := h.token(testApp, testSecret)
			h.token(testApp, testSecret)
			h.clock.Advance(301 * time.Second)
			return tokens{probe: st, other: tok}
		}, 0, 40001},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			tk := tc.setup(h)
			if got := h.use(tk.probe); got != tc.want {
				t.Fatalf("errcode %d, want %d", got, tc.want)
			}
			if tk.other != "" {
				if got := h.use(tk.other); got != tc.wantOther {
					t.Fatalf("other token: errcode %d, want %d", got, tc.wantOther)
				}
			}
		})
	}
}

func TestTokenDailyQuota(t *testing.T) {
	fetch := func(h *harness) answer {
		return h.get(PathToken, url.Values{"grant_type": {"client_credential"}, "appid": {testApp}, "secret": {testSecret}})
	}
	t.Run("default 2000, the 2001st answers 45009 and issues nothing", func(t *testing.T) {
		h := newHarness(t)
		var last string
		for i := range 2000 {
			a := fetch(h)
			if a.errcode() != 0 {
				t.Fatalf("fetch %d: %s", i+1, a.raw)
			}
			last = a.str("access_token")
		}
		wantErr(t, fetch(h), 45009)
		if got := h.sim.Stats().TokensIssued[testApp]; got != 2000 {
			t.Fatalf("tokens issued %d", got)
		}
		if h.sim.ValidToken(testApp) != last || h.use(last) != 0 {
			t.Fatal("the refused fetch disturbed the current token")
		}
		// Other apps have their own quota.
		h.token(otherApp, otherSec)
	})
	cases := []struct {
		name    string
		start   time.Time
		advance time.Duration
		want    int
	}{
		{"same China day", time.Date(2025, 3, 10, 15, 0, 0, 0, time.UTC), 59 * time.Minute, 45009},
		{"China midnight resets", time.Date(2025, 3, 10, 15, 59, 59, 0, time.UTC), time.Second, 0},
		{"UTC midnight does not reset", time.Date(2025, 3, 10, 23, 59, 0, 0, time.UTC), 2 * time.Minute, 45009},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.clock.Set(tc.start)
			h.sim.SetTokenDailyLimit(testApp, 3)
			for range 3 {
				h.token(testApp, testSecret)
			}
			wantErr(t, fetch(h), 45009)
			h.clock.Advance(tc.advance)
			if events.ChinaDay(tc.start) == events.ChinaDay(h.clock.Now()) && tc.want == 0 {
				t.Fatal("test case does not cross a China day")
			}
			wantErr(t, fetch(h), tc.want)
		})
	}
}

func TestStableToken(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		name   string
		method string
		body   string
		want   int
	}{
		{"GET", http.MethodGet, "", 43002},
		{"not JSON", http.MethodPost, "grant_type=client_credential", 47001},
		{"empty body", http.MethodPost, "", 47001},
		{"bad grant_type", http.MethodPost, `{"grant_type":"x","appid":"` + testApp + `","secret":"` + testSecret + `"}`, 40002},
		{"unknown appid", http.MethodPost, `{"grant_type":"client_credential","appid":"wxnope","secret":"` + testSecret + `"}`, 40013},
		{"wrong secret", http.MethodPost, `{"grant_type":"client_credential","appid":"` + testApp + `","secret":"nope"}`, 40125},
		{"ok", http.MethodPost, `{"grant_type":"client_credential","appid":"` + testApp + `","secret":"` + testSecret + `"}`, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := h.do(tc.method, PathStableToken, nil, tc.body)
			wantErr(t, a, tc.want)
			if tc.want == 0 && (a.has("errcode") || !tokenCharset.MatchString(a.str("access_token")) || a.num("expires_in") != 7200) {
				t.Fatalf("bad success answer: %s", a.raw)
			}
		})
	}
}

func TestStableTokenNormalMode(t *testing.T) {
	h := newHarness(t)
	first := h.stable(testApp, testSecret, false)
	tok := first.str("access_token")

	h.clock.Advance(1000 * time.Second)
	again := h.stable(testApp, testSecret, false)
	if again.str("access_token") != tok || again.num("expires_in") != 6200 {
		t.Fatalf("within lifetime: want same token with 6200 s, got %s", again.raw)
	}

	h.clock.Advance(5950 * time.Second) // 250 s left: the last 5 minutes
	renewed := h.stable(testApp, testSecret, false)
	next := renewed.str("access_token")
	if next == tok || renewed.num("expires_in") != 7200 {
		t.Fatalf("in the last 5 min: want a new 7200 s token, got %s", renewed.raw)
	}
	if h.use(tok) != 0 || h.use(next) != 0 {
		t.Fatal("old and new stable tokens must both work during the overlap")
	}
	if s := h.stable(testApp, testSecret, false); s.str("access_token") != next {
		t.Fatal("after renewal, normal mode must return the new token")
	}
	h.clock.Advance(250 * time.Second)
	if got := h.use(tok); got != 42001 {
		t.Fatalf("old stable token after its expiry: %d, want 42001", got)
	}
	if h.use(next) != 0 {
		t.Fatal("new stable token stopped working")
	}
	if got := h.sim.Stats().TokensIssued[testApp]; got != 2 {
		t.Fatalf("tokens issued %d, want 2", got)
	}
}

func TestStableTokenForceRefresh(t *testing.T) {
	h := newHarness(t)
	normal := h.token(testApp, testSecret)
	tok := h.stable(testApp, testSecret, false).str("access_token")

	f1 := h.stable(testApp, testSecret, true)
	forced := f1.str("access_token")
	if forced == tok || f1.num("expires_in") != 7200 {
		t.Fatalf("force: want a new 7200 s token, got %s", f1.raw)
	}
	if got := h.use(tok); got != 40001 {
		t.Fatalf("token replaced by force_refresh: %d, want 40001 at once", got)
	}
	if h.use(normal) != 0 {
		t.Fatal("force_refresh of stable_token invalidated the /cgi-bin/token token")
	}

	h.clock.Advance(10 * time.Second)
	f2 := h.stable(testApp, testSecret, true)
	if f2.str("access_token") != forced || f2.num("expires_in") != 7190 {
		t.Fatalf("force within 30 s: want the current token with 7190 s, got %s", f2.raw)
	}
	h.clock.Advance(20 * time.Second)
	f3 := h.stable(testApp, testSecret, true)
	if f3.str("access_token") == forced {
		t.Fatal("force 30 s after the last must issue a new token")
	}
}

func TestStableTokenForceDailyLimit(t *testing.T) {
	h := newHarness(t)
	h.clock.Set(time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC)) // 08:00 in China
	var cur string
	for i := range 20 {
		a := h.stable(testApp, testSecret, true)
		if a.errcode() != 0 || a.str("access_token") == cur {
			t.Fatalf("force %d: %s", i+1, a.raw)
		}
		cur = a.str("access_token")
		h.clock.Advance(31 * time.Second)
	}
	wantErr(t, h.stable(testApp, testSecret, true), 45009)
	if h.use(cur) != 0 {
		t.Fatal("the refused force disturbed the current token")
	}
	if a := h.stable(testApp, testSecret, false); a.str("access_token") != cur {
		t.Fatalf("normal mode after the force quota: %s", a.raw)
	}
	h.clock.Set(time.Date(2025, 3, 10, 16, 0, 0, 0, time.UTC)) // next China day
	if a := h.stable(testApp, testSecret, true); a.errcode() != 0 || a.str("access_token") == cur {
		t.Fatalf("force on the next China day: %s", a.raw)
	}
}

func TestAddAppChangesSecret(t *testing.T) {
	h := newHarness(t)
	h.sim.AddApp(testApp, "new-secret")
	cases := []struct {
		secret string
		want   int
	}{{testSecret, 40125}, {"new-secret", 0}}
	for _, tc := range cases {
		t.Run(tc.secret, func(t *testing.T) {
			wantErr(t, h.get(PathToken, url.Values{"grant_type": {"client_credential"}, "appid": {testApp}, "secret": {tc.secret}}), tc.want)
		})
	}
}

func TestFaultedStableTokenCountsItsApp(t *testing.T) {
	h := newHarness(t)
	if err := h.sim.AddFault(Fault{Path: PathStableToken, ErrCode: -1, Count: 1}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, h.stable(testApp, testSecret, false), -1)
	if n := h.sim.Stats().CallCount(PathStableToken, testApp); n != 1 {
		t.Fatalf("faulted stable_token call counted under %v", h.sim.Stats().Calls)
	}
}

func TestStableTokenLimits(t *testing.T) {
	cases := []struct {
		name    string
		start   time.Time
		minute  int // SetStableTokenMinuteLimit, 0: default
		day     int // SetDailyLimit(PathStableToken), 0: default
		force   bool
		want    int // errcode of the call after 3 answered ones
		advance time.Duration
		after   int // errcode of a call after advance
	}{
		{"the 4th call in a minute answers 45011", t0, 3, 0, false, 45011, 59 * time.Second, 45011},
		{"the next calendar minute answers again", t0.Add(59 * time.Second), 3, 0, false, 45011, time.Second, 0},
		{"forced refreshes count too", t0, 3, 0, true, 45011, time.Minute, 0},
		{"the 4th call in a China day answers 45009", t0, 0, 3, false, 45009, time.Hour, 45009},
		{"the China day turns at 16:00 UTC", time.Date(2025, 3, 10, 15, 59, 0, 0, time.UTC), 0, 3, false, 45009, time.Minute, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.clock.Set(tc.start)
			if tc.minute > 0 {
				h.sim.SetStableTokenMinuteLimit(testApp, tc.minute)
			}
			if tc.day > 0 {
				if err := h.sim.SetDailyLimit(testApp, PathStableToken, tc.day); err != nil {
					t.Fatal(err)
				}
			}
			var cur string
			for i := range 3 {
				a := h.stable(testApp, testSecret, tc.force)
				if a.errcode() != 0 {
					t.Fatalf("call %d: %s", i+1, a.raw)
				}
				cur = a.str("access_token")
				if tc.force {
					h.clock.Advance(time.Second) // within 30 s: the same token, still a call
				}
			}
			wantErr(t, h.stable(testApp, testSecret, tc.force), tc.want)
			wantErr(t, h.stable(otherApp, otherSec, false), 0) // other apps have their own
			if h.use(cur) != 0 {
				t.Fatal("a refused call disturbed the current stable token")
			}
			h.clock.Advance(tc.advance)
			wantErr(t, h.stable(testApp, testSecret, tc.force), tc.after)
		})
	}
}

// TestStableToken10000AMinute: the default minute limit, through the
// handler (10,001 calls over HTTP would only be slower).
func TestStableToken10000AMinute(t *testing.T) {
	sim := New(WithClock(NewManualClock(t0)), WithLogger(quiet))
	sim.AddApp(testApp, testSecret)
	body := mustJSON(t, map[string]any{"grant_type": "client_credential", "appid": testApp, "secret": testSecret})
	call := func() int {
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, PathStableToken, strings.NewReader(body)))
		var st struct {
			ErrCode int `json:"errcode"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
			t.Fatal(err)
		}
		return st.ErrCode
	}
	for i := range 10000 {
		if c := call(); c != 0 {
			t.Fatalf("call %d: errcode %d", i+1, c)
		}
	}
	if c := call(); c != 45011 {
		t.Fatalf("call 10,001 in a minute: errcode %d, want 45011", c)
	}
}

func TestTokenLength(t *testing.T) {
	cases := []struct {
		name string
		opt  []Option
		want int
	}{
		{"default", nil, 153},
		{"512, as WeChat's may be", []Option{WithTokenLength(512)}, 512},
		{"at least 16", []Option{WithTokenLength(3)}, 16},
		{"at most 2048", []Option{WithTokenLength(5000)}, 2048},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.opt...)
			tok := h.token(testApp, testSecret)
			st := h.stable(testApp, testSecret, false).str("access_token")
			if len(tok) != tc.want || len(st) != tc.want {
				t.Fatalf("token %d and stable token %d characters, want %d", len(tok), len(st), tc.want)
			}
			if h.use(tok) != 0 || h.use(st) != 0 {
				t.Fatal("a token of that length does not work")
			}
		})
	}
}
