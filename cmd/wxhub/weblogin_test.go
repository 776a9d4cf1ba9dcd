package main

import (
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// TestRunPrintsAWebLoginURLThatWorks: the URL `wxhub run` prints leads,
// as is, through the demo page, the simulator's consent page and the
// callback back to the demo page showing the profile from user.profile.
// (gateway/weblogin drives the same flow in chromium.)
func TestRunPrintsAWebLoginURLThatWorks(t *testing.T) {
	t.Parallel()
	run := wxhubtest.StartRun(t)
	demoURL := run.Wait(t, regexp.MustCompile(`Web login: open (http://\S+/demo/) in a browser`), 30*time.Second)[1]

	jar, _ := cookiejar.New(nil)
	var callbacks []string
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		if r.URL.Path == "/oauth/callback" {
			callbacks = append(callbacks, r.URL.String())
		}
		return nil
	}}
	get := func(u string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	find := func(page, re string) string {
		t.Helper()
		m := regexp.MustCompile(re).FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no %s in:\n%s", re, page)
		}
		return html.UnescapeString(m[1])
	}

	_, page := get(demoURL)
	resp, consent := get(find(page, `id="login" href="([^"]+)"`))
	ticket := find(consent, `name="ticket" value="([^"]+)"`)
	action := find(consent, `<form method="post" action="([^"]+)"`)
	reply, err := resp.Request.URL.Parse(action)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = c.PostForm(reply.String(), url.Values{"ticket": {ticket}, "action": {"allow"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page = string(b)
	if got := find(page, `id="openid">([^<]*)<`); got != run.OpenID {
		t.Fatalf("demo page shows openid %q, want %q", got, run.OpenID)
	}
	if got := find(page, `id="nickname">([^<]*)<`); got != "小明" {
		t.Fatalf("demo page shows nickname %q", got)
	}
	if !strings.HasPrefix(resp.Request.URL.String(), demoURL+"?") || !strings.Contains(resp.Request.URL.RawQuery, "wxhub_job=weblogin-") {
		t.Fatalf("ended at %s", resp.Request.URL)
	}
	if len(callbacks) != 1 {
		t.Fatalf("callbacks %v", callbacks)
	}
	// Reloading the callback: 400, the login is not run again.
	if resp, body := get(callbacks[0]); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "already used") {
		t.Fatalf("reloaded callback: %d\n%s", resp.StatusCode, body)
	}
	if err := run.Stop(t, 60*time.Second); err != nil {
		t.Fatalf("wxhub run after SIGTERM: %v", err)
	}
}
