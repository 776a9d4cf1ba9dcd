package holder

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/wxhub/wxhub/wechat"
)

// errTermEnded: the term ended (lease lapsed, lost or given up) before a
// NATS operation could be completed.
var errTermEnded = errors.New("holder: the term ended before NATS answered")

// stopRetry wraps an error that ends retryNATS at once (a lost
// compare-and-swap, for instance): retrying cannot help.
type stopRetry struct{ err error }

func (s stopRetry) Error() string { return s.err.Error() }
func (s stopRetry) Unwrap() error { return s.err }

// retryNATS runs op until it succeeds, returns a stopRetry error, or the
// term ends. Every other error is a NATS or JetStream fault (10008
// "temporarily unavailable", no responders during a stream leader
// election, a timeout): transient, never a configuration problem, so op is
// retried with exponential backoff (RetryInitial up to min(RetryMax,
// LeaseTTL/3), real time) for as long as the term lasts. Each attempt gets
// a context bounded by what is left of the lease, so no attempt outlives
// the term. On the term's end it returns errTermEnded wrapping the last
// error.
func (a *app) retryNATS(ctx context.Context, what string, op func(ctx context.Context) error) error {
	cfg := &a.h.cfg
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(cfg.RetryInitial),
		backoff.WithMaxInterval(min(cfg.RetryMax, cfg.LeaseTTL/3)),
		backoff.WithMaxElapsedTime(0),
	)
	var last error
	for attempt := 1; ; attempt++ {
		left := a.leaseLeft()
		if ctx.Err() != nil || left <= 0 {
			if last == nil {
				last = ctx.Err()
			}
			if last == nil {
				last = ErrNotLeader
			}
			return fmt.Errorf("%w: %s: %w", errTermEnded, what, last)
		}
		actx, cancel := context.WithTimeout(ctx, min(left, cfg.LeaseTTL/3))
		err := op(actx)
		cancel()
		if err == nil {
			if attempt > 1 {
				a.log.Info(what+" succeeded after NATS errors", "attempts", attempt)
			}
			return nil
		}
		var stop stopRetry
		if errors.As(err, &stop) {
			return stop.err
		}
		last = err
		wait := bo.NextBackOff()
		a.log.Warn(what+" failed (NATS); retrying", "attempt", attempt, "retry_in", wait, "error", err)
		if !sleepCtx(ctx, wait) {
			continue // reports the end of the term above
		}
	}
}

// fromWeChat reports whether err came from a WeChat call (an answer or a
// transport failure), as opposed to NATS.
func fromWeChat(err error) bool {
	var api *wechat.APIError
	var te *wechat.TransportError
	return errors.As(err, &api) || errors.As(err, &te)
}

// leaseLeft is how long our lease is still trusted by our own clock; 0
// when we do not lead.
func (a *app) leaseLeft() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.leader {
		return 0
	}
	return max(time.Until(a.validUntil), 0)
}
