package deploy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
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
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID      string `json:"refId"`
		Expr       string `json:"expr"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
	// Panels of a collapsed row.
	Panels []panel `json:"panels"`
}

// dashboardDoc is the part of the dashboard the tests read.
type dashboardDoc struct {
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"` // a string, or {query, refId}
		} `json:"list"`
	} `json:"templating"`
}

func readDashboard(t *testing.T) dashboardDoc {
	t.Helper()
	b, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboardDoc
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboard, err)
	}
	return d
}

// allPanels returns every panel, those inside collapsed rows included,
// each with the title of the row it is under ("" above the first row).
func allPanels(d dashboardDoc) (ps []panel, rowOf map[int]string) {
	rowOf = map[int]string{}
	row := ""
	var walk func([]panel)
	walk = func(list []panel) {
		for _, p := range list {
			if p.Type == "row" {
				row = p.Title
			}
			ps = append(ps, p)
			rowOf[p.ID] = row
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return ps, rowOf
}

// panelExprs returns every dashboard panel's queries (and those of the
// template variables), and checks the dashboard's shape on the way.
func panelExprs(t *testing.T) map[string]string {
	t.Helper()
	d := readDashboard(t)
	out := map[string]string{}
	ids := map[int]bool{}
	ps, _ := allPanels(d)
	for _, p := range ps {
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
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the $datasource variable", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q query %s is empty", p.Title, tg.RefID)
			}
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q query %s does not use the $datasource variable", p.Title, tg.RefID)
			}
			out["panel "+p.Title+" "+tg.RefID] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		if q == "" {
			t.Errorf("variable %s has no query", v.Name)
		}
		out["variable "+v.Name] = q
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

// TestDashboardCoversTheIssue: the panels operators asked for are there,
// the gateway's in a Gateway row.
func TestDashboardCoversTheIssue(t *testing.T) {
	t.Parallel()
	used := usedMetrics(t)
	for _, m := range []string{"wxhub_jobs_total", "wxhub_job_duration_seconds", "wxhub_wechat_errors_total", "wxhub_token_expires_at_seconds",
		"wxhub_token_refreshes_total", "wxhub_token_quota_used", "wxhub_token_quota_limit", "wxhub_token_quota_reserve",
		"wxhub_holder_leader", "wxhub_token_lockout", "wxhub_consumer_pending",
		"wxhub_gateway_calls_total", "wxhub_gateway_call_duration_seconds", "wxhub_gateway_retries_total"} {
		if !slices.ContainsFunc(used[m], func(w string) bool { return strings.HasPrefix(w, "panel ") }) {
			t.Errorf("no dashboard panel shows %s", m)
		}
	}

	// What the gateway row must show, as (part of) a query.
	d := readDashboard(t)
	ps, rowOf := allPanels(d)
	var gateway []string
	for _, p := range ps {
		for _, tg := range p.Targets {
			if strings.Contains(tg.Expr, "wxhub_gateway_") {
				if rowOf[p.ID] != "Gateway" {
					t.Errorf("panel %q shows gateway metrics under row %q, want Gateway", p.Title, rowOf[p.ID])
				}
				gateway = append(gateway, tg.Expr)
			}
		}
	}
	for _, want := range []struct{ what, re string }{
		{"call rate by client", `sum by \(client\) \(rate\(wxhub_gateway_calls_total\{`},
		{"errcodes (refusals) by client and errcode", `sum by \(client, errcode\) \(rate\(wxhub_gateway_calls_total`},
		{"relay latency p50", `histogram_quantile\(0\.5, sum by \(le, client\) \(rate\(wxhub_gateway_call_duration_seconds_bucket`},
		{"relay latency p99", `histogram_quantile\(0\.99, sum by \(le, client\) \(rate\(wxhub_gateway_call_duration_seconds_bucket`},
		{"repeats by reason (token: after 40001)", `sum by \(client, reason\) \(rate\(wxhub_gateway_retries_total`},
		{"WeChat unreachable", `wxhub_gateway_calls_total\{[^}]*errcode="transport"`},
		// The client's doing, not WeChat's: shown apart from WeChat's and
		// the gateway's errcodes.
		{"clients gone or too slow to read", `sum by \(client\) \(rate\(wxhub_gateway_calls_total\{[^}]*errcode=~"client_gone\|answer_timeout"`},
		{"other errcodes", `sum by \(client\) \(rate\(wxhub_gateway_calls_total\{[^}]*errcode!~"0\|transport\|client_gone\|answer_timeout"`},
		{"no token to give", `wxhub_gateway_calls_total\{[^}]*path=~"/cgi-bin/\(stable_\)\?token",errcode="-1"`},
	} {
		re := regexp.MustCompile(want.re)
		if !slices.ContainsFunc(gateway, re.MatchString) {
			t.Errorf("the Gateway row has no query for %s (/%s/)", want.what, want.re)
		}
	}
}

// TestDashboardQueriesParse: every panel and variable query is valid
// PromQL once Grafana's variables are filled in (promtool checks each as a
// recording rule).
func TestDashboardQueriesParse(t *testing.T) {
	t.Parallel()
	pt := promtool(t)
	fill := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$appid", ".*", "$client", ".*")
	exprs := panelExprs(t)
	wheres := make([]string, 0, len(exprs))
	for w := range exprs {
		wheres = append(wheres, w)
	}
	sort.Strings(wheres)
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	labelValues := regexp.MustCompile(`^label_values\((\w+), *\w+\)$`)
	var rules []rule
	for i, w := range wheres {
		e := fill.Replace(exprs[w])
		if m := labelValues.FindStringSubmatch(e); m != nil {
			e = m[1] // Grafana's, not PromQL: check the metric selector
		}
		if strings.Contains(e, "$") {
			t.Errorf("%s: unknown variable in %q", w, exprs[w])
		}
		rules = append(rules, rule{Record: "wxhub_dashboard_query_" + strconv.Itoa(i), Expr: e})
	}
	check := func(rules []rule) ([]byte, error) {
		b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "dashboard-queries.yaml")
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return exec.Command(pt, "check", "rules", f).CombinedOutput()
	}
	if _, err := check(rules); err == nil {
		return
	}
	for i, r := range rules { // name the failing ones
		if out, err := check([]rule{r}); err != nil {
			t.Errorf("%s: %q is not valid PromQL: %v\n%s", wheres[i], exprs[wheres[i]], err, out)
		}
	}
}

