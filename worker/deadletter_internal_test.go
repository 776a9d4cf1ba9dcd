package worker

import (
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/events"
)

func TestFitDeadLetterCutsOnlyWhatDoesNotFit(t *testing.T) {
	newMsg := func(n int) *nats.Msg {
		m := nats.NewMsg("wxhub.deadletter.user.lookup")
		m.Header.Set(events.HeaderMsgID, "j1")
		m.Header.Set(events.HeaderDeadLetterReason, "invalid_job: too long")
		m.Data = []byte(strings.Repeat("x", n))
		return m
	}
	const max = 1000
	fits := newMsg(0)
	fits.Data = []byte(strings.Repeat("x", max-int(wireSize(fits))))
	for _, tc := range []struct {
		name      string
		m         *nats.Msg
		max       int64
		truncated bool
	}{
		{"small", newMsg(10), max, false},
		{"exactly max", fits, max, false},
		{"one byte over", newMsg(len(fits.Data) + 1), max, true},
		{"far over", newMsg(50 * max), max, true},
		{"no limit known", newMsg(50 * max), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := append([]byte(nil), tc.m.Data...)
			fitDeadLetter(tc.m, tc.max)
			got := tc.m.Header.Get(HeaderDeadLetterTruncated)
			if !tc.truncated {
				if got != "" || string(tc.m.Data) != string(orig) {
					t.Fatalf("changed a dead letter that fits: header %q, %d of %d bytes", got, len(tc.m.Data), len(orig))
				}
				return
			}
			if got != strconv.Itoa(len(orig)) {
				t.Fatalf("%s = %q, want the original size %d", HeaderDeadLetterTruncated, got, len(orig))
			}
			if s := wireSize(tc.m); s != tc.max {
				t.Fatalf("truncated to %d bytes on the wire, want exactly max_payload %d", s, tc.max)
			}
			if !strings.HasPrefix(string(orig), string(tc.m.Data)) {
				t.Fatal("the kept body is not the job's first bytes")
			}
		})
	}
}
