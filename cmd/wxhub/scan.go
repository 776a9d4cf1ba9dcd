package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// scanAgainWaits are the waits before a fetch of an ordered consumer that
// found no responders is asked again (about 0.2 s in all). An ordered
// consumer is made anew for every fetch; on a cluster it lives on one of
// the stream's servers, often not the one the command is connected to,
// and that one may not have heard of it yet when the fetch comes: nobody
// got the request (measured: 2% of the fetches on three servers), so
// asking again is safe.
var scanAgainWaits = [...]time.Duration{10 * time.Millisecond, 40 * time.Millisecond, 150 * time.Millisecond}

// scanNext returns the next messages (at most n) of the ordered consumer
// cons, none at the end of what is stored. It fails with the error of the
// fetch, no responders once scanAgainWaits are used up.
func scanNext(ctx context.Context, cons jetstream.Consumer, n int) ([]jetstream.Msg, error) {
	for i := 0; ; i++ {
		batch, err := cons.FetchNoWait(n)
		if err != nil {
			return nil, err
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		err = batch.Error()
		switch {
		case err == nil, errors.Is(err, nats.ErrTimeout):
			return msgs, nil
		case len(msgs) > 0 || !errors.Is(err, nats.ErrNoResponders) || i == len(scanAgainWaits):
			return msgs, err
		}
		if err := pause(ctx, scanAgainWaits[i], err); err != nil {
			return nil, err
		}
	}
}

// pause waits d before a command asks again after last, a refusal that
// asking again may end; when ctx ends first it returns ctx's error
// wrapping last too.
func pause(ctx context.Context, d time.Duration, last error) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w (%w)", ctx.Err(), last)
	}
}
