package handlers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/wechat"
)

func TestClassify(t *testing.T) {
	api := func(code int) error {
		return fmt.Errorf("call: %w", &wechat.APIError{Endpoint: "/cgi-bin/user/info", Code: code, Msg: "x"})
	}
	tests := []struct {
		name      string
		err       error
		kind      string
		retryable bool
		retry     bool
	}{
		{"system error", api(-1), events.KindWeChat, true, true},
		{"minute quota", api(45011), events.KindWeChat, true, true},
		{"timeout", &wechat.TransportError{Endpoint: "/x", Timeout: true, Err: context.DeadlineExceeded}, events.KindTimeout, true, true},
		{"http 502", &wechat.TransportError{Endpoint: "/x", StatusCode: 502, Err: errors.New("bad gateway")}, events.KindWeChat, true, true},
		{"job deadline", context.DeadlineExceeded, events.KindTimeout, true, true},
		{"stopping", context.Canceled, events.KindInternal, true, true},
		{"token unavailable", &tokenUnavailableError{err: errors.New("none")}, events.KindTokenUnavailable, true, true},
		{"store down", &storeError{err: errors.New("nats")}, events.KindInternal, true, true},
		{"invalid openid", api(40003), events.KindWeChat, false, false},
		{"code used", api(40163), events.KindWeChat, false, false},
		{"daily quota", api(45009), events.KindQuota, true, false},
		{"bad appsecret", api(40125), events.KindConfig, false, false},
		{"token missing (bug)", api(41001), events.KindInternal, false, false},
		{"our own bug", errors.New("boom"), events.KindInternal, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fe, retry := classify(tt.err)
			if fe.Kind != tt.kind || fe.Retryable != tt.retryable || retry != tt.retry {
				t.Fatalf("classify = %+v retry=%v, want kind %s retryable %v retry %v", fe, retry, tt.kind, tt.retryable, tt.retry)
			}
		})
	}
}

func TestNakDelay(t *testing.T) {
	h := &Handlers{cfg: Config{NakDelayMin: time.Second, NakDelayMax: 5 * time.Second}}
	tests := []struct {
		delivered int
		err       error
		want      time.Duration
	}{
		{1, &wechat.APIError{Code: -1}, time.Second},
		{2, &wechat.APIError{Code: -1}, 2 * time.Second},
		{3, &wechat.APIError{Code: -1}, 4 * time.Second},
		{9, &wechat.APIError{Code: -1}, 5 * time.Second},
		{1, &wechat.APIError{Code: 45011}, 5 * time.Second},
		{3, context.Canceled, 0},
	}
	for _, tt := range tests {
		if got := h.nakDelay(tt.delivered, tt.err); got != tt.want {
			t.Errorf("nakDelay(%d, %v) = %s, want %s", tt.delivered, tt.err, got, tt.want)
		}
	}
}

func TestDeliveryOf(t *testing.T) {
	m := message.NewMessage("u", nil)
	if d := DeliveryOf(m, "user.lookup"); d.Subject != "user.lookup" || d.Delivered != 1 || d.StreamSeq != 0 {
		t.Fatalf("no metadata: %+v", d)
	}
	m.Metadata.Set(MetaSubject, "wx.user.lookup")
	m.Metadata.Set(MetaDelivered, "3")
	m.Metadata.Set(MetaStreamSeq, "42")
	if d := DeliveryOf(m, "user.lookup"); d.Subject != "wx.user.lookup" || d.Delivered != 3 || d.StreamSeq != 42 {
		t.Fatalf("metadata: %+v", d)
	}
}

func TestHasScope(t *testing.T) {
	for _, tt := range []struct {
		scopes string
		want   bool
	}{{"snsapi_userinfo", true}, {"snsapi_base,snsapi_userinfo", true}, {"snsapi_base", false}, {"", false}} {
		if got := hasScope(tt.scopes, "snsapi_userinfo"); got != tt.want {
			t.Errorf("hasScope(%q) = %v", tt.scopes, got)
		}
	}
}

func TestCorrelationID(t *testing.T) {
	tests := []struct{ name, header, msgID, seq, payload, want string }{
		{"from the publisher", "c-1", "m-1", "7", `{"job_id":"j-1"}`, "c-1"},
		{"job_id", "", "m-1", "7", `{"job_id":"j-1"}`, "j-1"},
		{"Nats-Msg-Id of a job without a job_id", "", "m-1", "7", `not json`, "m-1"},
		{"result id invalid-<seq>", "", "a b", "7", `not json`, "invalid-7"},
		{"message uuid, not from a stream", "", "", "", `not json`, "uuid-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := message.NewMessage("uuid-1", []byte(tt.payload))
			if tt.header != "" {
				m.Metadata.Set(events.HeaderCorrelationID, tt.header)
			}
			if tt.msgID != "" {
				m.Metadata.Set(MetaMsgID, tt.msgID)
			}
			if tt.seq != "" {
				m.Metadata.Set(MetaStreamSeq, tt.seq)
			}
			// The handlers' own rule, without the middleware (package
			// worker runs them so).
			if got := (&Handlers{}).newJob(m.Copy(), events.SubjectUserLookup, events.SubjectUserLookup).corrID; got != tt.want {
				t.Errorf("handler without the middleware: correlation id %q, want %q", got, tt.want)
			}
			var seen string
			_, _ = CorrelationID(func(msg *message.Message) ([]*message.Message, error) {
				seen = msg.Metadata.Get(events.HeaderCorrelationID)
				return nil, nil
			})(m)
			if seen != tt.want {
				t.Fatalf("correlation id %q, want %q", seen, tt.want)
			}
		})
	}
}

