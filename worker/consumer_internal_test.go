package worker

import (
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Every router handler closes the shared subscriber as the router closes,
// at the same time: only the first Close does the work, none panics.
func TestJobSubscriberCloseConcurrently(t *testing.T) {
	for range 2000 {
		s := &jobSubscriber{w: &Worker{}, stopCh: make(chan struct{}), closing: make(chan struct{})}
		out := make(chan *message.Message)
		s.outs = append(s.outs, out)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { _ = s.Close() })
		}
		wg.Wait()
		if _, open := <-out; open {
			t.Fatal("router channel still open after Close")
		}
	}
}
