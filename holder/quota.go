package holder

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/cas"
	"github.com/wxhub/wxhub/internal/metrics"
)

func (a *app) quotaKey(now time.Time, force bool) string {
	if force {
		return events.ForceQuotaKey(a.id, now)
	}
	return events.QuotaKey(a.id, now)
}

// readQuota returns today's count (China day of now) of fetches, or of
// forced stable_token fetches when force is set.
func (a *app) readQuota(ctx context.Context, now time.Time, force bool) (int64, error) {
	r, _, err := a.getQuota(ctx, a.quotaKey(now, force))
	return r.Used, err
}

// getQuota reads one wx_quota record and its revision (0: no record).
func (a *app) getQuota(ctx context.Context, key string) (events.QuotaRecord, uint64, error) {
	e, err := a.h.quota.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return events.QuotaRecord{}, 0, nil
	case err != nil:
		return events.QuotaRecord{}, 0, err
	}
	r, err := events.ParseQuotaRecord(e.Value())
	if err != nil {
		return events.QuotaRecord{}, 0, fmt.Errorf("wx_quota %s: %w", key, err)
	}
	return r, e.Revision(), nil
}

// updateQuota applies change to the record under key with
// compare-and-swap, so concurrent writers never lose an update. change
// reports whether it changed anything; nothing is written when it did not.
// Each change must be idempotent (decided by the record, such as a fetch
// id being in Recent): a write that failed may have landed, and the retry
// then finds it done.
func (a *app) updateQuota(ctx context.Context, key string, change func(*events.QuotaRecord) bool) (events.QuotaRecord, error) {
	for attempt := 0; attempt < 20; attempt++ {
		r, rev, err := a.getQuota(ctx, key)
		if err != nil {
			return r, err
		}
		if !change(&r) {
			return r, nil
		}
		val, err := json.Marshal(r)
		if err != nil {
			return r, fmt.Errorf("wx_quota %s: encode: %w", key, err)
		}
		if rev == 0 {
			_, err = a.h.quota.Create(ctx, key, val)
		} else {
			_, err = a.h.quota.Update(ctx, key, val, rev)
		}
		if err == nil {
			return r, nil
		}
		if !cas.Lost(err) {
			return r, err
		}
	}
	return events.QuotaRecord{}, fmt.Errorf("wx_quota %s: too many concurrent updates", key)
}

// newFetchID names one fetch in the wx_quota records it is counted in.
func newFetchID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// addFetch counts the fetch id once: a record that has it already counted
// it (an earlier attempt landed).
func addFetch(id string) func(*events.QuotaRecord) bool {
	return func(r *events.QuotaRecord) bool {
		if r.Counted(id) {
			return false
		}
		r.Used++
		r.Recent = append(r.Recent, id)
		if n := len(r.Recent) - events.QuotaRecentFetches; n > 0 {
			r.Recent = append([]string(nil), r.Recent[n:]...)
		}
		return true
	}
}

// removeFetch takes back the count of the fetch id, if it is there.
func removeFetch(id string) func(*events.QuotaRecord) bool {
	return func(r *events.QuotaRecord) bool {
		for i, x := range r.Recent {
			if x == id {
				r.Recent = append(r.Recent[:i:i], r.Recent[i+1:]...)
				r.Used = max(r.Used-1, 0)
				return true
			}
		}
		return false
	}
}

// fetchCount is what countFetch counted: today's fetches and, for a
// forced stable_token call, today's forced ones.
type fetchCount struct {
	used, forced int64
}

// countFetch counts the fetch id in today's record before the call (and
// in the forced count when force is set). Each record counts the id once,
// however often countFetch is retried: a retry after a write that landed
// but whose answer was lost, or after the forced count failed, adds
// nothing to what is counted already.
func (a *app) countFetch(ctx context.Context, now time.Time, force bool, id string) (fetchCount, error) {
	var c fetchCount
	r, err := a.updateQuota(ctx, a.quotaKey(now, false), addFetch(id))
	if err != nil {
		return c, err
	}
	c.used = r.Used
	if force {
		r, err := a.updateQuota(ctx, a.quotaKey(now, true), addFetch(id))
		if err != nil {
			return c, err
		}
		c.forced = r.Used
	}
	return c, nil
}

// uncountTimeout bounds uncountFetch: it may run after the term ended,
// and a holder that stops waits for it.
const uncountTimeout = 2 * time.Second

// uncountFetch takes back the count of a fetch whose WeChat call was not
// made after all (the lease got too short, or the term ended while
// counting). Best effort: should NATS fail it too, the day stays counted
// one too high, never too low.
func (a *app) uncountFetch(ctx context.Context, now time.Time, force bool, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), uncountTimeout)
	defer cancel()
	keys := []string{a.quotaKey(now, false)}
	if force {
		keys = append(keys, a.quotaKey(now, true))
	}
	for _, key := range keys {
		r, err := a.updateQuota(ctx, key, removeFetch(id))
		if err != nil {
			a.log.Warn("taking back the count of a fetch that was not made failed; wx_quota counts one fetch too many today",
				"key", key, "error", err)
			continue
		}
		if key == keys[0] {
			a.setQuotaUsed(now, r.Used)
		}
	}
}