func TestResultID(t *testing.T) {
	tests := []struct {
		name, payload, header string
		want                  string
	}{
		{"body job_id", `{"job_id":"j1","appid":"wx1","openid":"o1"}`, "h1", "j1"},
		{"body job_id of an invalid job", `{"job_id":"j1","openid":42}`, "h1", "j1"},
		{"not JSON: the header", `oops`, "h1", "h1"},
		{"malformed body job_id: the header", `{"job_id":"a b"}`, "h1", "h1"},
		{"oversized: the header", `{"job_id":"j1","pad":"` + strings.Repeat("x", events.MaxJobSize) + `"}`, "h1", "h1"},
		{"no usable header", `oops`, "not an id", "invalid-7"},
		{"no header", `oops`, "", "invalid-7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ResultID([]byte(tt.payload), tt.header, 7); got != tt.want {
				t.Fatalf("ResultID = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRetryTransient: the first attempt runs outside the backoff, and the
// retries after it behave as the backoff alone would: transient errors
// are tried again until success or RetryMaxElapsed (counted from before
// the first attempt), anything else ends at once.
func TestRetryTransient(t *testing.T) {
	t.Parallel()
	busy := &wechat.APIError{Endpoint: "/cgi-bin/user/info", Code: -1, Msg: "system busy"}
	quota := &wechat.APIError{Endpoint: "/cgi-bin/user/info", Code: wechat.CodeMinuteQuota, Msg: "minute quota"}
	bad := &wechat.APIError{Endpoint: "/cgi-bin/user/info", Code: 40003, Msg: "invalid openid"}
	spent := &codeSpentError{err: busy}
	const budget = 150 * time.Millisecond
	for _, tc := range []struct {
		name      string
		errs      []error // attempt i answers errs[i]; the last repeats
		slowFirst time.Duration
		wantCalls int // 0: more than one, until the budget ends
		wantErr   error
	}{
		{"success at once", []error{nil}, 0, 1, nil},
		{"not transient", []error{bad}, 0, 1, bad},
		{"minute quota", []error{quota}, 0, 1, quota},
		{"code spent", []error{spent}, 0, 1, spent},
		{"busy then success", []error{busy, busy, nil}, 0, 3, nil},
		{"busy then not transient", []error{busy, bad}, 0, 2, bad},
		{"always busy", []error{busy}, 0, 0, busy},
		{"first attempt spends the budget", []error{busy}, budget + 20*time.Millisecond, 1, busy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := &Handlers{cfg: Config{RetryInitial: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond, RetryMaxElapsed: budget}}
			calls := 0
			var at []time.Time
			start := time.Now()
			err := h.retryTransient(context.Background(), func(context.Context) error {
				calls++
				at = append(at, time.Now())
				if calls == 1 && tc.slowFirst > 0 {
					time.Sleep(tc.slowFirst) // an attempt that takes this long
				}
				return tc.errs[min(calls, len(tc.errs))-1]
			})
			elapsed := time.Since(start)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantCalls > 0 && calls != tc.wantCalls {
				t.Fatalf("%d calls, want %d", calls, tc.wantCalls)
			}
			for i := 1; i < len(at); i++ { // every retry waits its backoff (RetryInitial ± 50% at least)
				if gap := at[i].Sub(at[i-1]); gap < h.cfg.RetryInitial/2 {
					t.Fatalf("attempt %d came %v after the one before, want a backoff of at least %v", i+1, gap, h.cfg.RetryInitial/2)
				}
			}
			if tc.wantCalls == 0 {
				if calls < 2 {
					t.Fatalf("%d calls, want retries until the budget ends", calls)
				}
				// The backoff stops before a wait would pass the budget
				// counted from the first attempt's start.
				if elapsed > budget+100*time.Millisecond {
					t.Fatalf("retried for %v, budget %v", elapsed, budget)
				}
			}
		})
	}
}

// TestRetryTransientCancelled: a job whose time runs out between attempts
// reports the context's error and the last attempt's.
func TestRetryTransientCancelled(t *testing.T) {
	t.Parallel()
	busy := &wechat.APIError{Endpoint: "/cgi-bin/user/info", Code: -1, Msg: "system busy"}
	h := &Handlers{cfg: Config{RetryInitial: time.Second, RetryMax: time.Second, RetryMaxElapsed: time.Minute}}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	calls := 0
	err := h.retryTransient(ctx, func(context.Context) error { calls++; return busy })
	if calls != 1 || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, busy) {
		t.Fatalf("%d calls, err = %v; want 1 call, deadline exceeded and the busy answer", calls, err)
	}
}