// TestEveryAlertHasTests: each alert has a promtool case where it fires;
// the unit test file exercises no alert that does not exist.
func TestEveryAlertHasTests(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(alertRuleTests)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Tests []struct {
			Cases []struct {
				Alert string `yaml:"alertname"`
				Exp   []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	fires := map[string]bool{}
	for _, tc := range f.Tests {
		for _, c := range tc.Cases {
			fires[c.Alert] = fires[c.Alert] || len(c.Exp) > 0
		}
	}
	alerts := ruleExprs(t)
	for name := range alerts {
		if a := strings.TrimPrefix(name, "alert "); !fires[a] {
			t.Errorf("%s: no case in %s where it fires", a, alertRuleTests)
		}
	}
	for a := range fires {
		if _, ok := alerts["alert "+a]; !ok {
			t.Errorf("%s tests alert %s, which %s does not define", alertRuleTests, a, alertRules)
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
	gatewayCalls(t, ctx, run)

	// Scrape until every used family is there (the report is judged and
	// the refresh retried in the background), at most 30 s.
	// exported: family -> the label names its series carry.
	var exported map[string]map[string]bool
	scrape := func() {
		exported = map[string]map[string]bool{}
		resp, err := http.Get("http://" + run.OpsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		histograms := map[string]bool{}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if f := strings.Fields(line); len(f) >= 4 && f[0] == "#" && f[1] == "TYPE" {
				exported[f[2]] = map[string]bool{}
				histograms[f[2]] = f[3] == "histogram"
				continue
			}
			if line == "" || line[0] == '#' {
				continue
			}
			name, labels := line, ""
			if i := strings.IndexAny(line, "{ "); i >= 0 {
				name, labels = line[:i], line[i:]
			}
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if f := strings.TrimSuffix(name, suf); histograms[f] {
					name = f
				}
			}
			if exported[name] == nil {
				continue
			}
			for _, m := range scrapedLabel.FindAllStringSubmatch(labels, -1) {
				exported[name][m[1]] = true
			}
		}
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
		scrape()
		missing = slices.DeleteFunc(slices.Clone(names), func(m string) bool { return exported[m] != nil })
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, m := range missing {
		t.Errorf("%s is used by %v but wxhub run does not export it", m, used[m])
	}
	checkLabels(t, exported)
}

var (
	scrapedLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)
	selectorRE   = regexp.MustCompile(`\b(wxhub_[a-z0-9_]+)\{([^}]*)\}`)
	matcherRE    = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	groupingRE   = regexp.MustCompile(`\b(?:by|on|without|ignoring)\s*\(([^)]*)\)`)
	labelValsRE  = regexp.MustCompile(`label_values\((wxhub_[a-z0-9_]+),\s*(\w+)\)`)
)

// checkLabels: every label a rule, panel or variable selects on or groups
// by is one the scraped series carry (a typo in a label name yields an
// empty panel or an alert that never fires, not an error). Grouping labels
// may also be Prometheus' target labels and le.
func checkLabels(t *testing.T, exported map[string]map[string]bool) {
	t.Helper()
	family := func(m string) string {
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if f := strings.TrimSuffix(m, suf); exported[f] != nil {
				return f
			}
		}
		return m
	}
	exprs := ruleExprs(t)
	maps.Copy(exprs, panelExprs(t))
	for where, e := range exprs {
		inExpr := map[string]bool{"instance": true, "job": true, "le": true}
		for _, m := range metricRE.FindAllString(e, -1) {
			maps.Copy(inExpr, exported[family(m)])
		}
		for _, sel := range selectorRE.FindAllStringSubmatch(e, -1) {
			labels := exported[family(sel[1])]
			if labels == nil {
				continue // reported as not exported
			}
			for _, m := range matcherRE.FindAllStringSubmatch(sel[2], -1) {
				if !labels[m[1]] {
					t.Errorf("%s selects %s on label %q, which its series do not carry (they have %v)", where, sel[1], m[1], slices.Sorted(maps.Keys(labels)))
				}
			}
		}
		for _, g := range groupingRE.FindAllStringSubmatch(e, -1) {
			for l := range strings.SplitSeq(g[1], ",") {
				if l = strings.TrimSpace(l); l != "" && !inExpr[l] {
					t.Errorf("%s groups by label %q, which none of its metrics carries", where, l)
				}
			}
		}
		for _, lv := range labelValsRE.FindAllStringSubmatch(e, -1) {
			if labels := exported[lv[1]]; labels != nil && !labels[lv[2]] {
				t.Errorf("%s lists values of label %q, which %s does not carry", where, lv[2], lv[1])
			}
		}
	}
}

// gatewayCalls drives the gateway of a `wxhub run` (its demo client): a
// token request, a relayed call that WeChat answers -1 once (repeated:
// a transient retry), and a refused call (wrong key).
func gatewayCalls(t *testing.T, ctx context.Context, run *wxhubtest.Run) {
	t.Helper()
	out := run.Stdout()
	base := regexp.MustCompile(`Gateway for existing WeChat SDKs: (\S+)`).FindStringSubmatch(out)
	keyFile := regexp.MustCompile(`its key is in (\S+)`).FindStringSubmatch(out)
	if base == nil || keyFile == nil {
		t.Fatalf("wxhub run printed no gateway URL or demo key file:\n%s", out)
	}
	key, err := os.ReadFile(keyFile[1])
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string, q url.Values) map[string]any {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base[1]+path+"?"+q.Encode(), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("gateway %s: %v", path, err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("gateway %s: %v", path, err)
		}
		return body
	}
	tok := get("/cgi-bin/token", url.Values{"grant_type": {"client_credential"}, "appid": {run.AppID}, "secret": {strings.TrimSpace(string(key))}})
	handle, _ := tok["access_token"].(string)
	if handle == "" {
		t.Fatalf("gateway token answer: %v", tok)
	}
	if body := get("/cgi-bin/token", url.Values{"grant_type": {"client_credential"}, "appid": {run.AppID}, "secret": {"not-the-demo-clients-key"}}); body["errcode"] != float64(40125) {
		t.Errorf("gateway, wrong key: %v, want errcode 40125", body)
	}
	resp, err := http.Post(run.SimURL+"/_sim/faults", "application/json", strings.NewReader(`{"path":"/cgi-bin/user/info","errcode":-1,"count":1}`))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("sim fault: %v %v", err, resp)
	}
	resp.Body.Close()
	info := get("/cgi-bin/user/info", url.Values{"access_token": {handle}, "openid": {run.OpenID}, "lang": {"zh_CN"}})
	if info["openid"] != run.OpenID {
		t.Errorf("gateway user/info after one -1: %v, want the user (the gateway repeats a GET)", info)
	}
}

// TestOperationsDocCoversTheKit: docs/operations.md says what to do for
// every alert and lists every metric the rules and panels use.
func TestOperationsDocCoversTheKit(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for name := range ruleExprs(t) {
		a := strings.TrimPrefix(name, "alert ")
		if !strings.Contains(doc, "| `"+a+"` |") {
			t.Errorf("docs/operations.md has no alerts table row for %s", a)
		}
	}
	for m := range usedMetrics(t) {
		if !strings.Contains(doc, "`"+m+"`") {
			t.Errorf("docs/operations.md does not list metric %s", m)
		}
	}
}
