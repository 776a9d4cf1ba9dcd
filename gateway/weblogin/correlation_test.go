package weblogin_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/gateway/weblogin"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// resultHeaders follows the result subjects and returns the headers of
// the result of job id, or fails after 20 s.
func (e *loginEnv) resultHeaders(t *testing.T) func(id string) nats.Header {
	t.Helper()
	ch := make(chan *nats.Msg, 64)
	var subs []*nats.Subscription
	for _, subj := range []string{events.SubjectUserProfile, events.SubjectUserProfileFailed} {
		sub, err := e.nats.NC.ChanSubscribe(subj, ch)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	t.Cleanup(func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	})
	if err := e.nats.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	return func(id string) nats.Header {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case m := <-ch:
				if m.Header.Get(events.HeaderMsgID) == id {
					return m.Header
				}
			case <-deadline:
				t.Fatalf("no result for job %s within 20 s", id)
			}
		}
	}
}

// The job's correlation id is the hex SHA-256 of the business's state,
// and the result carries it back: the business can tell its own login's
// result from someone else's. The state itself is not in it.
func TestResultCarriesTheHashOfTheBusinessStateAsCorrelationID(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	headers := e.resultHeaders(t)
	const state = "biz-session-state-1"
	cbURL, b := e.login(t, "snsapi_base", e.demoURL, state)
	resp, _ := b.get(t, cbURL)
	job := query(t, resp.Header.Get("Location")).Get("wxhub_job")
	if job == "" {
		t.Fatalf("login: %q", resp.Header.Get("Location"))
	}
	h := headers(job)
	if got := h.Get(events.HeaderCorrelationID); got != hexSHA256(state) || got != weblogin.CorrelationID(state) {
		t.Fatalf("result's %s %q, want the hex SHA-256 of the business state %q", events.HeaderCorrelationID, got, hexSHA256(state))
	}
	for k, vs := range h {
		for _, v := range vs {
			if strings.Contains(v, state) {
				t.Fatalf("the business state is in the result's header %s: %q", k, v)
			}
		}
	}
}

// wxhub_job is no bearer ticket: someone who got hold of a finished login
// URL (history, access logs) and pairs its wxhub_job with the state of
// their own session gets a refusal from the demo page, not the profile.
func TestDemoPageRefusesAnotherLoginsJobWithThisBrowsersState(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	cbURL, victim := e.login(t, "snsapi_base", e.demoURL, "victim-session-state")
	resp, _ := victim.get(t, cbURL)
	job := query(t, resp.Header.Get("Location")).Get("wxhub_job")
	if job == "" {
		t.Fatalf("victim's login: %q", resp.Header.Get("Location"))
	}

	attacker := newAgent(t)
	if resp, _ := attacker.get(t, e.demoURL); resp.StatusCode != http.StatusOK { // the attacker's own state cookie
		t.Fatalf("demo page: %d", resp.StatusCode)
	}
	du, _ := url.Parse(e.demoURL)
	var own string
	for _, c := range attacker.c.Jar.Cookies(du) {
		if c.Name == "demo_login_state" {
			own = c.Value
		}
	}
	if own == "" {
		t.Fatal("the demo page set no state cookie")
	}
	resp, body := attacker.get(t, e.demoURL+"?"+url.Values{"wxhub_job": {job}, "state": {own}}.Encode())
	if resp.StatusCode != http.StatusOK || strings.Contains(body, `id="openid"`) || !strings.Contains(body, `id="correlation-check"`) {
		t.Fatalf("the demo page accepted another login's job with this browser's state:\n%s", body)
	}
}

// The callback's log names the login by a fingerprint of its job id: the
// job id (a reference to the user's profile), the code, the nonce, the
// login cookie's secret and the business state are not in it.
func TestCallbackLogsNoJobIDOrSecrets(t *testing.T) {
	t.Parallel()
	logs := &wxhubtest.Buffer{}
	e := newLoginEnv(t, envOptions{logs: logs})
	cbURL, b := e.login(t, "snsapi_base", e.demoURL, "biz-logged")
	q := query(t, cbURL)
	du, _ := url.Parse(e.front.URL + weblogin.PathCallback)
	var secrets []string
	for _, c := range b.c.Jar.Cookies(du) {
		secrets = append(secrets, c.Value)
	}
	other := newAgent(t)
	if resp, _ := other.get(t, cbURL); resp.StatusCode != http.StatusForbidden { // logged too
		t.Fatalf("another browser's callback: %d", resp.StatusCode)
	}
	resp, _ := b.get(t, cbURL)
	job := query(t, resp.Header.Get("Location")).Get("wxhub_job")
	if job == "" || len(secrets) == 0 {
		t.Fatalf("login: %q, cookies %q", resp.Header.Get("Location"), secrets)
	}
	out := logs.String()
	if !strings.Contains(out, "login done") || !strings.Contains(out, "job_fp=") {
		t.Fatalf("no login-done line with a job fingerprint:\n%s", out)
	}
	for _, s := range append(secrets, job, strings.TrimPrefix(job, "weblogin-"), q.Get("code"), q.Get("state"), "biz-logged") {
		if strings.Contains(out, s) {
			t.Fatalf("the log holds %q:\n%s", s, out)
		}
	}
}
