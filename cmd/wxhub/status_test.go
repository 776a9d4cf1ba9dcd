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
	statusBadSecret    = "status-wrong-secret-9876543210"
	statusStableApp    = "wxstatusstable01"
	statusStableSecret = "status-stable-secret-0123456789"
)

// statusHolder is a real holder process, configured with the apps in
// args, on a fresh NATS server and simulator.
type statusHolder struct {
	t    *testing.T
	bin  string
	url  string
	cmd  *exec.Cmd
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
	t.Cleanup(h.stop)
	h.cmd, h.logs = cmd, newLineWaiter(stderr, nil)
	return h
}

func (h *statusHolder) stop() { _ = h.cmd.Process.Kill(); _ = h.cmd.Wait() }

// waitLog waits for the holder's log line msg (a prefix) about appid.
func (h *statusHolder) waitLog(msg, appid string) {
	h.t.Helper()
	m, a := regexp.QuoteMeta(`"msg":"`+msg), regexp.QuoteMeta(`"appid":"`+appid+`"`)
	h.logs.wait(h.t, regexp.MustCompile(m+`.*`+a+`|`+a+`.*`+m), 30*time.Second)
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
	h.waitLog("token refreshed", statusGoodApp)
	h.waitLog("token fetch refused", statusBadApp)

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
	row := regexp.MustCompile(`(?m)^` + statusBadApp + `\s+-\s+token\s+-\s+1\s+1999/2000 \(reserve 200\)\s+h1\s+backoff until \S+Z$`)
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

// QUOTA LEFT is, for a token mode app, the fetches left of the daily
// limit the holder reports, with its reserve (here --quota-daily-limit
// 5000 and --quota-reserve 150, not the defaults), and "-" once no holder
// answers; for a stable_token
// app, the force_refresh calls left of WeChat's 20 (by wx_quota, so with
// or without a holder).
func TestStatusQuotaLeftIsTheHoldersLimitAndReserve(t *testing.T) {
	sim := wechatsim.New()
	sim.AddApp(statusGoodApp, statusGoodSecret)
	sim.AddApp(statusStableApp, statusStableSecret)
	h := startStatusHolder(t, sim, []string{"--quota-reserve", "150", "--quota-daily-limit", "5000",
		"--app", "appid=" + statusGoodApp + ";appid=" + statusStableApp + ",mode=stable_token"},
		"WXHUB_SECRET_"+strings.ToUpper(statusGoodApp)+"="+statusGoodSecret,
		"WXHUB_SECRET_"+strings.ToUpper(statusStableApp)+"="+statusStableSecret)
	h.waitLog("token refreshed", statusGoodApp)
	h.waitLog("token refreshed", statusStableApp)
	if out, errOut, code := h.run("token", "invalidate", "--appid", statusStableApp); code != exitOK {
		t.Fatalf("token invalidate (a forced stable_token call): exit %d\n%s%s", code, out, errOut)
	}

	type want struct {
		cell                    string // the QUOTA LEFT column
		limit, reserve, left    int    // --json; -1: absent
		forcedToday, forcedLeft int    // --json; -1: absent
	}
	check := func(stage string, wants map[string]want, args ...string) {
		t.Helper()
		out, errOut, code := h.run(append([]string{"status"}, args...)...)
		if code != exitOK {
			t.Fatalf("%s: status: exit %d\n%s%s", stage, code, out, errOut)
		}
		for app, w := range wants {
			cell := regexp.MustCompile(`(?m)^` + app + `\s+\d+\s+\S+\s+\S+\s+\d+\s+` + regexp.QuoteMeta(w.cell) + `\s+h1\s`)
			if !cell.MatchString(out) {
				t.Errorf("%s: QUOTA LEFT of %s is not %q:\n%s", stage, app, w.cell, out)
			}
		}
		out, errOut, code = h.run(append([]string{"status", "--json"}, args...)...)
		var st statusReport
		if err := json.Unmarshal([]byte(out), &st); code != exitOK || err != nil {
			t.Fatalf("%s: status --json: exit %d %v\n%s%s", stage, code, err, out, errOut)
		}
		val := func(p *int) int {
			if p == nil {
				return -1
			}
			return *p
		}
		for _, a := range st.Apps {
			w := wants[a.AppID]
			got := want{w.cell, val(a.QuotaLimit), val(a.QuotaReserve), val(a.QuotaLeft), val(a.ForcedToday), val(a.ForcedLeft)}
			if got != w {
				t.Errorf("%s: %s in --json: %+v, want %+v", stage, a.AppID, got, w)
			}
		}
	}
	check("holder running", map[string]want{
		statusGoodApp:   {"4999/5000 (reserve 150)", 5000, 150, 4999, -1, -1},
		statusStableApp: {"19/20 forced", -1, -1, -1, 1, 19},
	})
	h.stop()
	check("no holder", map[string]want{
		statusGoodApp:   {"-", -1, -1, -1, -1, -1},
		statusStableApp: {"19/20 forced", -1, -1, -1, 1, 19},
	}, "--wait", "100ms")
}
