package weblogin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A publish error is definite (ErrNotPublished) only when the message
// surely was not stored; a timeout, or anything unknown, is uncertain.
func TestPublishErrorTellsDefiniteFromUncertain(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		sure bool
	}{
		{"deadline (buffered during a reconnect)", context.DeadlineExceeded, false},
		{"nats timeout", nats.ErrTimeout, false},
		{"unreadable ack", jetstream.ErrInvalidJSAck, false},
		{"canceled", context.Canceled, false},
		{"connection closed", nats.ErrConnectionClosed, true},
		{"no stream", jetstream.ErrNoStreamResponse, true},
		{"no responders", fmt.Errorf("x: %w", nats.ErrNoResponders), true},
		{"reconnect buffer full", nats.ErrReconnectBufExceeded, true},
		{"refused by JetStream", fmt.Errorf("nats: %w", &jetstream.APIError{Code: 503, ErrorCode: 10077}), true},
	}
	for _, tt := range tests {
		err := publishError(tt.err)
		if got := errors.Is(err, ErrNotPublished); got != tt.sure {
			t.Errorf("%s: ErrNotPublished %v, want %v (%v)", tt.name, got, tt.sure, err)
		}
		if !tt.sure && (!errors.Is(err, ErrNotAcknowledged) || !errors.Is(err, context.DeadlineExceeded)) {
			t.Errorf("%s: %v, want ErrNotAcknowledged and the deadline", tt.name, err)
		}
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: %v does not wrap the cause", tt.name, err)
		}
		if strings.Contains(err.Error(), "nats: nats: ") {
			t.Errorf("%s: %q says \"nats: \" twice", tt.name, err)
		}
	}
}
