package holder

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/metrics"
)

// forceSuffix marks the wx_quota key counting stable_token force_refresh
// calls: "appid.YYYYMMDD.force".
const forceSuffix = ".force"

func (a *app) quotaKey(now time.Time, force bool) string {
	k := events.QuotaKey(a.id, now)
	if force {
		k += forceSuffix
	}
	return k
}

// readQuota returns today's count (China day of now) of fetches, or of
// forced stable_token fetches when force is set.
func (a *app) readQuota(ctx context.Context, now time.Time, force bool) (int64, error) {
	n, _, err := a.getCount(ctx, a.quotaKey(now, force))
	return n, err
}

func (a *app) getCount(ctx context.Context, key string) (int64, uint64, error) {
	e, err := a.h.quota.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return 0, 0, nil
	case err != nil:
		return 0, 0, err
	}
	n, err := strconv.ParseInt(string(e.Value()), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("wx_quota %s: not a number", key)
	}
	return n, e.Revision(), nil
}

// countFetch adds one to today's fetch count before a fetch (and to the
// forced count when force is set), with compare-and-swap so concurrent
// writers never lose an increment. It returns today's fetch count.
func (a *app) countFetch(ctx context.Context, now time.Time, force bool) (int64, error) {
	used, err := a.increment(ctx, a.quotaKey(now, false))
	if err != nil {
		return 0, err
	}
	if force {
		if _, err := a.increment(ctx, a.quotaKey(now, true)); err != nil {
			return 0, err
		}
	}
	return used, nil
}

func (a *app) increment(ctx context.Context, key string) (int64, error) {
	for attempt := 0; attempt < 20; attempt++ {
		n, rev, err := a.getCount(ctx, key)
		if err != nil {
			return 0, err
		}
		val := []byte(strconv.FormatInt(n+1, 10))
		if rev == 0 {
			_, err = a.h.quota.Create(ctx, key, val)
		} else {
			_, err = a.h.quota.Update(ctx, key, val, rev)
		}
		if err == nil {
			return n + 1, nil
		}
		if !isWrongLastSeq(err) {
			return 0, err
		}
	}
	return 0, fmt.Errorf("wx_quota %s: too many concurrent updates", key)
}

func (a *app) setQuotaUsed(n int64) {
	a.mu.Lock()
	a.quotaUsed = n
	a.mu.Unlock()
	metrics.QuotaUsed.WithLabelValues(a.id).Set(float64(n))
}
