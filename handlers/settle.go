package handlers

import (
	"context"
	"errors"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/metrics"
	"github.com/wxhub/wxhub/wechat"
)

// tokenUnavailableError: no usable token came in time.
type tokenUnavailableError struct{ err error }

func (e *tokenUnavailableError) Error() string { return "no usable access_token: " + e.err.Error() }
func (e *tokenUnavailableError) Unwrap() error { return e.err }

// classify maps a job error to the failure it would end in, and whether a
// later delivery may do better.
func classify(err error) (fe events.FailureError, retry bool) {
	fe.ErrCode = wechat.ErrCode(err)
	fe.ErrMsg = err.Error()
	var tu *tokenUnavailableError
	if errors.As(err, &tu) {
		fe.Kind, fe.Retryable = events.KindTokenUnavailable, true
		return fe, true
	}
	var se *storeError
	var ce *claimedElsewhereError
	if errors.As(err, &se) || errors.As(err, &ce) {
		fe.Kind, fe.Retryable = events.KindInternal, true
		return fe, true
	}
	var api *wechat.APIError
	isAPI := errors.As(err, &api)
	switch wechat.Classify(err) {
	case wechat.ClassNone: // cancelled: the worker is stopping
		fe.Kind, fe.Retryable, fe.ErrMsg = events.KindInternal, true, "worker stopped before the job finished"
		return fe, true
	case wechat.ClassTransient:
		fe.Kind, fe.Retryable = events.KindWeChat, true
		var te *wechat.TransportError
		if !isAPI && (errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &te) && te.Timeout)) {
			fe.Kind = events.KindTimeout
		}
		return fe, true
	case wechat.ClassToken:
		fe.Kind, fe.Retryable = events.KindTokenUnavailable, true
		return fe, true
	case wechat.ClassQuota:
		fe.Kind, fe.Retryable = events.KindQuota, true
	case wechat.ClassConfig:
		fe.Kind = events.KindConfig
	case wechat.ClassBug:
		fe.Kind = events.KindInternal
	default:
		fe.Kind = events.KindWeChat
		if !isAPI {
			fe.Kind = events.KindInternal
		}
	}
	return fe, false
}

// nakDelay is the redelivery delay after the given delivery gave up.
func (h *Handlers) nakDelay(delivered int, err error) time.Duration {
	if wechat.Classify(err) == wechat.ClassNone {
		return 0 // stopping: let another worker take it at once
	}
	if wechat.ErrCode(err) == wechat.CodeMinuteQuota {
		return h.cfg.NakDelayMax // "retry next minute"
	}
	d := h.cfg.NakDelayMin
	for i := 1; i < delivered && d < h.cfg.NakDelayMax; i++ {
		d *= 2
	}
	return min(d, h.cfg.NakDelayMax)
}

// settle ends a delivery whose work failed with err: a retry (nak) while
// deliveries remain and the error may pass, else one terminal failure.
func (h *Handlers) settle(ctx context.Context, j *job, err error) error {
	fe, retry := classify(err)
	if retry && !j.last(h.cfg.MaxDeliver) {
		h.stats.retried.Add(1)
		h.observe(j, metrics.OutcomeRetry)
		delay := h.nakDelay(j.d.Delivered, err)
		h.log.Info("job will be retried", append(j.logAttrs(), "delay", delay, "err", err)...)
		return &RetryError{Delay: delay, Err: err}
	}
	return h.publishFailure(j, h.failure(j, fe))
}
