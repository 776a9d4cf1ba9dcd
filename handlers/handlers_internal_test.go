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
