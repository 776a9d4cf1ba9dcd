package wechatsim

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 3, 10, 2, 0, 0, 0, time.UTC) // 10:00 in China

const (
	testApp    = "wx1111111111111111"
	testSecret = "s3cr3t1111111111111111111111111a"
	otherApp   = "wx2222222222222222"
	otherSec   = "s3cr3t2222222222222222222222222b"
)

type harness struct {
	t     *testing.T
	sim   *Sim
	clock *ManualClock
	srv   *httptest.Server
}

// newHarness starts a simulator on a ManualClock at t0 behind a real HTTP
// server, with testApp and otherApp registered.
func newHarness(t *testing.T, opts ...Option) *harness {
	t.Helper()
	clock := NewManualClock(t0)
	sim := New(append([]Option{WithClock(clock), WithLogger(quiet)}, opts...)...)
	sim.AddApp(testApp, testSecret)
	sim.AddApp(otherApp, otherSec)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return &harness{t: t, sim: sim, clock: clock, srv: srv}
}

type answer struct {
	status int
	ctype  string
	raw    []byte
	m      map[string]any
}

func (a answer) errcode() int {
	if v, ok := a.m["errcode"].(float64); ok {
		return int(v)
	}
	return 0
}

func (a answer) str(k string) string { s, _ := a.m[k].(string); return s }

func (a answer) num(k string) int64 { f, _ := a.m[k].(float64); return int64(f) }

func (a answer) has(k string) bool { _, ok := a.m[k]; return ok }

func (h *harness) do(method, path string, q url.Values, body string) answer {
	h.t.Helper()
	u := h.srv.URL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), raw: raw}
	if strings.HasPrefix(a.ctype, "application/json") && len(raw) > 0 {
		if err := json.Unmarshal(raw, &a.m); err != nil {
			h.t.Fatalf("%s %s: answer is not a JSON object: %v: %s", method, path, err, raw)
		}
	}
	return a
}

func (h *harness) get(path string, q url.Values) answer { return h.do(http.MethodGet, path, q, "") }

func (h *harness) post(path string, q url.Values, body string) answer {
	return h.do(http.MethodPost, path, q, body)
}

func (h *harness) postJSON(path string, v any) answer {
	h.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.post(path, nil, string(b))
}

// token fetches a /cgi-bin/token token and fails the test if it cannot.
func (h *harness) token(appid, secret string) string {
	h.t.Helper()
	a := h.get(PathToken, url.Values{"grant_type": {"client_credential"}, "appid": {appid}, "secret": {secret}})
	if a.errcode() != 0 || a.str("access_token") == "" {
		h.t.Fatalf("token: %s", a.raw)
	}
	return a.str("access_token")
}

func (h *harness) stable(appid, secret string, force bool) answer {
	h.t.Helper()
	return h.postJSON(PathStableToken, map[string]any{"grant_type": "client_credential", "appid": appid, "secret": secret, "force_refresh": force})
}

// use calls an API with a global token and returns the errcode (0 = ok).
func (h *harness) use(tok string) int {
	h.t.Helper()
	a := h.get(PathCallbackIP, url.Values{"access_token": {tok}})
	if a.errcode() == 0 && !a.has("ip_list") {
		h.t.Fatalf("getcallbackip without error and without ip_list: %s", a.raw)
	}
	return a.errcode()
}

func (h *harness) code(appid, openid, scope string) string {
	h.t.Helper()
	c, err := h.sim.IssueCode(appid, openid, scope)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func (h *harness) exchange(appid, secret, code string) answer {
	h.t.Helper()
	return h.get(PathOAuthToken, url.Values{"appid": {appid}, "secret": {secret}, "code": {code}, "grant_type": {"authorization_code"}})
}

func wantErr(t *testing.T, a answer, code int) {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("HTTP %d, want 200: %s", a.status, a.raw)
	}
	if got := a.errcode(); got != code {
		t.Fatalf("errcode %d, want %d: %s", got, code, a.raw)
	}
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func newServer(t *testing.T, sim *Sim) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return srv
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var quiet = slog.New(slog.DiscardHandler)
