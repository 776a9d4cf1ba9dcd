package holder

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxhub/wxhub/events"
)

// A manual refresh that has not ended when the requester's answer is due
// (here the write of its token is held) is answered within the
// requester's timeout: under way, not failed. It goes on, and its token
// is stored. Asked while another refresh of the app (a scheduled one) is
// under way, the answer says that one is; the request makes no second
// fetch.
func TestManualRefreshOutlastingTheRequesterIsUnderWay(t *testing.T) {
	t.Parallel()
	for _, busy := range []string{events.ReasonManual, events.ReasonScheduled} {
		t.Run("refresh under way "+busy, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			app := e.newApp(events.ModeToken)
			var hold atomic.Bool
			writing, release := make(chan struct{}), make(chan struct{})
			var once, released sync.Once
			h1 := e.start(e.config("h1", app), func(h *Holder) {
				h.hooks.beforeWrite = func(string) {
					if hold.Load() {
						once.Do(func() { close(writing) })
						<-release
					}
				}
			})
			waitRefreshed(t, e, app.AppID, 1)
			resume := func() { released.Do(func() { close(release) }) }
			t.Cleanup(resume) // before the holder's cleanup
			hold.Store(true)
			if busy == events.ReasonScheduled {
				e.clock.Advance(2 * time.Hour) // version 1 expired: h1 refreshes it
				waitClosed(t, writing, "the scheduled refresh's write")
			}

			one := uint64(1)
			wait := 2 * time.Second
			reply := e.askRefreshWithin(app.AppID, &one, wait)
			if !reply.UnderWay || reply.Holder != "h1" || !strings.HasPrefix(reply.Error, "refresh under way: ") ||
				!strings.Contains(reply.Error, busy) || !strings.Contains(reply.Error, "token.refreshed") || strings.Contains(reply.Error, "refresh failed") {
				t.Errorf("answer %+v, want under way (%s) by h1, naming token.refreshed", reply, busy)
			}
			waitClosed(t, writing, "the refresh's write")
			// Holder.Refresh says the same, matching ctx's error too.
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			err := h1.h.Refresh(ctx, app.AppID)
			cancel()
			if !errors.Is(err, ErrRefreshUnderWay) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Refresh while a refresh is under way: %v, want ErrRefreshUnderWay and the deadline", err)
			}
			resume()
			if ev := waitRefreshed(t, e, app.AppID, 2); ev.Reason != busy || ev.Holder != "h1" {
				t.Errorf("version 2: reason %q by %q, want %s by h1", ev.Reason, ev.Holder, busy)
			}
			if n := e.fetches(app.AppID); n != 2 {
				t.Errorf("WeChat token calls = %d, want 2 (startup, the refresh under way)", n)
			}
		})
	}
}

// askRefreshWithin sends a manual refresh request saying the requester
// waits wait for the answer, and waits exactly that long.
func (e *testEnv) askRefreshWithin(appid string, replace *uint64, wait time.Duration) events.TokenRefreshReply {
	e.t.Helper()
	data, _ := json.Marshal(events.TokenRefreshRequest{AppID: appid, Requester: "test", Version: replace, TimeoutMS: wait.Milliseconds()})
	m, err := e.nats.NC.Request(events.SubjectTokenRefreshRequest, data, wait)
	if err != nil {
		e.t.Fatalf("manual refresh request: no answer within the requester's %v: %v", wait, err)
	}
	var reply events.TokenRefreshReply
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		e.t.Fatalf("answer %s: %v", m.Data, err)
	}
	return reply
}
