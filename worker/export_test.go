package worker

import (
	"context"

	"github.com/wxhub/wxhub/events"
)

// KillJobConn closes the worker's connection (jobs, results, KV) without
// draining, as if the process died: nothing in flight is acked or nak'd.
func (w *Worker) KillJobConn() {
	w.cfg.Conn.Close()
}

// Sweeps returns how many max-deliveries sweeps this worker completed.
func (w *Worker) Sweeps() int64 { return w.reaper.sweeps.Load() }

// WaitVersion waits until c holds a token of at least version v for
// appid, without asking the feed to read (as WaitNewer does): what
// arrives came by an event or a poll.
func WaitVersion(ctx context.Context, c *TokenCache, appid string, v uint64) (events.TokenRecord, error) {
	for {
		c.mu.Lock()
		rec, ok := c.recs[appid]
		ch := c.changed
		c.mu.Unlock()
		if ok && rec.Version >= v {
			return rec, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return rec, ctx.Err()
		}
	}
}

// Held returns the deliveries this worker holds and has not settled:
// those being worked on and those waiting for a slot.
func (w *Worker) Held() int { return w.inflight.load() }
