package main

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/gateway/weblogin"
)

// The check accepts the correlation id the web login sets for a state
// (weblogin.CorrelationID) and nothing else.
func TestFromThisSessionMatchesTheWebLoginsCorrelationID(t *testing.T) {
	msg := func(corr string) *nats.Msg {
		m := nats.NewMsg("user.profile")
		if corr != "" {
			m.Header.Set("Wx-Correlation-Id", corr)
		}
		return m
	}
	if !fromThisSession(msg(weblogin.CorrelationID("session-state-1")), "session-state-1") {
		t.Fatal("refused the result of this session's login")
	}
	for _, corr := range []string{"", weblogin.CorrelationID("another-state"), "session-state-1", "weblogin-0123456789abcdef0123456789abcdef"} {
		if fromThisSession(msg(corr), "session-state-1") {
			t.Fatalf("accepted a result with correlation id %q", corr)
		}
	}
}
