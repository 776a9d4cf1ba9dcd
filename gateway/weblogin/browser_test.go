package weblogin_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wxhub/wxhub/gateway/weblogin"
)

// chromium finds Debian's chromium (.ci/run installs it). The browser test
// fails, never skips, without one: WXHUB_CHROMIUM names another binary.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("WXHUB_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no browser found: install Debian's chromium (apt-get install -y --no-install-recommends chromium) or set WXHUB_CHROMIUM; .ci/run does this")
	return ""
}

// browser starts a fresh headless chromium with its own profile.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true), // containers often have a 64 MB /dev/shm
		chromedp.UserDataDir(t.TempDir()),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

func location(ctx context.Context, t *testing.T) string {
	t.Helper()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func text(ctx context.Context, t *testing.T, sel string) string {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(wctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
		t.Fatalf("waiting for %s: %v\nat %s:\n%s", sel, err, loc, body)
	}
	return strings.TrimSpace(s)
}

// "Web login in chromium: allow → profile on the business page; reload of
// the callback → 400 and 1 exchange; refuse → access_denied; tampered
// state → 400 and no job".
func TestBrowserWebLogin(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	ctx := browser(t)

	// 1. Business page → authorize → the simulator's consent page → allow
	// → callback → the business page with the profile from user.profile.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(e.demoURL),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS("#allow")),
	); err != nil {
		t.Fatalf("to the consent page: %v", err)
	}
	loc := location(ctx, t)
	if !strings.HasPrefix(loc, e.simURL+"/connect/oauth2/authorize?appid="+e.demoApp.AppID) {
		t.Fatalf("consent page at %s, want the simulator's authorize page", loc)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#allow"))); err != nil {
		t.Fatal(err)
	}
	if got := text(ctx, t, "#openid"); got != e.demoApp.OpenIDs[0] {
		t.Fatalf("business page shows openid %q, want %q", got, e.demoApp.OpenIDs[0])
	}
	if got := text(ctx, t, "#nickname"); got != "小明" {
		t.Fatalf("business page shows nickname %q, want 小明", got)
	}
	if got := text(ctx, t, "#source"); got != "sns.userinfo" {
		t.Fatalf("source %q, want sns.userinfo", got)
	}
	if got := text(ctx, t, "#state-check"); !strings.HasPrefix(got, "state checked") {
		t.Fatalf("business state check: %q", got)
	}
	if n, x := e.jobsPublished(t), e.exchanges(); n != 1 || x != 1 {
		t.Fatalf("after one login: %d jobs, %d exchanges; want 1 and 1", n, x)
	}

	// 2. The callback opened again (the browser's reload): 400, and the
	// code is not exchanged a second time.
	cbURL := e.lastCallback(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(cbURL)); err != nil {
		t.Fatal(err)
	}
	if got := text(ctx, t, "#error"); !strings.Contains(got, "already used") {
		t.Fatalf("reloaded callback says %q", got)
	}
	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	if got := text(ctx, t, "#error"); !strings.Contains(got, "already used") {
		t.Fatalf("reloaded callback says %q", got)
	}
	if n, x := e.jobsPublished(t), e.exchanges(); n != 1 || x != 1 {
		t.Fatalf("after reloads: %d jobs, %d exchanges; want still 1 and 1", n, x)
	}

	// 3. Refuse: back on the business page with error=access_denied.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(e.demoURL),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS("#refuse")),
		chromedp.Click(chromedp.CSS("#refuse")),
	); err != nil {
		t.Fatal(err)
	}
	if got := text(ctx, t, "#error"); got != weblogin.ErrorAccessDenied {
		t.Fatalf("after refusing: error %q, want access_denied", got)
	}
	loc = location(ctx, t)
	if !strings.HasPrefix(loc, e.demoURL) || !strings.Contains(loc, "error=access_denied") || !strings.Contains(loc, "state=") {
		t.Fatalf("after refusing: at %s", loc)
	}
	if n := e.jobsPublished(t); n != 1 {
		t.Fatalf("refusing published a job: %d jobs", n)
	}

	// 4. A tampered state on the callback: 400, no job.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(e.demoURL),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS("#allow")),
	); err != nil {
		t.Fatal(err)
	}
	loc = location(ctx, t)
	nonce := query(t, loc).Get("state")
	code, err := e.sim.IssueCode(e.demoApp.AppID, e.demoApp.OpenIDs[0], "snsapi_userinfo")
	if err != nil {
		t.Fatal(err)
	}
	tampered := nonce[:len(nonce)-1] + "A"
	if tampered == nonce {
		tampered = nonce[:len(nonce)-1] + "B"
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(e.front.URL+"/oauth/callback?code="+code+"&state="+tampered)); err != nil {
		t.Fatal(err)
	}
	if got := text(ctx, t, "#error"); !strings.Contains(got, "unknown") {
		t.Fatalf("tampered state: page says %q", got)
	}
	if n, x := e.jobsPublished(t), e.exchanges(); n != 1 || x != 1 {
		t.Fatalf("a tampered state: %d jobs, %d exchanges; want still 1 and 1", n, x)
	}
}
