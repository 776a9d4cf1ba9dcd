package worker_test

import (
	"testing"
	"time"
)

func TestStopIdle(t *testing.T) {
	h := newHarness(t, 1)
	w := h.startWorker("idle", nil)
	start := time.Now()
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("idle stop took %s", d)
	}
}
