package weblogin_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/wxhub/wxhub/gateway/weblogin"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// setCookie returns the Set-Cookie of resp whose name starts with the
// login cookie's prefix (with or without __Host-).
func loginSetCookie(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range resp.Cookies() {
		if strings.HasPrefix(strings.TrimPrefix(c.Name, "__Host-"), weblogin.LoginCookiePrefix) {
			return c
		}
	}
	t.Fatalf("no login cookie set; Set-Cookie %q", resp.Header.Values("Set-Cookie"))
	return nil
}

func hexSHA256(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// State fixation: the attacker starts a login in their own browser, keeps
// WeChat's URL (with the nonce) and has a victim open it. The victim's
// callback carries no login cookie of that login: 403, nothing published,
// nothing exchanged, and the state is not spent; the browser that started
// the login can still finish it.
func TestCallbackFromABrowserThatDidNotStartTheLoginIsRefused(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	attacker := newAgent(t)
	resp, body := attacker.get(t, e.authorize(url.Values{"appid": {e.demoApp.AppID}, "scope": {"snsapi_base"}, "return_to": {e.demoURL}, "state": {"attacker-state"}}))
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: %d\n%s", resp.StatusCode, body)
	}
	wechatURL := resp.Header.Get("Location")
	nonce := query(t, wechatURL).Get("state")
	cookie := loginSetCookie(t, resp)

	// The victim, logged in to WeChat as another user, opens the URL.
	victimCallback := func(extra ...*http.Cookie) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, wechatURL, nil)
		req.AddCookie(&http.Cookie{Name: wechatsim.CookieOpenID, Value: e.demoApp.OpenIDs[1]})
		resp, err := noFollow().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		req, _ = http.NewRequest(http.MethodGet, resp.Header.Get("Location"), nil)
		for _, c := range extra {
			req.AddCookie(c)
		}
		resp, err = noFollow().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, c := range [][]*http.Cookie{nil, {{Name: cookie.Name, Value: base64.RawURLEncoding.EncodeToString(make([]byte, 32))}}} {
		resp, body = victimCallback(c...)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "not started in this browser") || resp.Header.Get("Location") != "" {
			t.Fatalf("victim's callback (cookies %v): %d %q\n%s", c, resp.StatusCode, resp.Header.Get("Location"), body)
		}
	}
	if n, x := e.jobsPublished(t), e.exchanges(); n != 0 || x != 0 {
		t.Fatalf("a callback from another browser: %d jobs, %d exchanges; want none", n, x)
	}
	if st := e.storedState(t, nonce); st.AppID != e.demoApp.AppID {
		t.Fatalf("the state was spent by the refused callback: %+v", st)
	}

	// The browser that started the login finishes it.
	resp, _ = attacker.get(t, wechatURL)
	resp, body = attacker.get(t, resp.Header.Get("Location"))
	q := query(t, resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || q.Has("error") || q.Get("wxhub_job") == "" || q.Get("state") != "attacker-state" {
		t.Fatalf("the starting browser's callback: %d %q\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	if c := loginSetCookie(t, resp); c.Name != cookie.Name || c.MaxAge >= 0 {
		t.Fatalf("the login cookie is not cleared after use: %+v", c)
	}
}

// The job id is random, kept in the state, and not computable from the
// nonce WeChat carries in its URLs.
func TestJobIDIsRandomNotDerivedFromTheNonce(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	seen := map[string]bool{}
	for range 2 {
		cbURL, b := e.login(t, "snsapi_base", e.demoURL, "s")
		nonce := query(t, cbURL).Get("state")
		st := e.storedState(t, nonce)
		old := sha256.Sum256([]byte("wxhub-weblogin:" + nonce))
		if !regexp.MustCompile(`^weblogin-[0-9a-f]{32}$`).MatchString(st.JobID) || st.JobID == "weblogin-"+hex.EncodeToString(old[:16]) || seen[st.JobID] {
			t.Fatalf("job id %q for nonce %s: want weblogin- and 32 random hex digits", st.JobID, nonce)
		}
		seen[st.JobID] = true
		resp, _ := b.get(t, cbURL)
		if got := query(t, resp.Header.Get("Location")).Get("wxhub_job"); got != st.JobID {
			t.Fatalf("wxhub_job %q, want the stored %q", got, st.JobID)
		}
	}
}

// The login cookie: a fresh 32-byte secret of which the state keeps only
// the hash; HttpOnly, SameSite=Lax, Max-Age the state TTL; over http the
// callback's path and no Secure, over https Secure with the __Host- name
// (which requires Path=/).
func TestLoginCookieAttributes(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	check := func(c *http.Cookie, secure bool, path string) {
		t.Helper()
		raw, err := base64.RawURLEncoding.DecodeString(c.Value)
		if err != nil || len(raw) != 32 || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.MaxAge != 600 || c.Secure != secure || c.Path != path ||
			strings.HasPrefix(c.Name, "__Host-") != secure || c.Domain != "" {
			t.Fatalf("login cookie %q: want 32 random bytes, HttpOnly, SameSite=Lax, Max-Age=600, Secure=%v, Path=%s", c.String(), secure, path)
		}
	}
	resp, _ := newAgent(t).get(t, e.authorize(url.Values{"appid": {e.demoApp.AppID}, "scope": {"snsapi_base"}, "return_to": {e.demoURL}}))
	c := loginSetCookie(t, resp)
	check(c, false, weblogin.PathCallback)
	if st := e.storedState(t, query(t, resp.Header.Get("Location")).Get("state")); st.Browser != hexSHA256(c.Value) || strings.Contains(st.Browser, c.Value) {
		t.Fatalf("stored browser binding %q, want the hex SHA-256 of the cookie's secret", st.Browser)
	}

	h, err := weblogin.New(weblogin.Config{
		Apps:   []weblogin.App{{AppID: "wxhttps", CallbackBase: "https://login.example.com", ReturnTo: []string{"https://shop.example.com/login/"}}},
		States: weblogin.NewStateStore(e.states, 0, nil), Jobs: noJobs{}, Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, weblogin.PathAuthorize+"?"+url.Values{"appid": {"wxhttps"}, "scope": {"snsapi_base"}, "return_to": {"https://shop.example.com/login/"}}.Encode(), nil))
	if w.Code != http.StatusFound {
		t.Fatalf("https authorize: %d\n%s", w.Code, w.Body)
	}
	check(loginSetCookie(t, w.Result()), true, "/")
}

// Every error page (400, 403, 429) allows no script or other content,
// cannot be framed, is not sniffed, cached or referred from.
func TestErrorPagesLockDownContentFramingCachingAndReferrer(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{authorizeRate: 0.001, authorizeBurst: 1})
	start := e.authorize(url.Values{"appid": {e.demoApp.AppID}, "scope": {"snsapi_base"}, "return_to": {e.demoURL}})
	resp, _ := newAgent(t).get(t, start) // spends the burst
	wechatURL := resp.Header.Get("Location")
	resp, _ = get(t, wechatURL)
	cbURL := resp.Header.Get("Location")
	want := map[string]string{
		"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
		"X-Frame-Options":         "DENY",
		"X-Content-Type-Options":  "nosniff",
		"Cache-Control":           "no-store",
		"Referrer-Policy":         "no-referrer",
	}
	for _, c := range []struct {
		u    string
		code int
	}{
		{e.authorize(url.Values{"appid": {"wxunknown"}}), http.StatusBadRequest},
		{e.front.URL + weblogin.PathCallback + "?state=Unknown00000000000000000000", http.StatusBadRequest},
		{cbURL, http.StatusForbidden}, // no login cookie
		{start, http.StatusTooManyRequests},
	} {
		resp, body := get(t, c.u)
		if resp.StatusCode != c.code {
			t.Fatalf("%s: %d, want %d\n%s", c.u, resp.StatusCode, c.code, body)
		}
		for k, v := range want {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%d page: %s %q, want %q", c.code, k, got, v)
			}
		}
	}
}
