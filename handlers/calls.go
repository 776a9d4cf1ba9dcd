package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/wechat"
)

// retryTransient runs op until it succeeds, fails with a non-transient
// error, or the backoff gives up (RetryMaxElapsed or ctx). 45011 (minute
// quota) is not retried here: the next minute is a redelivery's business.
//
// The first attempt runs before any backoff is set up (most jobs need no
// second); the backoff then starts from that attempt's outcome with the
// budget RetryMaxElapsed counted from before it, so the retries are timed
// exactly as if the backoff had run it.
func (h *Handlers) retryTransient(ctx context.Context, op func(context.Context) error) error {
	start := time.Now()
	last := op(ctx)
	if !retryable(last) {
		return retryOutcome(ctx, last, last)
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = h.cfg.RetryInitial
	b.MaxInterval = h.cfg.RetryMax
	// The backoff's clock starts now: give it what is left of the budget
	// (at least 1ns, which stops it at once: 0 would mean "never").
	b.MaxElapsedTime = max(h.cfg.RetryMaxElapsed-time.Since(start), time.Nanosecond)
	first := true
	err := backoff.Retry(func() error {
		err := last
		if first {
			first = false // the attempt above: its outcome, not a second call
		} else {
			err = op(ctx)
			last = err
		}
		if !retryable(err) {
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(b, ctx))
	return retryOutcome(ctx, err, last)
}

// retryOutcome is retryTransient's error: err, with the last attempt's
// error when the job's time ran out between attempts.
func retryOutcome(ctx context.Context, err, last error) error {
	if err != nil && last != nil && ctx.Err() != nil && !errors.Is(last, ctx.Err()) {
		return fmt.Errorf("%w (last attempt: %w)", err, last)
	}
	return err
}

// retryable: err is one retryTransient tries again.
func retryable(err error) bool {
	if err == nil { // the common case, without the heap allocation of errors.As's target
		return false
	}
	var spent *codeSpentError
	return wechat.IsTransient(err) && wechat.ErrCode(err) != wechat.CodeMinuteQuota && !errors.As(err, &spent)
}

// TokenExpiryMargin is how long past its expires_at a global token is
// still used. expires_at is by the holder's clock (a holder more than 30 s
// off the NATS server's refuses to lead), compared with the worker's own:
// the margin keeps a worker whose clock runs a little ahead from refusing
// a token WeChat still takes. The holder refreshes 10 min before
// expires_at, so only a holder that stopped refreshing leaves a token to
// expire.
const TokenExpiryMargin = time.Minute

// ErrNoFreshToken: the newest token known for an app is past its
// expires_at (TokenExpired), so no holder is refreshing it; a job gets it
// (in a token_unavailable failure) when no newer one came within
// TokenWait, package worker's ReadyError while it lasts.
var ErrNoFreshToken = errors.New("no fresh token: holder not refreshing?")

// TokenExpired reports whether rec is more than TokenExpiryMargin past its
// expires_at at now. A record without expires_at never is: WeChat judges
// it.
func TokenExpired(rec events.TokenRecord, now time.Time) bool {
	return !rec.ExpiresAt.IsZero() && now.Sub(rec.ExpiresAt) > TokenExpiryMargin
}

// withToken calls fn with the app's current token. A token past its
// expires_at (TokenExpired) is never used: it waits for a newer one (at
// most TokenWait). When WeChat rejects the token (40001, 40014, 42001) it
// reports the version (unless a newer one is held already), waits for a
// newer one (at most TokenWait; none when it is held) and calls fn again,
// at most MaxRotations times.
func (h *Handlers) withToken(ctx context.Context, appid string, fn func(ctx context.Context, token string) error) error {
	rec, ok := h.cfg.Tokens.Current(appid)
	if !ok || h.expired(rec) {
		if ok {
			h.log.Debug("access_token expired: waiting for a newer one", "appid", appid, "version", rec.Version,
				"expires_at", rec.ExpiresAt, "token_fp", wechat.Fingerprint(rec.AccessToken))
		}
		var err error
		if rec, err = h.waitToken(ctx, appid, rec.Version); err != nil {
			return err
		}
	}
	for rotation := 0; ; rotation++ {
		err := fn(ctx, rec.AccessToken)
		if !wechat.IsTokenInvalid(err) {
			return err
		}
		h.rejected(ctx, appid, rec, wechat.ErrCode(err))
		if rotation+1 >= h.cfg.MaxRotations {
			return &tokenUnavailableError{err: fmt.Errorf("%d tokens rejected in one delivery: %w", rotation+1, err)}
		}
		if rec, err = h.waitToken(ctx, appid, rec.Version); err != nil {
			return err
		}
	}
}

// rejected logs that WeChat rejected rec and reports it on
// token.invalidated, unless a newer version is held already: the holder
// replaced it while the call was in flight, and the report would be
// stale (the holder drops it, but it is an event, a log line and a count
// for nothing).
func (h *Handlers) rejected(ctx context.Context, appid string, rec events.TokenRecord, code int) {
	attrs := []any{"appid", appid, "version", rec.Version, "errcode", code, "token_fp", wechat.Fingerprint(rec.AccessToken)}
	if cur, ok := h.cfg.Tokens.Current(appid); ok && cur.Version > rec.Version {
		h.log.Info("access_token rejected; a newer one is held already: not reported", append(attrs, "held_version", cur.Version)...)
		return
	}
	h.log.Info("access_token rejected", attrs...)
	if err := h.cfg.Invalidator.Invalidate(ctx, appid, rec.Version, code); err != nil {
		h.log.Warn("cannot report the rejected token", "appid", appid, "version", rec.Version, "err", err)
	}
}

// expired: rec is past its expires_at by the handlers' clock.
func (h *Handlers) expired(rec events.TokenRecord) bool { return TokenExpired(rec, h.cfg.Now()) }

// waitToken waits at most TokenWait for an unexpired token newer than
// version (0: any unexpired token).
func (h *Handlers) waitToken(ctx context.Context, appid string, version uint64) (events.TokenRecord, error) {
	wctx, cancel := context.WithTimeout(ctx, h.cfg.TokenWait)
	defer cancel()
	for after := version; ; {
		rec, err := h.cfg.Tokens.WaitNewer(wctx, appid, after)
		if err != nil {
			return rec, h.noToken(ctx, appid, version)
		}
		if !h.expired(rec) {
			return rec, nil
		}
		after = rec.Version // expired as well: wait for one newer still
	}
}

// noToken is waitToken's error when the wait ran out.
func (h *Handlers) noToken(ctx context.Context, appid string, version uint64) error {
	if ctx.Err() != nil {
		return ctx.Err() // the job's own deadline or the worker stopping
	}
	if rec, ok := h.cfg.Tokens.Current(appid); ok && h.expired(rec) {
		return &tokenUnavailableError{err: fmt.Errorf("%w (version %d of %s expired at %s; none newer after %s)",
			ErrNoFreshToken, rec.Version, appid, rec.ExpiresAt.UTC().Format(time.RFC3339), h.cfg.TokenWait)}
	}
	if version == 0 {
		return &tokenUnavailableError{err: fmt.Errorf("no token for %s after %s", appid, h.cfg.TokenWait)}
	}
	return &tokenUnavailableError{err: fmt.Errorf("no token newer than version %d for %s after %s", version, appid, h.cfg.TokenWait)}
}
