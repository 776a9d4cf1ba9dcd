package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/holder"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

const (
	statusGoodApp    = "wxstatusgood0001"
	statusGoodSecret = "status-good-secret-0123456789"
	statusBadApp     = "wxstatusbad00001"
	// statusBadSecret is what the holder is given for statusBadApp; the
	// simulator knows another one, so every fetch fails (40125).
	statusBadSecret = "status-wrong-secret-9876543210"
)

// statusHolder is a real holder process, configured with the apps in
// args, on a fresh NATS server and simulator.
type statusHolder struct {
	t    *testing.T
	bin  string
	url  string
	logs *lineWaiter
}

func startStatusHolder(t *testing.T, sim *wechatsim.Sim, args []string, env ...string) *statusHolder {
	t.Helper()
	h := &statusHolder{t: t, bin: wxhubBinary(t), url: brokertest.Start(t).URL}
	api := httptest.NewServer(sim)
	t.Cleanup(api.Close)
	cmd := exec.Command(h.bin, append([]string{"holder", "--nats-url", h.url, "--wechat-base-url", api.URL,
		"--http-listen", "", "--holder-id", "h1", "--log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	h.logs = newLineWaiter(stderr, nil)
	return h
}

// run runs a wxhub command against the holder's NATS and returns its
// stdout, stderr and exit status.
func (h *statusHolder) run(args ...string) (string, string, int) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, h.bin, append(args, "--nats-url", h.url)...)
	var out, errOut bytes.Buffer
	c.Stdout, c.Stderr = &out, &errOut
	_ = c.Run()
	return out.String(), errOut.String(), c.ProcessState.ExitCode()
}

// An app whose first fetch fails (here a wrong AppSecret: the holder
// backs off) has no token in wx_tokens, yet `wxhub status` lists it, with
// "-" for the token's columns and the leading holder's backoff lockout and
// its error, and `wxhub token get` says what the holder reports instead
// of guessing. No output names an AppSecret.
func TestStatusListsAConfiguredAppWithoutToken(t *testing.T) {
	sim := wechatsim.New()
	sim.AddApp(statusGoodApp, statusGoodSecret)
	sim.AddApp(statusBadApp, "status-real-secret-of-the-bad-app")
	h := startStatusHolder(t, sim, []string{"--app", "appid=" + statusGoodApp + ";appid=" + statusBadApp},
		"WXHUB_SECRET_"+strings.ToUpper(statusGoodApp)+"="+statusGoodSecret,
		"WXHUB_SECRET_"+strings.ToUpper(statusBadApp)+"="+statusBadSecret)
	h.logs.wait(t, regexp.MustCompile(`"msg":"token refreshed".*"appid":"`+statusGoodApp+`"|"appid":"`+statusGoodApp+`".*"msg":"token refreshed"`), 30*time.Second)
	h.logs.wait(t, regexp.MustCompile(`"msg":"token fetch refused.*"appid":"`+statusBadApp+`"|"appid":"`+statusBadApp+`".*"msg":"token fetch refused`), 30*time.Second)

	var outputs []string
	out, errOut, code := h.run("status", "--json")
	outputs = append(outputs, out, errOut)
	if code != exitOK {
		t.Fatalf("status --json: exit %d\n%s%s", code, out, errOut)
	}
	var st statusReport
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	apps := map[string]appStatus{}
	for _, a := range st.Apps {
		apps[a.AppID] = a
	}
	bad, ok := apps[statusBadApp]
	if !ok || len(apps) != 2 {
		t.Fatalf("status lists %d apps, want both (the one without a token too):\n%s", len(apps), out)
	}
	if bad.Version != 0 || !bad.ExpiresAt.IsZero() || bad.ExpiresIn != "" || bad.Mode != "token" || bad.Leader != "h1" || bad.FetchesToday != 1 {
		t.Errorf("app without a token: %+v", bad)
	}
	if len(bad.Lockouts) != 1 || bad.Lockouts[0].State != holder.LockoutBackoff || !strings.Contains(bad.Lockouts[0].Detail, "40125") {
		t.Errorf("lockouts of the app without a token = %+v, want the holder's backoff naming 40125", bad.Lockouts)
	}
	if good := apps[statusGoodApp]; good.Version != 1 || len(good.Lockouts) != 0 {
		t.Errorf("app with a token: %+v", good)
	}

	out, errOut, code = h.run("status")
	outputs = append(outputs, out, errOut)
	row := regexp.MustCompile(`(?m)^` + statusBadApp + `\s+-\s+token\s+-\s+1\s+\S+\s+h1\s+backoff until \S+Z$`)
	detail := regexp.MustCompile(`(?m)^` + statusBadApp + `: backoff until \S+Z: .*40125`)
	if code != exitOK || !row.MatchString(out) || !detail.MatchString(out) {
		t.Errorf("status table: exit %d, want a row %v and a line %v:\n%s%s", code, row, detail, out, errOut)
	}

	out, errOut, code = h.run("token", "get", "--appid", statusBadApp)
	outputs = append(outputs, out, errOut)
	want := regexp.MustCompile(`no token stored for ` + statusBadApp + `: holder h1 leads this app and reports backoff until \S+Z: .*40125`)
	if code != exitFailure || !want.MatchString(errOut) {
		t.Errorf("token get of the app without a token: exit %d, want %v in:\n%s", code, want, errOut)
	}
	out, errOut, code = h.run("token", "get", "--appid", "wxnotconfigured")
	outputs = append(outputs, out, errOut)
	if code != exitFailure || !strings.Contains(errOut, "no token stored for wxnotconfigured: none of the 1 holders that answered is configured with this app") {
		t.Errorf("token get of an app no holder has: exit %d\n%s", code, errOut)
	}
	for _, o := range outputs {
		for _, secret := range []string{statusGoodSecret, statusBadSecret} {
			if strings.Contains(o, secret) {
				t.Fatalf("an AppSecret is printed:\n%s", o)
			}
		}
	}
}
