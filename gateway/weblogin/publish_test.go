package weblogin_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
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
	h, err := weblogin.New(weblogin.Config{
		Apps:   []weblogin.App{{AppID: e.demoApp.AppID, CallbackBase: e.front.URL, ReturnTo: []string{e.demoURL}}},
		States: weblogin.NewStateStore(e.states, 0, nil), Jobs: jobs, Wait: wait, Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	cbURL, b := e.login(t, "snsapi_base", e.demoURL, biz)
	cu, _ := url.Parse(cbURL)
	jobID := e.storedState(t, cu.Query().Get("state")).JobID
	req := httptest.NewRequest(http.MethodGet, cu.RequestURI(), nil)
	for _, c := range b.c.Jar.Cookies(cu) {
		req.AddCookie(c)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code, query(t, w.Header().Get("Location")), jobID
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
// surely did not happen: error=temporarily_unavailable and no wxhub_job.
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

	code, q, _ := e.callbackWith(t, jobs, 5*time.Second, "biz-6")
	if code != http.StatusFound || q.Get("error") != weblogin.ErrorUnavailable || q.Has("wxhub_job") || q.Get("state") != "biz-6" {
		t.Fatalf("callback with a failed publish: %d %v; want error=temporarily_unavailable, the state and no wxhub_job", code, q)
	}
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

	code, q, _ := e.callbackWith(t, jobs, 300*time.Millisecond, "biz-8")
	if code != http.StatusFound || q.Get("error") != weblogin.ErrorUnavailable || q.Has("wxhub_job") {
		t.Fatalf("callback without a stream within a 300 ms wait: %d %v; want error=temporarily_unavailable and no wxhub_job", code, q)
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
