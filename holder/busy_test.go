package holder

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
)

// heldReads holds every Get of a bucket while held is set, as a NATS
// server that does not answer: the Get waits until released or its
// context ends (then it fails with the context's error, as nats.go
// does). blocked receives a value on every held Get (dropped when full).
type heldReads struct {
	jetstream.KeyValue
	held     atomic.Bool
	blocked  chan struct{}
	released chan struct{}
}

func (f *heldReads) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if f.held.Load() {
		select {
		case f.blocked <- struct{}{}:
		default:
		}
		select {
		case <-f.released:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return f.KeyValue.Get(ctx, key)
}

// A manual refresh asked while the leader's token loop cannot take it up
// (here it is still reading wx_tokens at the start of its term, NATS not
// answering) and no refresh of the app is under way is answered within
// the requester's timeout "refresh not started" (ErrBusy): not under way,
// not failed, not refused. The request made no refresh: no WeChat call,
// the stored token and its revision unchanged once the loop goes on (it
// adopts the stored token), nothing counted in wx_quota; and asking again
// then works (the busy request did not use up the manual rate limit).
func TestManualRefreshNotTakenUpIsAnsweredBusy(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	h1 := e.start(e.config("h1", app), nil)
	waitRefreshed(t, e, app.AppID, 1)
	h1.stop(t) // releases its lease: h2 leads at once

	hr := &heldReads{blocked: make(chan struct{}, 1), released: make(chan struct{})}
	hr.held.Store(true)
	var once sync.Once
	release := func() { once.Do(func() { hr.held.Store(false); close(hr.released) }) }
	t.Cleanup(release) // before the holder's cleanup
	h2 := e.start(e.config("h2", app), func(h *Holder) {
		h.hooks.wrapKV = wrapBucket(events.BucketTokens, &hr.KeyValue, hr)
	})
	h2.waitLeads(t)
	waitClosed(t, hr.blocked, "h2's term-start read of wx_tokens")
	rec0, rev0 := e.record(app.AppID)
	calls, counted := e.fetches(app.AppID), e.quotaUsed(app.AppID, false)

	one := uint64(1)
	reply := e.askRefreshWithin(app.AppID, &one, 2*time.Second)
	if reply.Holder != "h2" || reply.UnderWay || reply.Refused != "" || reply.Version != 0 ||
		!strings.HasPrefix(reply.Error, "refresh not started: ") || !strings.Contains(reply.Error, "made no refresh") ||
		!strings.Contains(reply.Error, "ask again") {
		t.Errorf("answer %+v, want \"refresh not started\" by h2: not under way, not refused, no version", reply)
	}
	// Holder.Refresh says the same, matching ctx's error too.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err := h2.h.Refresh(ctx, app.AppID)
	cancel()
	if !errors.Is(err, ErrBusy) || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrRefreshUnderWay) {
		t.Errorf("Refresh while the loop reads NATS: %v, want ErrBusy and the deadline, not ErrRefreshUnderWay", err)
	}

	release()
	h2.waitEvals(t, 3) // the term went on: the stored token adopted
	if rec, rev := e.record(app.AppID); rec.Version != rec0.Version || rev != rev0 || rec.AccessToken != rec0.AccessToken {
		t.Errorf("stored version %d at revision %d, want version %d at %d untouched: the busy request made a refresh",
			rec.Version, rev, rec0.Version, rev0)
	}
	if n := e.fetches(app.AppID); n != calls {
		t.Errorf("WeChat token calls = %d, want %d: the busy request made a call", n, calls)
	}
	if n := e.quotaUsed(app.AppID, false); n != counted {
		t.Errorf("wx_quota counts %d fetches, want %d", n, counted)
	}
	if st := h2.h.Status()[0]; st.Version != rec0.Version || !st.Leader {
		t.Errorf("h2: %+v, want the leader serving version %d", st, rec0.Version)
	}

	// Asked again, the request is taken up: one refresh.
	if reply := e.askRefresh(app.AppID, &one); reply.Error != "" || reply.Version != 2 || reply.Holder != "h2" {
		t.Errorf("asked again: %+v, want version 2 by h2", reply)
	}
	if n := e.fetches(app.AppID); n != calls+1 {
		t.Errorf("WeChat token calls = %d, want %d", n, calls+1)
	}
}