// The quota view: today's counts as the leader last saw them, for Status,
// the lockouts and the gauge wxhub_token_quota_used. Each count is of a
// China day and reads as 0 on any other: the view never shows yesterday's
// count (or a lockout it caused) after the China midnight. The leader
// reads the new day's counts as the day turns (followDay); a holder that
// stops leading an app stops exporting the gauge (dropQuotaView), so only
// the leader's count is scraped.

// dayCount is a count of one China day (day; "" when not known). It
// reads as 0 on any other day.
type dayCount struct {
	day string
	n   int64
}

// set records n as the count of now's China day.
func (c *dayCount) set(now time.Time, n int64) { c.day, c.n = events.ChinaDay(now), n }

// on returns the count of now's China day.
func (c dayCount) on(now time.Time) int64 {
	if c.day != events.ChinaDay(now) {
		return 0
	}
	return c.n
}

// setQuotaUsed records n as the fetch count of now's China day.
func (a *app) setQuotaUsed(now time.Time, n int64) {
	a.mu.Lock()
	a.quotaUsed.set(now, n)
	a.mu.Unlock()
	metrics.QuotaUsed.WithLabelValues(a.id).Set(float64(n))
}

// usedOn returns the fetch count of now's China day as last seen.
func (a *app) usedOn(now time.Time) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.quotaUsed.on(now)
}

// loadQuota reads now's China day counts from wx_quota into the view,
// and the day's 45009 if a holder recorded one. Token loop only.
func (a *app) loadQuota(ctx context.Context, now time.Time) error {
	r, _, err := a.getQuota(ctx, a.quotaKey(now, false))
	if err != nil {
		return err
	}
	a.setQuotaUsed(now, r.Used)
	if !r.ExhaustedAt.IsZero() {
		a.blockExhausted(now, r)
	}
	if a.stable() {
		forced, err := a.readQuota(ctx, now, true)
		if err != nil {
			return err
		}
		a.forceUsed.set(now, forced)
	}
	return nil
}

// followDay reads the day's counts when the China day of now is not the
// view's: at the start of a term, when the day turned, or after a failed
// read. Until a read succeeds the view and the gauge show 0 for the day.
// Token loop only.
func (a *app) followDay(ctx context.Context, now time.Time) {
	day := events.ChinaDay(now)
	a.mu.Lock()
	current := a.quotaUsed.day == day
	a.mu.Unlock()
	if current && (!a.stable() || a.forceUsed.day == day) {
		return
	}
	if err := a.loadQuota(ctx, now); err != nil {
		metrics.QuotaUsed.WithLabelValues(a.id).Set(0)
		a.log.Debug("reading the China day's counts from wx_quota failed; retrying", "day", day, "error", err)
	}
}

// markExhausted records in today's wx_quota record that WeChat answered
// 45009 to a normal fetch, so that a successor (or this holder after a
// restart) does not call again before the China day turns. Best effort.
func (a *app) markExhausted(ctx context.Context, now time.Time) {
	_, err := a.updateQuota(ctx, a.quotaKey(now, false), func(r *events.QuotaRecord) bool {
		if !r.ExhaustedAt.IsZero() {
			return false
		}
		r.ExhaustedAt, r.ExhaustedBy = now, a.h.cfg.ID
		return true
	})
	if err != nil {
		a.log.Warn("recording the exhausted daily quota (45009) in wx_quota failed; a successor will try one fetch today", "error", err)
	}
}

// blockExhausted blocks every fetch until the China day turns: a holder
// recorded a 45009 for today (r). Token loop only.
func (a *app) blockExhausted(now time.Time, r events.QuotaRecord) {
	until := events.NextChinaMidnight(now)
	if !a.blockedUntil.Before(until) {
		return
	}
	a.blockedUntil = until
	msg := fmt.Sprintf("WeChat answered 45009 (daily quota) to holder %s at %s: no fetch until the China day turns (%s)",
		r.ExhaustedBy, r.ExhaustedAt.Format(time.RFC3339), until.Format(time.RFC3339))
	a.mu.Lock()
	a.nextTry, a.lastErr = until, msg
	a.mu.Unlock()
	a.log.Warn("daily token quota exhausted today (45009, recorded in wx_quota): no fetch until the China day turns",
		"exhausted_by", r.ExhaustedBy, "exhausted_at", r.ExhaustedAt, "next_attempt_at", until)
}

// dropQuotaView ends the term's view: the gauge is the leader's alone,
// and the next term reads the counts afresh.
func (a *app) dropQuotaView() {
	a.mu.Lock()
	a.quotaUsed.day = ""
	a.mu.Unlock()
	a.forceUsed.day = ""
	metrics.QuotaUsed.DeleteLabelValues(a.id)
}
