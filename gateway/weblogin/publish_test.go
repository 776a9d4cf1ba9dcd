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

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/gateway/weblogin"
)

// A publish JetStream never acknowledges (here: a subject no stream
// holds, answered by nobody) runs into the wait's deadline. That is no
// wait timeout: no job goes on, so the browser gets
// error=temporarily_unavailable and no wxhub_job, not error=timeout with
// a job that does not exist.
func TestCallbackTellsAFailedPublishFromAWaitTimeout(t *testing.T) {
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
	if !errors.Is(err, weblogin.ErrNotPublished) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RunOAuthJob with an unacknowledged publish: %v, want ErrNotPublished (and the deadline)", err)
	}

	h, err := weblogin.New(weblogin.Config{
		Apps:   []weblogin.App{{AppID: e.demoApp.AppID, CallbackBase: e.front.URL, ReturnTo: []string{e.demoURL}}},
		States: weblogin.NewStateStore(e.states, 0, nil), Jobs: jobs, Wait: 300 * time.Millisecond, Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	cbURL, b := e.login(t, "snsapi_base", e.demoURL, "biz-5")
	cu, _ := url.Parse(cbURL)
	req := httptest.NewRequest(http.MethodGet, cu.RequestURI(), nil)
	for _, c := range b.c.Jar.Cookies(cu) {
		req.AddCookie(c)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	q := query(t, w.Header().Get("Location"))
	if w.Code != http.StatusFound || q.Get("error") != weblogin.ErrorUnavailable || q.Has("wxhub_job") || q.Get("state") != "biz-5" {
		t.Fatalf("callback with a failed publish: %d %q; want error=temporarily_unavailable, the state and no wxhub_job", w.Code, w.Header().Get("Location"))
	}
	if m, err := sink.NextMsg(time.Second); err != nil || m.Header.Get(nats.MsgIdHdr) == "" {
		t.Fatalf("the stalled publish did not reach the subject: %v", err)
	}
}
