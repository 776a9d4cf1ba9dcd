package worker

import (
	"reflect"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers"
)

func TestNATSHeaderSendsExactlyTheSetFields(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   handlers.Header
		want nats.Header
	}{
		{"none", handlers.Header{}, nats.Header{}},
		{"result", handlers.Header{MsgID: "j1", CorrelationID: "c1"},
			nats.Header{events.HeaderMsgID: {"j1"}, events.HeaderCorrelationID: {"c1"}}},
		{"no correlation id", handlers.Header{MsgID: "j1"}, nats.Header{events.HeaderMsgID: {"j1"}}},
		{"dead letter", handlers.Header{MsgID: "j1", DeadLetterReason: "schema: bad"},
			nats.Header{events.HeaderMsgID: {"j1"}, events.HeaderDeadLetterReason: {"schema: bad"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := natsHeader(tc.in)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("natsHeader(%+v) = %v, want %v", tc.in, got, tc.want)
			}
			// The values share one array: adding a value to one header
			// must not overwrite another's.
			for k := range got {
				got.Add(k, "extra")
			}
			for k, v := range tc.want {
				if got[k][0] != v[0] {
					t.Fatalf("after Add, %s = %v, want first value %q", k, got[k], v[0])
				}
			}
		})
	}
}
