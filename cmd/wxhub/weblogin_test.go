package main

import (
	"crypto/sha256"
	"encoding/hex"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
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

	c, resp, page, callbacks := walkDemoLogin(t, demoURL)
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
	if got := findIn(t, page, `id="openid">([^<]*)<`); got != run.OpenID {
		t.Fatalf("demo page shows openid %q, want %q", got, run.OpenID)
	}
	if got := findIn(t, page, `id="nickname">([^<]*)<`); got != "小明" {
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

// walkDemoLogin logs in on the demo page at demoURL as a browser does:
// the page's login link, the simulator's consent page (allow), the
// callback, back on the demo page. It returns the browser, the last
// response (its Request.URL the demo page's, with wxhub_job and state),
// that page, and the callback URLs the browser went through.
func walkDemoLogin(t *testing.T, demoURL string) (*http.Client, *http.Response, string, []string) {
	t.Helper()
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
	_, page := get(demoURL)
	resp, consent := get(findIn(t, page, `id="login" href="([^"]+)"`))
	ticket := findIn(t, consent, `name="ticket" value="([^"]+)"`)
	action := findIn(t, consent, `<form method="post" action="([^"]+)"`)
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
	return c, resp, string(b), callbacks
}

// findIn returns the first submatch of re in page, HTML-unescaped.
func findIn(t *testing.T, page, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no %s in:\n%s", re, page)
	}
	return html.UnescapeString(m[1])
}

// TestGatewayServesWebLogin: `wxhub gateway --web-login ...` against a
// running NATS serves /oauth/authorize on its front, redirecting to the
// configured authorize host with WeChat's parameters, and limits the
// logins each browser starts by --oauth-client-* behind the
// --oauth-trusted-proxies, and the calls without a client key each
// caller makes by --gateway-anonymous-* behind the
// --gateway-trusted-proxies.
func TestGatewayServesWebLogin(t *testing.T) {
	t.Parallel()
	run := wxhubtest.StartRun(t) // NATS (provisioned) and the simulator
	simURL := run.Wait(t, regexp.MustCompile(`using the WeChat simulator at (http://\S+) `), 5*time.Second)[1]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a free port for the gateway (the callback base must name it)
	base := "http://" + addr
	cmd := exec.Command(wxhubtest.Binary(t), "gateway", "--nats-url", run.NATSURL, "--http-listen", "",
		"--gateway-listen", addr, "--app", "appid="+run.AppID, "--oauth-authorize-base", simURL,
		"--client", "name=shop,appids="+run.AppID,
		"--oauth-client-rate", "0.001", "--oauth-client-burst", "2", "--oauth-trusted-proxies", "127.0.0.1",
		"--gateway-anonymous-rate", "0.001", "--gateway-anonymous-burst", "1", "--gateway-trusted-proxies", "127.0.0.1",
		"--web-login", "appid="+run.AppID+",callback_base="+base+",return_to="+base+"/shop/")
	cmd.Env = append(os.Environ(), "WXHUB_CLIENT_KEY_SHOP=shop-key-0123456789abcdef")
	var out wxhubtest.Buffer // both output streams
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	noFollow := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	authorize := base + "/oauth/authorize?" + url.Values{"appid": {run.AppID}, "scope": {"snsapi_base"}, "return_to": {base + "/shop/x"}}.Encode()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := noFollow.Get(authorize)
		if err == nil {
			resp.Body.Close()
			loc := resp.Header.Get("Location")
			want := simURL + "/connect/oauth2/authorize?appid=" + run.AppID + "&redirect_uri=" + url.QueryEscape(base+"/oauth/callback") + "&response_type=code&scope=snsapi_base&state="
			if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, want) || !strings.HasSuffix(loc, "#wechat_redirect") {
				t.Fatalf("authorize on the gateway: %d %q, want %s...#wechat_redirect", resp.StatusCode, loc, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway did not answer within 60 s: %v\n%s", err, out.String())
		}
		select { // no readiness event from another process: poll with a deadline
		case err := <-exited:
			t.Fatalf("wxhub gateway exited: %v\n%s", err, out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	// The per-client limit as configured: 127.0.0.1 is a trusted proxy,
	// so X-Forwarded-For names the browser, and each has a burst of 2.
	startAs := func(client string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, authorize, nil)
		req.Header.Set("X-Forwarded-For", client)
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i, want := range []int{http.StatusFound, http.StatusFound, http.StatusTooManyRequests} {
		if got := startAs("198.51.100.1"); got != want {
			t.Fatalf("login %d of a browser behind the trusted proxy: %d, want %d", i+1, got, want)
		}
	}
	if got := startAs("198.51.100.2"); got != http.StatusFound {
		t.Fatalf("another browser behind the trusted proxy: %d, want %d", got, http.StatusFound)
	}
	// The anonymous limit as configured: a burst of 1 per caller.
	snsAs := func(client string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+"/sns/auth?access_token=user-token&openid=o1", nil)
		req.Header.Set("X-Forwarded-For", client)
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	for i, limited := range []bool{false, true} {
		if got := snsAs("198.51.100.1"); strings.Contains(got, `"errcode":45011`) != limited {
			t.Fatalf("/sns call %d of a caller behind the trusted proxy: %s, want limited %v", i+1, got, limited)
		}
	}
	if got := snsAs("198.51.100.2"); strings.Contains(got, `"errcode":45011`) {
		t.Fatalf("/sns call of another caller behind the trusted proxy: %s", got)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("wxhub gateway after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("wxhub gateway did not stop within 60 s of SIGTERM\n%s", out.String())
	}
}

// TestResultCorrelationChecksAWebLogin: after a real web login on `wxhub
// run`, `wxhub result --job-id <wxhub_job>` names the result's
// correlation id, and `--correlation` makes the business's check 3
// (docs/web-login.md): with the SHA-256 of the login's state it prints
// the profile (exit 0); with the hash of another session's state it
// prints nothing on stdout and exits 1 saying the result is not this
// login's.
func TestResultCorrelationChecksAWebLogin(t *testing.T) {
	t.Parallel()
	run := wxhubtest.StartRun(t)
	demoURL := run.Wait(t, regexp.MustCompile(`Web login: open (http://\S+/demo/) in a browser`), 30*time.Second)[1]
	_, resp, _, _ := walkDemoLogin(t, demoURL)
	q := resp.Request.URL.Query()
	jobID, state := q.Get("wxhub_job"), q.Get("state")
	if !strings.HasPrefix(jobID, "weblogin-") || state == "" {
		t.Fatalf("login ended at %s", resp.Request.URL)
	}
	hash := func(s string) string { sum := sha256.Sum256([]byte(s)); return hex.EncodeToString(sum[:]) }
	wx := cliAt(run.NATSURL)

	code, stdout, stderr := wx("result", "--job-id", jobID)
	if code != exitOK || !strings.Contains(stdout, `"openid": "`+run.OpenID+`"`) ||
		!strings.Contains(stderr, "wxhub: job "+jobID+": result on user.profile, correlation id "+hash(state)+"\n") {
		t.Fatalf("result: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	code, stdout, stderr = wx("result", "--job-id", jobID, "--correlation", hash(state))
	if code != exitOK || !strings.Contains(stdout, `"openid": "`+run.OpenID+`"`) {
		t.Fatalf("result --correlation (this login's): exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	other := hash("another-sessions-state")
	code, stdout, stderr = wx("result", "--job-id", jobID, "--correlation", other)
	if code != exitFailure || stdout != "" ||
		stderr != "wxhub result: job "+jobID+"'s result has correlation id "+hash(state)+", not "+other+": it is not the result of the job (or login) you asked about\n" {
		t.Fatalf("result --correlation (another login's): exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}
