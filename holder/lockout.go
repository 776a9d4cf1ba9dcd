package holder

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/metrics"
)

// Lockout states: each names a condition that stops (some) refreshes of an
// app. They are shown per app by `wxhub status`, in AppStatus.Lockouts,
// and as the metric wxhub_token_lockout{appid,state} (1 while it holds).
const (
	// LockoutNotLeading: no holder holds the app's lease, so nobody
	// refreshes its token (all holders down, or all refuse to lead).
	LockoutNotLeading = "not_leading"
	// LockoutConflict: reports came in against a token fetched for an
	// earlier report: another system fetches tokens for this appid. No
	// forced refresh for that token until Until (ConflictWindow after
	// its fetch); scheduled refreshes go on.
	LockoutConflict = "conflict"
	// LockoutQuotaReserve: today's /cgi-bin/token count reached
	// QuotaDailyLimit-QuotaReserve; forced refreshes (reports, manual)
	// stop until the China day turns, scheduled ones go on.
	LockoutQuotaReserve = "quota_reserve"
	// LockoutForceLimit: a stable_token app used WeChat's 20
	// force_refresh calls of the China day; reports fall back to normal
	// calls, scheduled refreshes go on.
	LockoutForceLimit = "force_limit"
	// LockoutForceExhausted: WeChat answered 45009 to a force_refresh
	// call (the 20 a day were used, perhaps elsewhere); as force_limit,
	// until the China day turns.
	LockoutForceExhausted = "force_exhausted"
	// LockoutQuotaExhausted: WeChat answered 45009 to a normal fetch:
	// no fetch at all until the China day turns.
	LockoutQuotaExhausted = "quota_exhausted"
	// LockoutBackoff: the last fetch failed; the next attempt waits
	// until Until.
	LockoutBackoff = "backoff"
	// LockoutClockSkew: this holder's clock is off the NATS server's by
	// more than MaxClockSkew; it refuses to lead.
	LockoutClockSkew = "clock_skew"
)

var lockoutStates = []string{LockoutNotLeading, LockoutConflict, LockoutQuotaReserve, LockoutForceLimit,
	LockoutForceExhausted, LockoutQuotaExhausted, LockoutBackoff, LockoutClockSkew}

// Lockout is one condition that stops refreshes of an app.
type Lockout struct {
	State  string    `json:"state"`
	Until  time.Time `json:"until,omitzero"`
	Detail string    `json:"detail"`
}

// String is one line: "conflict until 2026-01-02T15:04:05Z: detail".
func (l Lockout) String() string {
	var b strings.Builder
	b.WriteString(l.State)
	if !l.Until.IsZero() {
		b.WriteString(" until ")
		b.WriteString(l.Until.UTC().Format(time.RFC3339))
	}
	if l.Detail != "" {
		b.WriteString(": ")
		b.WriteString(l.Detail)
	}
	return b.String()
}

// RefusedError says why a refresh was not made (Holder.Refresh): the
// lockout, or the rate limit, in force. errors.Is matches the sentinel
// (ErrRateLimited, ErrQuotaReserve, ErrBackingOff, ErrNotLeader).
type RefusedError struct {
	Lockout
	err error
}

func (e *RefusedError) Error() string { return "refresh refused: " + e.Lockout.String() }
func (e *RefusedError) Unwrap() error { return e.err }

func refused(sentinel error, state string, until time.Time, detail string) error {
	return &RefusedError{Lockout{State: state, Until: until, Detail: detail}, sentinel}
}

// computeLockouts lists what stops refreshes now. Token loop only.
func (a *app) computeLockouts(now time.Time) []Lockout {
	var out []Lockout
	rec, _ := a.record()
	cfg := &a.h.cfg
	if a.conflictVer != 0 && a.conflictVer == rec.Version && now.Before(rec.FetchedAt.Add(cfg.ConflictWindow)) {
		out = append(out, Lockout{LockoutConflict, rec.FetchedAt.Add(cfg.ConflictWindow),
			fmt.Sprintf("another system fetches access_tokens for this appid; reports against version %d are not acted on, scheduled refreshes go on", rec.Version)})
	}
	if now.Before(a.blockedUntil) {
		out = append(out, Lockout{LockoutQuotaExhausted, a.blockedUntil, "WeChat answered 45009 (daily quota): no fetch until the China day turns"})
	}
	midnight := events.NextChinaMidnight(now)
	if a.stable() {
		if now.Before(a.forceBlockedUntil) {
			out = append(out, Lockout{LockoutForceExhausted, a.forceBlockedUntil,
				"WeChat answered 45009 to force_refresh: reports fall back to normal stable_token calls, scheduled refreshes go on"})
		} else if forced := a.forceUsed.on(now); forced >= StableForceDailyLimit {
			out = append(out, Lockout{LockoutForceLimit, midnight,
				fmt.Sprintf("%d of %d force_refresh calls used today: reports fall back to normal stable_token calls, scheduled refreshes go on", forced, StableForceDailyLimit)})
		}
	} else if used, limit := a.usedOn(now), int64(cfg.QuotaDailyLimit-cfg.QuotaReserve); used >= limit {
		out = append(out, Lockout{LockoutQuotaReserve, midnight,
			fmt.Sprintf("%d of %d fetches used today (reserve %d): forced refreshes stop, scheduled ones go on", used, cfg.QuotaDailyLimit, cfg.QuotaReserve)})
	}
	if wait := time.Until(a.retryAt); wait > 0 {
		a.mu.Lock()
		detail := a.lastErr
		a.mu.Unlock()
		if detail == "" {
			detail = "the last fetch failed"
		}
		out = append(out, Lockout{LockoutBackoff, now.Add(wait), detail})
	}
	return out
}

// setLockouts stores the token loop's view for Status and the metric.
func (a *app) setLockouts(l []Lockout) {
	a.mu.Lock()
	a.lockouts = l
	a.mu.Unlock()
	a.lockoutMetric()
}

// lockoutsNow returns the stored lockouts plus those Status knows live.
// Call with a.mu held.
func (a *app) lockoutsNow() []Lockout {
	out := append([]Lockout(nil), a.lockouts...)
	if !a.leader {
		out = nil // the token loop's view is of its last term
	}
	if a.leaderID == "" {
		out = append(out, Lockout{State: LockoutNotLeading, Detail: "no holder holds the lease for this appid: nobody refreshes its token"})
	}
	if s := a.h.skew.lockout(); s != nil {
		out = append(out, *s)
	}
	return out
}

func (a *app) lockoutMetric() {
	a.mu.Lock()
	l := a.lockoutsNow()
	a.mu.Unlock()
	on := map[string]bool{}
	for _, x := range l {
		on[x.State] = true
	}
	for _, s := range lockoutStates {
		v := 0.0
		if on[s] {
			v = 1
		}
		metrics.TokenLockout.WithLabelValues(a.id, s).Set(v)
	}
}

// markForceExhausted raises today's force_refresh count to WeChat's limit
// after a 45009 on a forced call, so that a successor knows (best effort).
func (a *app) markForceExhausted(ctx context.Context, now time.Time) {
	_, err := a.updateQuota(ctx, a.quotaKey(now, true), func(r *events.QuotaRecord) bool {
		if r.Used >= StableForceDailyLimit {
			return false
		}
		r.Used = StableForceDailyLimit
		return true
	})
	if err != nil {
		a.log.Warn("recording the exhausted force_refresh limit in wx_quota failed", "error", err)
	}
	a.forceUsed.set(now, StableForceDailyLimit)
}
