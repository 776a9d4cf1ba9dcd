package deploy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.yaml.in/yaml/v3"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

const (
	alertRules     = "prometheus/wxhub-alerts.yaml"
	alertRuleTests = "prometheus/wxhub-alerts_test.yaml"
	dashboard      = "grafana/wxhub-dashboard.json"
)

// promtool returns the path of Prometheus' promtool. It is required, not
// optional: .ci/run installs Debian's prometheus package, which has it.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (%v): install it (Debian: apt-get install prometheus) to check the alert rules", err)
	}
	return p
}

// TestAlertRules: the rules load (promtool check rules) and each alert
// fires under its fault and not otherwise (promtool test rules).
func TestAlertRules(t *testing.T) {
	t.Parallel()
	pt := promtool(t)
	for _, args := range [][]string{{"check", "rules", alertRules}, {"test", "rules", alertRuleTests}} {
		out, err := exec.Command(pt, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// ruleExprs returns every alert's name and expression.
func ruleExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out["alert "+r.Alert] = r.Expr
		}
	}
	return out
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// panelExprs returns every dashboard panel's queries, and checks the
// dashboard's shape on the way.
func panelExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string  `json:"uid"`
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboard, err)
	}
	out := map[string]string{}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %q has no size", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q query %s is empty", p.Title, tg.RefID)
			}
			out["panel "+p.Title+" "+tg.RefID] = tg.Expr
		}
	}
	return out
}

var metricRE = regexp.MustCompile(`\bwxhub_[a-z0-9_]+\b`)

// usedMetrics maps each wxhub metric family the rules and panels use to
// where it is used (histogram series name their family).
func usedMetrics(t *testing.T) map[string][]string {
	used := map[string][]string{}
	add := func(exprs map[string]string) {
		for where, e := range exprs {
			for _, m := range metricRE.FindAllString(e, -1) {
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if strings.HasSuffix(m, "_seconds"+suf) {
						m = strings.TrimSuffix(m, suf)
					}
				}
				used[m] = append(used[m], where)
			}
		}
	}
	add(ruleExprs(t))
	add(panelExprs(t))
	return used
}

// TestDashboardCoversTheIssue: the panels operators asked for are there.
func TestDashboardCoversTheIssue(t *testing.T) {
	t.Parallel()
	used := usedMetrics(t)
	for _, m := range []string{"wxhub_jobs_total", "wxhub_job_duration_seconds", "wxhub_wechat_errors_total", "wxhub_token_expires_at_seconds",
		"wxhub_token_refreshes_total", "wxhub_token_quota_used", "wxhub_holder_leader", "wxhub_token_lockout", "wxhub_consumer_pending"} {
		if !slices.ContainsFunc(used[m], func(w string) bool { return strings.HasPrefix(w, "panel ") }) {
			t.Errorf("no dashboard panel shows %s", m)
		}
	}
}

// TestEveryMetricUsedIsExported: a real `wxhub run`, driven through a
// lookup, a failing lookup, a failed and then a successful token refresh,
// exports every metric family an alert rule or a panel uses.
func TestEveryMetricUsedIsExported(t *testing.T) {
	t.Parallel()
	run := wxhubtest.StartRun(t)
	bin := wxhubtest.Binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	wx := func(args ...string) {
		t.Helper()
		out, _ := exec.CommandContext(ctx, bin, append(args, "--nats-url", run.NATSURL)...).CombinedOutput()
		t.Logf("wxhub %s:\n%s", strings.Join(args, " "), out)
	}
	wx("lookup", "--appid", run.AppID, "--openid", run.OpenID)
	wx("lookup", "--appid", run.AppID, "--openid", "o-not-a-follower") // WeChat 40003
	// A report of a rejected token, whose refresh fails once (-1) and
	// then succeeds on the retry.
	resp, err := http.Post(run.SimURL+"/_sim/faults", "application/json", strings.NewReader(`{"path":"/cgi-bin/token","errcode":-1,"count":1}`))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("sim fault: %v %v", err, resp)
	}
	resp.Body.Close()
	nc, err := nats.Connect(run.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Publish(events.SubjectTokenInvalidated, []byte(`{"appid":"`+run.AppID+`","version":1,"errcode":40001,"reporter":"ops-test"}`)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// Scrape until every used family is there (the report is judged and
	// the refresh retried in the background), at most 30 s.
	scrape := func() map[string]bool {
		exported := map[string]bool{}
		resp, err := http.Get("http://" + run.OpsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
				exported[f[2]] = true
			}
		}
		return exported
	}
	used := usedMetrics(t)
	names := make([]string, 0, len(used))
	for m := range used {
		names = append(names, m)
	}
	sort.Strings(names)
	if len(names) < 10 {
		t.Fatalf("only %d metrics found in the rules and panels: the pattern is broken", len(names))
	}
	var missing []string
	deadline := time.Now().Add(30 * time.Second)
	for tick := time.NewTicker(200 * time.Millisecond); ; <-tick.C {
		exported := scrape()
		missing = slices.DeleteFunc(slices.Clone(names), func(m string) bool { return exported[m] })
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, m := range missing {
		t.Errorf("%s is used by %v but wxhub run does not export it", m, used[m])
	}
}
