package broker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/brokertest"
)

// nats.go's publish wraps JetStream's refusal as "nats: %w" around an
// APIError that says "nats: API error: ..." itself: TrimDoubledNATSPrefix
// says "nats: " once and still unwraps to the APIError.
func TestTrimDoubledNATSPrefix(t *testing.T) {
	env := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := env.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "SMALL", Subjects: []string{"small.>"}, MaxMsgSize: 8}); err != nil {
		t.Fatal(err)
	}
	_, refused := env.JS.Publish(ctx, "small.x", []byte("more than eight bytes"))
	if refused == nil || !strings.HasPrefix(refused.Error(), "nats: nats: API error: ") {
		t.Fatalf("nats.go's publish error is %v: it no longer doubles its prefix, TrimDoubledNATSPrefix may go", refused)
	}
	tests := []struct {
		name, want string
		err        error
	}{
		{"publish refused", "nats: API error: code=400 err_code=10054 description=message size exceeds maximum allowed", refused},
		{"said once already", "nats: timeout", nats.ErrTimeout},
		{"no error", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := broker.TrimDoubledNATSPrefix(tt.err)
			if tt.err == nil {
				if got != nil {
					t.Fatalf("got %v, want nil", got)
				}
				return
			}
			if got.Error() != tt.want {
				t.Errorf("message %q, want %q", got.Error(), tt.want)
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("errors.Is(got, the original) is false")
			}
			var api *jetstream.APIError
			if errors.As(tt.err, &api) && (!errors.As(got, &api) || api.ErrorCode != jetstream.JSErrCodeStreamMessageExceedsMaximum) {
				t.Errorf("errors.As(*jetstream.APIError) lost: %v", api)
			}
		})
	}
}
