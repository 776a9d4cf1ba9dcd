package weblogin_test

import (
	"context"
	"errors"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/gateway/weblogin"
)

// callbackWith serves the callback of a fresh login (state biz) with a
// handler on the env's state store that runs its job with jobs, and
// returns the redirect's status and query, and the login's job id.
func (e *loginEnv) callbackWith(t *testing.T, jobs weblogin.JobRunner, wait time.Duration, biz string) (int, url.Values, string) {
	t.Helper()
	w, jobID, _ := e.callbackOn(t, e.states, jobs, wait, biz)
	return w.Code, query(t, w.Header().Get("Location")), jobID
}

// callbackOn is callbackWith with the handler's states on kv, returning
// the whole response and the login's nonce too.
func (e *loginEnv) callbackOn(t *testing.T, kv jetstream.KeyValue, jobs weblogin.JobRunner, wait time.Duration, biz string) (*httptest.ResponseRecorder, string, string) {
	t.Helper()
	h, err := weblogin.New(weblogin.Config{
		Apps:   []weblogin.App{{AppID: e.demoApp.AppID, CallbackBase: e.front.URL, ReturnTo: []string{e.demoURL}}},
		States: weblogin.NewStateStore(kv, 0, nil), Jobs: jobs, Wait: wait, Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	cbURL, b := e.login(t, "snsapi_base", e.demoURL, biz)
	cu, _ := url.Parse(cbURL)
	nonce := cu.Query().Get("state")
	jobID := e.storedState(t, nonce).JobID
	req := httptest.NewRequest(http.MethodGet, cu.RequestURI(), nil)
	for _, c := range b.c.Jar.Cookies(cu) {
		req.AddCookie(c)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w, jobID, nonce
}

// wantReloadPage checks the answer to a callback whose job surely was not
// published while its state could be put back: a 503 page (Retry-After,
// no redirect) asking for a reload, with a link back to return_to
// (error=temporarily_unavailable, no wxhub_job), the login cookie not
// cleared, and the state stored again under its nonce with its job id.
func (e *loginEnv) wantReloadPage(t *testing.T, status int, h http.Header, body, nonce, jobID, biz string) {
	t.Helper()
	if status != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || h.Get("Location") != "" || !strings.Contains(body, "Reload this page") {
		t.Fatalf("callback with a job surely not published: %d, Retry-After %q, Location %q; want 503 asking for a reload\n%s", status, h.Get("Retry-After"), h.Get("Location"), body)
	}
	m := regexp.MustCompile(`id="back" href="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no link back on the page:\n%s", body)
	}
	back := query(t, html.UnescapeString(m[1]))
	if back.Get("error") != weblogin.ErrorUnavailable || back.Has("wxhub_job") || back.Get("state") != biz {
		t.Fatalf("the link back: %v; want error=temporarily_unavailable, the state and no wxhub_job", back)
	}
	if sc := h.Values("Set-Cookie"); len(sc) != 0 {
		t.Fatalf("the page sets cookies %q; the login cookie must stay for the reload", sc)
	}
	if got := e.storedState(t, nonce).JobID; got != jobID {
		t.Fatalf("the state put back has job %q, want %q", got, jobID)
	}
}

// A publish JetStream does not acknowledge in time (here: a subject a
// core subscriber swallows, no stream holds it) may have been stored: the
// client cannot tell a lost ack from a lost message. So it is answered as
// a wait timeout, error=timeout with wxhub_job (the id is fixed and
// JetStream dedupes by it), never as a failure that drops the job.
func TestCallbackAnswersAnUnacknowledgedPublishAsATimeout(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	const prefix = "stalled."
	sink, err := e.nats.NC.SubscribeSync(prefix + events.SubjectOAuthCodeReceived) // swallows, never acks
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Unsubscribe() })
	if err := e.nats.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	jobs, err := weblogin.NewNATSJobs(e.nats.Conn(t), prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jobs.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = jobs.RunOAuthJob(ctx, events.OAuthCodeReceived{JobID: "weblogin-stalled", AppID: e.demoApp.AppID, Code: "c"}, "")
	if !errors.Is(err, weblogin.ErrNotAcknowledged) || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, weblogin.ErrNotPublished) {
		t.Fatalf("RunOAuthJob with an unacknowledged publish: %v, want ErrNotAcknowledged (and the deadline), not ErrNotPublished", err)
	}

	code, q, jobID := e.callbackWith(t, jobs, 300*time.Millisecond, "biz-5")
	if code != http.StatusFound || q.Get("error") != weblogin.ErrorTimeout || q.Get("wxhub_job") != jobID || q.Get("state") != "biz-5" {
		t.Fatalf("callback with an unacknowledged publish: %d %v; want error=timeout, wxhub_job and the state", code, q)
	}
	if m, err := sink.NextMsg(time.Second); err != nil || m.Header.Get(nats.MsgIdHdr) == "" {
		t.Fatalf("the stalled publish did not reach the subject: %v", err)
	}
}

// A publish nobody can take (no stream and no subscriber: no responders)
// surely did not happen: the code was not exchanged, so the login is kept
// for a reload (503 page), and no wxhub_job is given.
func TestCallbackTellsAFailedPublish(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	jobs, err := weblogin.NewNATSJobs(e.nats.Conn(t), "nostream.")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jobs.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = jobs.RunOAuthJob(ctx, events.OAuthCodeReceived{JobID: "weblogin-nostream", AppID: e.demoApp.AppID, Code: "c"}, "")
	if !errors.Is(err, weblogin.ErrNotPublished) || !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("RunOAuthJob without a stream: %v, want ErrNotPublished (no stream response)", err)
	}

	w, jobID, nonce := e.callbackOn(t, e.states, jobs, 5*time.Second, "biz-6")
	e.wantReloadPage(t, w.Code, w.Header(), w.Body.String(), nonce, jobID, "biz-6")
}

// A wait shorter than the retries of a publish no stream takes (here
// 300 ms: attempts at 0 and 250 ms, the third would come at 500 ms):
// every attempt sent had no responders, so nothing was stored, and the
// deadline that ends the pause between attempts does not make it
// "may have been stored" (a timeout, with a wxhub_job for a job that
// never ran).
func TestNoStreamWithinAShortWaitIsNotPublishedNotATimeout(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	jobs, err := weblogin.NewNATSJobs(e.nats.Conn(t), "nostream.")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jobs.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = jobs.RunOAuthJob(ctx, events.OAuthCodeReceived{JobID: "weblogin-nostream-short", AppID: e.demoApp.AppID, Code: "c"}, "")
	if !errors.Is(err, weblogin.ErrNotPublished) || !errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, weblogin.ErrNotAcknowledged) {
		t.Fatalf("RunOAuthJob without a stream within 300 ms: %v, want ErrNotPublished (no stream response), not ErrNotAcknowledged", err)
	}

	w, jobID, nonce := e.callbackOn(t, e.states, jobs, 300*time.Millisecond, "biz-8")
	e.wantReloadPage(t, w.Code, w.Header(), w.Body.String(), nonce, jobID, "biz-8")
}

// uncapture takes subject out of WX_JOBS' subjects (a stream being
// reconfigured, or provisioned without it): a publish to it has no
// responders. The returned func puts it back.
func (e *loginEnv) uncapture(t *testing.T, subject string) func() {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.nats.JS.Stream(ctx, events.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	was := slices.Clone(cfg.Subjects)
	cfg.Subjects = slices.DeleteFunc(cfg.Subjects, func(s string) bool { return s == subject })
	if len(cfg.Subjects) == len(was) {
		t.Fatalf("%s does not capture %s: %v", events.StreamJobs, subject, was)
	}
	if _, err := e.nats.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cfg.Subjects = was
		if _, err := e.nats.JS.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
}

// The job of a callback that comes while WX_JOBS does not capture
// oauth.code.received is stored nowhere and its code is not exchanged:
// the browser gets the reload page, keeps its login cookie, and the state
// is back. Once the stream captures the subject again, the same browser's
// reload of the same callback URL finishes the login: the profile, one
// job, one exchange; a reload after that is the usual used state (400).
func TestCallbackWhoseJobNoStreamTookIsFinishedByAReload(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	profile := e.profiles(t)
	cbURL, b := e.login(t, "snsapi_base", e.demoURL, "biz-9")
	nonce := query(t, cbURL).Get("state")
	jobID := e.storedState(t, nonce).JobID

	recapture := e.uncapture(t, events.SubjectOAuthCodeReceived)
	resp, body := b.get(t, cbURL)
	e.wantReloadPage(t, resp.StatusCode, resp.Header, body, nonce, jobID, "biz-9")
	if n, x := e.jobsPublished(t), e.exchanges(); n != 0 || x != 0 {
		t.Fatalf("after the callback no stream took: %d jobs, %d exchanges; want 0 and 0", n, x)
	}

	recapture()
	resp, body = b.get(t, cbURL)
	q := query(t, resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || q.Get("wxhub_job") != jobID || q.Get("state") != "biz-9" || q.Has("error") {
		t.Fatalf("the reload once the stream takes the job: %d %v; want the login done with wxhub_job %s\n%s", resp.StatusCode, q, jobID, body)
	}
	if p := profile(jobID); p.OpenID == "" {
		t.Fatalf("profile of the reloaded login: %+v", p)
	}
	if n, x := e.jobsPublished(t), e.exchanges(); n != 1 || x != 1 {
		t.Fatalf("after the reload: %d jobs, %d exchanges; want 1 and 1", n, x)
	}
	if resp, body := b.get(t, cbURL); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "already used") {
		t.Fatalf("a reload after the login is done: %d, want 400\n%s", resp.StatusCode, body)
	}
}

// closeFirst is a JobRunner that closes conn (which the handler's states
// use too), then runs the job on jobs over it: the publish surely does
// not happen (connection closed), and the state cannot be put back.
type closeFirst struct {
	conn *nats.Conn
	jobs *weblogin.NATSJobs
}

func (c closeFirst) RunOAuthJob(ctx context.Context, job events.OAuthCodeReceived, correlationID string) (weblogin.Outcome, error) {
	c.conn.Close()
	return c.jobs.RunOAuthJob(ctx, job, correlationID)
}

// A job surely not published whose state cannot be put back either (the
// connection is closed) ends the login as before: to return_to with
// error=temporarily_unavailable, no wxhub_job, the login cookie cleared.
func TestCallbackThatCannotKeepTheLoginSendsTheBrowserBack(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	nc := e.nats.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, events.BucketLoginState)
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := weblogin.NewNATSJobs(nc, "")
	if err != nil {
		t.Fatal(err)
	}
	w, _, nonce := e.callbackOn(t, kv, closeFirst{conn: nc, jobs: jobs}, 2*time.Second, "biz-10")
	q := query(t, w.Header().Get("Location"))
	if w.Code != http.StatusFound || q.Get("error") != weblogin.ErrorUnavailable || q.Has("wxhub_job") || q.Get("state") != "biz-10" {
		t.Fatalf("callback that cannot publish nor keep the login: %d %v; want error=temporarily_unavailable, the state and no wxhub_job", w.Code, q)
	}
	resp := http.Response{Header: w.Header()}
	if c := loginSetCookie(t, &resp); c.MaxAge >= 0 {
		t.Fatalf("login cookie %+v, want it cleared", c)
	}
	if _, err := e.states.Get(ctx, nonce); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the state after a login that could not be kept: %v, want it gone", err)
	}
}

// stopNATSFirst is a JobRunner that stops NATS, waits until the jobs'
// connection has noticed, then runs the job: the publish lands in the
// connection's reconnect buffer.
type stopNATSFirst struct {
	jobs         *weblogin.NATSJobs
	stop         func()
	disconnected <-chan struct{}
}

func (s stopNATSFirst) RunOAuthJob(ctx context.Context, job events.OAuthCodeReceived, correlationID string) (weblogin.Outcome, error) {
	s.stop()
	select {
	case <-s.disconnected:
	case <-ctx.Done():
		return weblogin.Outcome{}, errors.New("the jobs' connection did not notice the stop")
	}
	return s.jobs.RunOAuthJob(ctx, job, correlationID)
}

// A callback that publishes while NATS is down: the publish times out
// with the message in the client's reconnect buffer, which sends it when
// NATS returns. The browser gets wxhub_job (error=timeout), and the job's
// result is stored under that id once NATS is back.
func TestCallbackDuringANATSOutageKeepsTheJob(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, envOptions{})
	nc := e.nats.Conn(t)
	disconnected := make(chan struct{}, 1)
	nc.SetDisconnectErrHandler(func(*nats.Conn, error) {
		select {
		case disconnected <- struct{}{}:
		default:
		}
	})
	jobs, err := weblogin.NewNATSJobs(nc, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jobs.Close)

	runner := stopNATSFirst{jobs: jobs, stop: e.nats.Stop, disconnected: disconnected}
	code, q, jobID := e.callbackWith(t, runner, 2*time.Second, "biz-7")
	if code != http.StatusFound || q.Get("wxhub_job") != jobID || q.Get("error") != weblogin.ErrorTimeout || q.Get("state") != "biz-7" {
		t.Fatalf("callback publishing during an outage: %d %v; want error=timeout, wxhub_job %s and the state", code, q, jobID)
	}

	e.nats.Restart(t)
	// The result may be stored before this test's own connection is back:
	// read it from WX_RESULTS (from its start), not from the republish.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stream, err := e.nats.JS.Stream(ctx, events.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: events.NewSubjects("").Results()})
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			t.Fatalf("no result for job %s in %s within 60 s of NATS's return: %v", jobID, events.StreamResults, err)
		}
		if m.Headers().Get(nats.MsgIdHdr) != jobID {
			continue
		}
		if m.Subject() != events.SubjectUserProfile {
			t.Fatalf("the job's result: %s %s, want user.profile", m.Subject(), m.Data())
		}
		return
	}
}
