package holder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/cas"
	"github.com/wxhub/wxhub/internal/metrics"
	"github.com/wxhub/wxhub/wechat"
)

// Decisions on token.invalidated reports (label of metrics.TokenInvalidations).
const (
	decisionAccepted     = "accepted"
	decisionStale        = "stale"
	decisionDuplicate    = "duplicate"
	decisionRateLimited  = "rate_limited"
	decisionQuotaReserve = "quota_reserve"
	decisionConflict     = "conflict"
	// decisionStandby: the report reached a holder that does not lead.
	decisionStandby = "standby"
	// decisionFallback: a stable_token app out of force_refresh calls
	// answers the report with a normal call.
	decisionFallback = "fallback"
)

// allDecisions lists every decision label.
var allDecisions = []string{decisionAccepted, decisionStale, decisionDuplicate, decisionRateLimited,
	decisionQuotaReserve, decisionConflict, decisionStandby, decisionFallback}

// errUnchanged: stable_token answered with the token we already have.
var errUnchanged = errors.New("holder: stable_token returned the current token unchanged")

// tokenLoop runs one leader term after another until ctx (the holder's
// stop) is done; between terms it answers manual refresh requests with
// ErrNotLeader.
func (a *app) tokenLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-a.manual:
			// The term may have begun before its notice was read.
			if term := a.currentTerm(); term != nil && term.Err() == nil {
				select {
				case <-a.termCh:
				default:
				}
				a.lead(term, &req)
			} else {
				req.reply <- ErrNotLeader
			}
		case <-a.termCh:
			if term := a.currentTerm(); term != nil && term.Err() == nil && !a.h.stopping() {
				a.lead(term, nil)
			}
		}
	}
}

// lead is the leader's loop for one term: adopt or fetch the token, then
// refresh it on schedule and on accepted reports, until the term ends or
// the holder stops. ctx is the term's: a stop does not cut the refresh
// under way (its WeChat call and the write of its token); the loop ends
// after it.
func (a *app) lead(ctx context.Context, req *manualReq) {
	a.mu.Lock()
	a.termReason = events.ReasonStartup
	if a.sawOther {
		a.termReason = events.ReasonTakeover
	}
	a.mu.Unlock()
	// A term starts from what KV holds, not from the watch's cache (empty
	// when the watch failed too): no evaluation before that read succeeded.
	// A fetch over a stored token we did not see would retire it.
	start, cancel := a.h.untilStop(ctx)
	ok := a.loadTermStart(start)
	cancel()
	if !ok {
		if req != nil {
			req.reply <- a.notLeading()
		}
		return
	}
	defer a.dropQuotaView() // the gauge is the leader's alone
	a.followDay(ctx, a.h.cfg.Now())
	// What the previous leader knew survives in the record: whether this
	// token was fetched for a report (conflict detection), when the last
	// forced refresh was (its rate limit) and whether it was a manual one
	// (the manual rate limit), whether a conflict was announced for it,
	// and whether a report against it was accepted and its refresh is
	// still to be made.
	if rec, _ := a.record(); rec.Version > 0 {
		if rec.Reason == events.ReasonInvalidated && rec.Version > a.forcedVer {
			a.forcedVer = rec.Version
		}
		if rec.LastForcedAt.After(a.lastForcedAt) {
			a.lastForcedAt = rec.LastForcedAt
		}
		if rec.Reason == events.ReasonManual && rec.FetchedAt.After(a.lastManualAt) {
			a.lastManualAt = rec.FetchedAt
		}
		if !rec.ConflictAt.IsZero() && (a.conflictVer != rec.Version || rec.ConflictAt.After(a.conflictAt)) {
			a.conflictVer, a.conflictAt = rec.Version, rec.ConflictAt
		}
		a.takePending(ctx, rec)
	}
	a.recordCarried(ctx)
	defer a.setLockouts(nil)
	// A forced need accepted in an earlier term survives (evaluate drops it
	// once the version moved on; takePending judged its normal flag by
	// today's force_refresh budget, evaluate judges it again when the
	// China day turns); the backoff gates survive too.
	if rec, _ := a.record(); rec.Fresh(a.h.cfg.Now(), 0) && a.h.cfg.Now().Before(a.refreshAt(rec)) {
		a.termReason = "" // the term's fetches are scheduled ones now
		a.log.Info("adopted stored token", "version", rec.Version, "expires_at", rec.ExpiresAt,
			"fingerprint", wechat.Fingerprint(rec.AccessToken))
	}
	tick := time.NewTicker(a.h.cfg.CheckInterval)
	defer tick.Stop()
	if req != nil {
		req.reply <- a.manualRefresh(ctx, *req)
	}
	for !a.h.stopping() {
		a.handleReports(ctx)
		tried := a.evaluate(ctx)
		if tried && ctx.Err() != nil {
			return
		}
		a.recordPending(ctx, tried)
		now := a.h.cfg.Now()
		a.followDay(ctx, now)
		a.setLockouts(a.computeLockouts(now))
		if f := a.h.hooks.evaluated; f != nil {
			f(a.id)
		}
		select {
		case <-ctx.Done():
			return
		case <-a.h.stopCtx.Done():
			return
		case <-tick.C:
		case <-a.reports:
		case req := <-a.manual:
			req.reply <- a.manualRefresh(ctx, req)
		}
	}
}

// takePending makes the refresh that rec says is pending
// (InvalidatedAt): an earlier leader accepted a report against this token
// and could not refresh it (WeChat failing, the fetch backoff), then
// stopped or died. However long ago the report came, the token was
// reported invalid and nothing replaced it: the refresh is made once, in
// this term, as the earlier leader would have (the report's judgement
// stands; the reports still to judge against it are duplicates). A
// report against an older token never gets here: a newer token is
// stored without the mark.
//
// A refresh this holder accepted for rec in an earlier term and carried
// is judged the same way: whether it is a normal call follows today's
// force_refresh budget, not the one of the day it was accepted (the
// China day may have turned since, renewing it, or the budget run out).
// A normal call returns the reported token unchanged outside its last 5
// minutes, so a need kept normal after the day turned would lose the
// report's refresh that a fresh leader makes.
func (a *app) takePending(ctx context.Context, rec events.TokenRecord) {
	now := a.h.cfg.Now()
	if f := a.forced; f != nil && f.version == rec.Version {
		a.judgeNeed(ctx, f, now)
		return
	}
	if rec.InvalidatedAt.IsZero() {
		return
	}
	need := &forcedNeed{reason: events.ReasonInvalidated, version: rec.Version, recorded: true}
	// A stable_token app out of force_refresh calls makes a normal call
	// instead, as handleReports decides.
	a.judgeNeed(ctx, need, now)
	a.forced, a.acceptedVer = need, rec.Version
	a.log.Info("a report against the stored token was accepted by an earlier leader and its refresh is still to be made; refreshing",
		"version", rec.Version, "invalidated_at", rec.InvalidatedAt)
}

// recordPending writes a forced refresh that is still pending after an
// evaluation (accepted for a report, not made: WeChat failing, the
// backoff, the lease's end near) onto the stored token it is about
// (InvalidatedAt): the holder that leads next, after a stop or a crash,
// makes it (takePending). Written when the need is new (annotate retries
// NATS errors for as long as the term lasts), tried again after each
// fetch attempt (tried) until it is stored, and at the start of each
// later term of this holder while it is not (recordCarried).
func (a *app) recordPending(ctx context.Context, tried bool) {
	f := a.forced
	if f == nil || f.recorded || f.recordTried && !tried {
		return
	}
	f.recordTried = true
	f.recorded = a.annotate(ctx, f.version, "the pending refresh", func(r *events.TokenRecord) bool {
		if !r.InvalidatedAt.IsZero() {
			return false
		}
		r.InvalidatedAt = a.h.cfg.Now()
		return true
	})
}

// recordCarried writes, at the start of a term, a forced refresh that
// an earlier term of this holder accepted and did not make, if the
// stored record does not say it is pending: its write was refused until
// that term ended (the lease lost). It is written at once, not after the
// next fetch attempt, which the backoff may put minutes away: until then
// the report's refresh lives only in this holder's memory, and a crash
// would lose it. A need about an older token is not written (evaluate
// drops it).
func (a *app) recordCarried(ctx context.Context) {
	f := a.forced
	if f == nil {
		return
	}
	if rec, _ := a.record(); rec.Version == f.version {
		f.recorded = !rec.InvalidatedAt.IsZero() // the term starts from what KV holds
	}
	f.recordTried = false
	a.recordPending(ctx, false)
}

// errTokenMoved: a newer token than the one a mark is about is stored
// (or no token record at all): the mark is not written.
var errTokenMoved = errors.New("holder: the stored token is no longer the one the mark is about")

// annotate stores the record of version again, the same token and
// version, with change applied: what the holder that leads next must know
// about this token (InvalidatedAt, ConflictAt). change reports false when
// the record says so already. It reports whether the stored record says
// so now. Token users see a record with the version they hold and nothing
// to do.
//
// The compare-and-swap is retried (retryNATS: backoff, each attempt
// within the lease) for as long as the term lasts and the stored token is
// the one the mark is about: a leader that crashes after one refused
// write would lose the pending refresh. A lost compare-and-swap re-reads
// the record: the same token (another mark, or an earlier attempt of ours
// that landed) gets change applied again; a newer token ends the retry
// without a write, it needs no mark (never write one onto it). The token
// loop waits meanwhile, as for the other reads and writes of NATS.
func (a *app) annotate(ctx context.Context, version uint64, what string, change func(*events.TokenRecord) bool) bool {
	rec, rev := a.record()
	if rev == 0 || rec.Version != version {
		return false // the token moved on: nothing to say about this one
	}
	token := rec.AccessToken
	err := a.retryNATS(ctx, "recording "+what+" on the stored token", func(ctx context.Context) error {
		for {
			if cur, curRev := a.record(); curRev > rev {
				rec, rev = cur, curRev // the watch saw a newer revision
			}
			if rec.Version != version || rec.AccessToken != token {
				return stopRetry{errTokenMoved}
			}
			next := rec
			if !change(&next) {
				return nil
			}
			data, err := json.Marshal(next)
			if err != nil {
				return stopRetry{fmt.Errorf("holder: encode token record: %w", err)}
			}
			newRev, err := a.h.tokens.Update(ctx, a.id, data, rev)
			if err == nil {
				a.setRecord(next, newRev)
				return nil
			}
			if !cas.Lost(err) {
				return err
			}
			e, err := a.h.tokens.Get(ctx, a.id)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
				return stopRetry{errTokenMoved}
			case err != nil:
				return err
			}
			var stored events.TokenRecord
			if json.Unmarshal(e.Value(), &stored) != nil {
				return stopRetry{errTokenMoved}
			}
			a.setRecord(stored, e.Revision())
			rec, rev = stored, e.Revision()
		}
	})
	switch {
	case err == nil:
		return true
	case errors.Is(err, errTokenMoved):
		a.log.Info("not recording "+what+": the stored token is no longer that version", "version", version)
	default:
		a.log.Warn("recording "+what+" on the stored token failed; the holder that leads next may not know it",
			"version", version, "error", err)
	}
	return false
}

// notLeading is the answer to a manual request this holder cannot serve:
// ErrNotLeader, or the refusal of a holder that stops.
func (a *app) notLeading() error {
	if a.h.stopping() {
		return a.stoppingRefusal()
	}
	return ErrNotLeader
}

// stoppingRefusal answers a manual refresh request that reaches a leader
// that stops: no refresh was made, the holder that leads next can make it.
func (a *app) stoppingRefusal() error {
	return refused(ErrNotLeader, LockoutNotLeading, time.Time{},
		fmt.Sprintf("holder %s is stopping and hands the lease over: no refresh was made", a.h.cfg.ID))
}

// replaced reports whether the stored token is newer than *replace (the
// version a manual request wants replaced): the request is answered
// already.
func (a *app) replaced(replace *uint64) bool {
	if replace == nil {
		return false
	}
	rec, _ := a.record()
	return rec.Version > *replace
}

// evaluate runs a due refresh: a pending forced one, or a scheduled one
// (token absent, expired or within its margin). The term's first fetch
// has reason startup or takeover. It reports whether it tried a fetch.
func (a *app) evaluate(ctx context.Context) bool {
	now := a.h.cfg.Now()
	rec, _ := a.record()
	if a.forced != nil && a.forced.version != rec.Version {
		a.forced = nil // the token moved on meanwhile
	}
	var reason string
	forced := false
	if f := a.forced; f != nil && f.day != events.ChinaDay(now) {
		// Held back past the China day's turn (WeChat failing, the
		// backoff): judged by the new day's budget, not the old one's.
		was := f.normal
		a.judgeNeed(ctx, f, now)
		if was != f.normal {
			a.log.Info("the China day turned while a report's refresh was pending; it is judged by the new day's force_refresh budget",
				"version", f.version, "normal", f.normal)
		}
	}
	switch {
	case a.forced != nil:
		if a.stable() && !a.forced.normal && now.Before(a.forceBlockedUntil) {
			a.forced.normal = true // WeChat refuses forced calls today
		}
		reason, forced = a.forced.reason, !a.forced.normal
	case !rec.Fresh(now, 0) || !now.Before(a.refreshAt(rec)) || (a.retiredVer != 0 && rec.Version == a.retiredVer):
		reason = events.ReasonScheduled
		if a.termReason != "" {
			reason = a.termReason
		}
	default:
		return false
	}
	if !a.mayFetch(now) {
		return false
	}
	err := a.refresh(ctx, reason, forced)
	if err == nil {
		a.forced = nil
	}
	if a.forced != nil && a.forced.normal && errors.Is(err, errUnchanged) {
		// A normal fallback call is tried once; it left the token as it
		// was, so the record no longer says a refresh is pending.
		if a.forced.recorded {
			a.annotate(ctx, rec.Version, "the end of the pending refresh", func(r *events.TokenRecord) bool {
				if r.InvalidatedAt.IsZero() {
					return false
				}
				r.InvalidatedAt = time.Time{}
				return true
			})
		}
		a.forced = nil
	}
	return true
}

// mayFetch reports whether the backoff gates are open.
func (a *app) mayFetch(now time.Time) bool {
	return !time.Now().Before(a.retryAt) && !now.Before(a.blockedUntil)
}

// handleReports judges the coalesced token.invalidated reports. However
// many arrive for the current version, at most one forced refresh follows.
func (a *app) handleReports(ctx context.Context) {
	reports := a.takeReports()
	if len(reports) == 0 {
		return
	}
	now := a.h.cfg.Now()
	rec, _ := a.record()
	count := func(decision string, n int) {
		metrics.TokenInvalidations.WithLabelValues(a.id, decision).Add(float64(n))
	}
	for v, n := range reports {
		switch {
		case v < rec.Version && v == a.acceptedVer:
			count(decisionDuplicate, n) // arrived while its refresh ran
		case v != rec.Version:
			count(decisionStale, n)
			a.log.Debug("ignoring report for a stale version", "reported", v, "version", rec.Version, "reports", n)
		case a.forced != nil || a.acceptedVer == v:
			count(decisionDuplicate, n)
		case v == a.forcedVer && now.Sub(rec.FetchedAt) < a.h.cfg.ConflictWindow:
			count(decisionConflict, n)
			a.announceConflict(ctx, rec, now)
		case !a.lastForcedAt.IsZero() && now.Sub(a.lastForcedAt) < a.minForceInterval():
			count(decisionRateLimited, n)
			a.log.Info("report rate-limited", "version", v, "last_forced_at", a.lastForcedAt, "reports", n)
		case a.forceCallsOut(ctx, now):
			count(decisionFallback, 1)
			if n > 1 {
				count(decisionDuplicate, n-1)
			}
			a.acceptedVer = v
			a.forced = &forcedNeed{reason: events.ReasonInvalidated, version: v, normal: true, day: events.ChinaDay(now)}
			a.log.Info("token reported invalid; force_refresh calls exhausted today, trying a normal stable_token call", "version", v, "reports", n)
		case a.reserveReached(ctx, now):
			count(decisionQuotaReserve, n)
		default:
			count(decisionAccepted, 1)
			if n > 1 {
				count(decisionDuplicate, n-1)
			}
			a.acceptedVer = v
			a.forced = &forcedNeed{reason: events.ReasonInvalidated, version: v, day: events.ChinaDay(now)}
			a.log.Info("token reported invalid; refreshing", "version", v, "reports", n)
		}
	}
}

// announceConflict publishes token.conflict and logs an error, once per
// version and ConflictWindow, also across a handover: the stored record
// then says it was announced (ConflictAt, read at the start of a term).
// It is written after the event, so a leader that dies in between makes
// its successor announce it again rather than nobody.
func (a *app) announceConflict(ctx context.Context, rec events.TokenRecord, now time.Time) {
	if a.conflictVer == rec.Version && now.Sub(a.conflictAt) < a.h.cfg.ConflictWindow {
		return
	}
	a.conflictVer, a.conflictAt = rec.Version, now
	detail := fmt.Sprintf("token version %d, fetched %s ago after an earlier report, was reported invalid: another system is fetching access_tokens for this appid; not refetching before %s",
		rec.Version, now.Sub(rec.FetchedAt).Round(time.Second), rec.FetchedAt.Add(a.h.cfg.ConflictWindow).Format(time.RFC3339))
	a.log.Error("token conflict: another system fetches tokens for this appid", "version", rec.Version,
		"fetched_at", rec.FetchedAt, "fingerprint", wechat.Fingerprint(rec.AccessToken))
	a.publish(ctx, a.h.subj.TokenConflict, "", events.TokenConflict{AppID: a.id, Version: rec.Version, Detail: detail})
	a.annotate(ctx, rec.Version, "the announced conflict", func(r *events.TokenRecord) bool {
		if !r.ConflictAt.Before(now) {
			return false
		}
		r.ConflictAt = now
		return true
	})
}

// judgeNeed decides whether the pending refresh f is made as a normal
// call, by the force_refresh budget of now's China day (as
// forceCallsOut), and notes that day: evaluate judges it again once the
// day turned. A count it could not read makes it a normal call for now
// (as a report is judged) and notes no day, so it is judged again at the
// next evaluation instead of staying normal all day.
func (a *app) judgeNeed(ctx context.Context, f *forcedNeed, now time.Time) {
	f.normal, f.day = false, events.ChinaDay(now)
	if !a.stable() {
		return
	}
	if now.Before(a.forceBlockedUntil) {
		f.normal = true
		return
	}
	reached, err := a.reserveRead(ctx, now)
	if err != nil {
		f.normal, f.day = true, ""
		a.log.Warn("reading wx_quota failed; the pending refresh is a normal call until the force_refresh count is read", "error", err)
		return
	}
	f.normal = reached
}

// forceCallsOut reports whether a stable_token app answers a report with
// a normal call, its force_refresh calls being out today (WeChat answered
// 45009 to one, or this holder's count reached the limit).
func (a *app) forceCallsOut(ctx context.Context, now time.Time) bool {
	return a.stable() && (now.Before(a.forceBlockedUntil) || a.reserveReached(ctx, now))
}

// reserveReached reports whether forced refreshes must stop: the daily
// quota is down to the reserve (token mode) or WeChat's 20 forced
// stable_token refreshes a day are used up (stable_token mode).
func (a *app) reserveReached(ctx context.Context, now time.Time) bool {
	reached, err := a.reserveRead(ctx, now)
	if err != nil {
		a.log.Warn("reading wx_quota failed; assuming the reserve is reached", "error", err)
		return true
	}
	return reached
}

// reserveRead is reserveReached with the error of reading wx_quota.
func (a *app) reserveRead(ctx context.Context, now time.Time) (bool, error) {
	used, err := a.readQuota(ctx, now, a.stable())
	if err != nil {
		return false, err
	}
	if a.stable() {
		a.forceUsed.set(now, used)
	}
	limit := int64(a.h.cfg.QuotaDailyLimit - a.h.cfg.QuotaReserve)
	what := "daily quota reserve"
	if a.stable() {
		limit, what = StableForceDailyLimit, "stable_token force_refresh daily limit"
	}
	if used < limit {
		return false, nil
	}
	if day := events.ChinaDay(now); a.reserveWarn != day {
		a.reserveWarn = day
		a.log.Warn("forced refreshes stopped for today: "+what+" reached", "used", used, "limit", limit)
	}
	return true, nil
}

// manualRefresh serves Holder.Refresh: a forced refresh now (reason
// manual), never a report, unless the stored token is newer than the
// version the request wants replaced. It has its own rate limit (one per
// MinForceInterval, also across a failover: the record says when the
// last manual one was) and is not subject to conflict detection: an
// operator's refresh is not another system fetching. Refusals name the
// lockout (RefusedError); a holder that stops makes none.
func (a *app) manualRefresh(ctx context.Context, req manualReq) error {
	now := a.h.cfg.Now()
	cfg := &a.h.cfg
	midnight := events.NextChinaMidnight(now)
	switch {
	case a.replaced(req.replace):
		rec, _ := a.record()
		a.log.Info("manual refresh: the version asked to be replaced is replaced already; no fetch",
			"replace", *req.replace, "version", rec.Version)
		return nil
	case !a.leaseValid():
		return ErrNotLeader
	case a.h.stopping():
		return a.stoppingRefusal()
	case now.Before(a.blockedUntil):
		return refused(ErrBackingOff, LockoutQuotaExhausted, a.blockedUntil, "WeChat answered 45009 (daily quota): no fetch until the China day turns")
	case !a.mayFetch(now):
		return refused(ErrBackingOff, LockoutBackoff, a.status().NextAttemptAt, "the last fetch failed: "+a.status().LastError)
	case !a.lastManualAt.IsZero() && now.Sub(a.lastManualAt) < cfg.MinForceInterval:
		return refused(ErrRateLimited, "rate_limited", a.lastManualAt.Add(cfg.MinForceInterval),
			fmt.Sprintf("one manual refresh per %v per app", cfg.MinForceInterval))
	case a.stable() && !a.lastForcedAt.IsZero() && now.Sub(a.lastForcedAt) < StableForceMinInterval:
		return refused(ErrRateLimited, "rate_limited", a.lastForcedAt.Add(StableForceMinInterval),
			"WeChat returns the same stable_token within 30 s of a force_refresh")
	case a.stable() && now.Before(a.forceBlockedUntil):
		return refused(ErrQuotaReserve, LockoutForceExhausted, a.forceBlockedUntil, "WeChat answered 45009 to force_refresh; scheduled refreshes go on")
	case a.reserveReached(ctx, now):
		if a.stable() {
			return refused(ErrQuotaReserve, LockoutForceLimit, midnight, fmt.Sprintf("%d force_refresh calls used today; scheduled refreshes go on", StableForceDailyLimit))
		}
		return refused(ErrQuotaReserve, LockoutQuotaReserve, midnight, fmt.Sprintf("daily quota down to the reserve of %d; scheduled refreshes go on", cfg.QuotaReserve))
	}
	a.lastManualAt = now
	err := a.refresh(ctx, events.ReasonManual, true)
	if err != nil && ctx.Err() != nil && (!a.leaseValid() || a.currentTerm() != ctx) {
		// The term ended under the call (the lease was lost; this
		// holder may lead again already, in a new term): the requester
		// asks again and the next leader answers.
		return fmt.Errorf("%w: the lease was lost during the refresh: %w", ErrNotLeader, err)
	}
	return err
}

// errLeaseShort: too little of the lease is left for a WeChat call to end
// inside it; the refresh waits for the next renewal.
var errLeaseShort = errors.New("holder: lease renewal pending; not starting a WeChat call this close to the lease's end")

// leaseRoom reports whether a WeChat call started now ends (by its own
// timeout) with a margin inside the lease: a deposed or cut-off leader
// never reaches WeChat after its successor.
func (a *app) leaseRoom() bool {
	return a.leaseLeft() > a.h.fetchTimeout+a.h.fetchMargin
}

// count counts the fetch about to be made in wx_quota (retryNATS), once
// however often a write is retried. It returns today's fetch count, or an
// error when the call must not be made: the term ended while counting,
// too little of the lease is left now (errLeaseShort), or the holder
// stops. The count is then taken back: wx_quota counts the calls made,
// each once. A call that was made stays counted whatever its outcome
// (WeChat may have counted it).
func (a *app) count(ctx context.Context, now time.Time, forced bool) (int64, error) {
	force := forced && a.stable()
	id := newFetchID()
	var c fetchCount
	err := a.retryNATS(ctx, "counting the fetch in wx_quota", func(ctx context.Context) error {
		var err error
		c, err = a.countFetch(ctx, now, force, id)
		return err
	})
	switch {
	case err != nil:
	case !a.leaseRoom():
		err = errLeaseShort
	case a.h.stopping():
		err = a.stoppingRefusal()
	}
	if err != nil {
		// An attempt may have landed before the term ended.
		a.uncountFetch(ctx, now, force, id)
		return 0, err
	}
	a.setQuotaUsed(now, c.used)
	if force {
		a.forceUsed.set(now, c.forced)
	}
	return c.used, nil
}

// refresh fetches a token from WeChat and stores it with a CAS write.
func (a *app) refresh(ctx context.Context, reason string, forced bool) error {
	if !a.leaseValid() {
		return ErrNotLeader
	}
	if !a.leaseRoom() {
		return errLeaseShort
	}
	a.setRefreshing(reason)
	defer a.setRefreshing("")
	now := a.h.cfg.Now()
	rec, rev := a.record()
	// A stop gives up a fetch not counted yet; once counted, the call is
	// made and its token stored under the term's context alone.
	cctx, cancel := a.h.untilStop(ctx)
	used, err := a.count(cctx, now, forced)
	cancel()
	if err != nil && a.h.stopping() {
		return a.stoppingRefusal() // no call was made
	}
	if err != nil {
		return err
	}
	if forced {
		a.lastForcedAt = now
	}
	if f := a.h.hooks.fetching; f != nil {
		f(a.id)
	}
	fctx, cancel := context.WithTimeout(ctx, a.h.fetchTimeout)
	var tok wechat.AccessToken
	if a.stable() {
		tok, err = a.h.cfg.WeChat.StableToken(fctx, a.id, a.secret, forced)
	} else {
		tok, err = a.h.cfg.WeChat.Token(fctx, a.id, a.secret)
	}
	cancel()
	if f := a.h.hooks.fetched; f != nil {
		f(a.id, forced)
	}
	if err != nil {
		if ctx.Err() != nil && wechat.Classify(err) == wechat.ClassNone {
			return err
		}
		return a.failed(ctx, reason, forced, err)
	}
	if tok.Token == rec.AccessToken {
		// stable_token outside its last 5 minutes, or a forced call within
		// 30 s of another: nothing new to store. Try again later.
		a.retryAt = time.Now().Add(a.bo.NextBackOff())
		a.log.Warn("WeChat returned the current token unchanged; not storing", "version", rec.Version, "reason", reason,
			"expires_in", tok.ExpiresIn, "retry_at", a.retryAt)
		return errUnchanged
	}
	a.mu.Lock()
	version := max(rec.Version, a.maxVersion) + 1
	a.mu.Unlock()
	next := events.TokenRecord{
		AppID:        a.id,
		AccessToken:  tok.Token,
		ExpiresAt:    now.Add(tok.ExpiresIn), // from before the call: errs early
		FetchedAt:    now,
		Version:      version,
		Mode:         a.mode,
		Holder:       a.h.cfg.ID,
		Reason:       reason,
		LastForcedAt: a.lastForcedAt,
	}
	newRev, err := a.write(ctx, &next, rev)
	if err != nil {
		return err
	}
	version = next.Version // a higher one if ours replaced an older stored token
	a.setRecord(next, newRev)
	if reason == events.ReasonInvalidated {
		a.forcedVer = version
	}
	a.bo.Reset()
	a.retryAt, a.blockedUntil, a.termReason, a.retiredVer = time.Time{}, time.Time{}, "", 0
	a.mu.Lock()
	a.nextTry, a.lastErr = time.Time{}, ""
	a.mu.Unlock()
	metrics.TokenRefreshes.WithLabelValues(a.id, reason).Inc()
	a.log.Info("token refreshed", "version", version, "reason", reason, "expires_at", next.ExpiresAt,
		"fingerprint", wechat.Fingerprint(tok.Token), "fetches_today", used)
	a.publish(ctx, a.h.subj.TokenRefreshed, fmt.Sprintf("%s.%d", a.id, version), events.TokenRefreshed{
		AppID: a.id, Version: version, ExpiresAt: next.ExpiresAt, FetchedAt: next.FetchedAt, Reason: reason, Holder: a.h.cfg.ID,
	})
	return nil
}

// write stores *rec with a compare-and-swap on rev (Create when rev is 0).
// The fetched token is kept in memory and the write retried (retryNATS)
// for as long as the term lasts: it is never thrown away because of NATS,
// and never fetched again. An attempt that failed may still have landed
// (a timeout after the server stored it): a later attempt then sees the
// revision moved, and the stored record being ours counts as success.
//
// A revision moved by another writer is judged by who fetched last, since
// every fetch retires the tokens fetched before it (fetchedBefore):
//   - the stored token was fetched before ours began: our fetch retired it
//     (it stops working 5 minutes later), so ours is stored over it with a
//     compare-and-swap on its revision, as a higher version (*rec is
//     updated);
//   - otherwise the stored token wins and is adopted, the fetched token is
//     discarded (ErrLostRace) and token.refresh_failed says so. If it was
//     not clearly fetched after ours, it may be the token our fetch
//     retired: it is marked (retiredVer) and evaluate refreshes it at once.
func (a *app) write(ctx context.Context, rec *events.TokenRecord, rev uint64) (uint64, error) {
	if f := a.h.hooks.beforeWrite; f != nil {
		f(a.id)
	}
	var newRev uint64
	var stored events.TokenRecord
	var replaced []events.TokenRecord // older stored records our token replaced
	err := a.retryNATS(ctx, "storing the fetched token in wx_tokens", func(ctx context.Context) error {
		for {
			data, err := json.Marshal(rec)
			if err != nil {
				return stopRetry{fmt.Errorf("holder: encode token record: %w", err)}
			}
			if rev == 0 {
				newRev, err = a.h.tokens.Create(ctx, a.id, data)
			} else {
				newRev, err = a.h.tokens.Update(ctx, a.id, data, rev)
			}
			if err == nil || !cas.Lost(err) {
				return err
			}
			// The revision moved: an earlier attempt of ours landed, or
			// another writer stored a record.
			e, gerr := a.h.tokens.Get(ctx, a.id)
			if gerr != nil {
				return gerr
			}
			stored = events.TokenRecord{}
			if derr := json.Unmarshal(e.Value(), &stored); derr != nil {
				// Not a token record (written by hand, or by another
				// version): no token anyone can use. Ours, just fetched,
				// replaces it; giving up would fetch again at every check.
				a.log.Warn("wx_tokens holds a record that is not a token record; the fetched token replaces it", "error", derr, "revision", e.Revision())
				rev = e.Revision()
				continue
			}
			if stored.AccessToken == rec.AccessToken {
				*rec, newRev = stored, e.Revision() // ours (tokens are unique)
				return nil
			}
			if !a.fetchedBefore(stored, *rec) {
				a.setRecord(stored, e.Revision())
				return stopRetry{err}
			}
			// Our fetch retired the stored token: ours is WeChat's latest.
			replaced = append(replaced, stored)
			rev = e.Revision()
			rec.Version = max(rec.Version, stored.Version+1)
			if stored.LastForcedAt.After(rec.LastForcedAt) {
				rec.LastForcedAt = stored.LastForcedAt
			}
		}
	})
	if f := a.h.hooks.afterWrite; f != nil {
		f(a.id, err)
	}
	switch {
	case err == nil:
		for _, old := range replaced {
			a.log.Warn("another writer stored a token fetched before ours during the refresh; our fetch retired it, so ours replaces it",
				"ours", rec.Version, "replaced", old.Version, "replaced_by", old.Holder, "replaced_fetched_at", old.FetchedAt,
				"fetched_at", rec.FetchedAt)
		}
		return newRev, nil
	case cas.Lost(err):
		msg := fmt.Sprintf("the token fetched as version %d was discarded: another holder (%s) stored version %d meanwhile; that one is kept",
			rec.Version, stored.Holder, stored.Version)
		a.termReason = "" // the stored token is adopted: later fetches are scheduled ones
		if !stored.FetchedAt.After(rec.FetchedAt.Add(a.orderSlack())) {
			// Not clearly fetched after ours: our fetch may have retired
			// it. Refresh it now rather than serve it until it dies.
			a.retiredVer = stored.Version
			msg += fmt.Sprintf(" and refreshed at once: it was fetched too close to this fetch to tell which is WeChat's latest, and it stops working at %s if this fetch retired it",
				rec.FetchedAt.Add(wechatRetireDelay).Format(time.RFC3339))
		}
		a.log.Warn("token changed in KV during the refresh (another leader wrote); discarding ours",
			"ours", rec.Version, "stored", stored.Version, "stored_by", stored.Holder, "refresh_now", a.retiredVer == stored.Version)
		a.publish(ctx, a.h.subj.TokenRefreshFailed, "", events.TokenRefreshFailed{
			AppID: a.id, ErrMsg: msg, NextAttemptAt: a.h.cfg.Now(),
		})
		return 0, fmt.Errorf("%w: stored version %d", ErrLostRace, stored.Version)
	case errors.Is(err, errTermEnded):
		cur, _ := a.record()
		a.log.Error("the term ended before the fetched token could be stored; it is lost", "version", rec.Version,
			"fingerprint", wechat.Fingerprint(rec.AccessToken), "stored", cur.Version, "error", err)
		msg := fmt.Sprintf("the token fetched as version %d (fingerprint %s) could not be stored in %s before this holder's term ended (%v); "+
			"the stored version %d stops working 5 minutes after that fetch, the next leader adopts it or refreshes by the usual rules",
			rec.Version, wechat.Fingerprint(rec.AccessToken), "wx_tokens", err, cur.Version)
		a.mu.Lock()
		a.lastErr = msg
		a.mu.Unlock()
		a.publish(ctx, a.h.subj.TokenRefreshFailed, "", events.TokenRefreshFailed{
			AppID: a.id, ErrMsg: msg, NextAttemptAt: a.h.cfg.Now().Add(a.h.cfg.LeaseTTL),
		})
		return 0, err
	default:
		return 0, fmt.Errorf("holder: store token: %w", err)
	}
}

// wechatRetireDelay: WeChat keeps the previous token working this long
// after a fetch (shared/wechat-api.md).
const wechatRetireDelay = 5 * time.Minute

// orderSlack bounds how far apart two fetches' FetchedAt (each by its
// writer's clock, taken before the call) must be for their order at WeChat
// to be certain: a call lasts at most fetchTimeout, and two holders'
// clocks differ by at most twice MaxClockSkew.
func (a *app) orderSlack() time.Duration {
	return a.h.fetchTimeout + 2*max(a.h.cfg.MaxClockSkew, 0)
}

// fetchedBefore reports whether WeChat certainly issued stored's token
// before our fetch of ours began: our fetch then retired it.
func (a *app) fetchedBefore(stored, ours events.TokenRecord) bool {
	return stored.FetchedAt.Add(a.orderSlack()).Before(ours.FetchedAt)
}

// failed handles a failed fetch: it sets the backoff gates by the error's
// class, publishes token.refresh_failed and never touches the stored token.
func (a *app) failed(ctx context.Context, reason string, forced bool, err error) error {
	nowClock := a.h.cfg.Now()
	code := wechat.ErrCode(err)
	class := wechat.Classify(err)
	if !fromWeChat(err) {
		class = wechat.ClassTransient // NATS, JetStream: never a configuration error
	}
	var wait time.Duration
	next := time.Time{}
	msg := err.Error()
	switch {
	case class == wechat.ClassQuota && a.stable() && forced:
		// WeChat's 20 force_refresh calls a day are used (perhaps
		// elsewhere): only forced calls stop; reports fall back to normal
		// calls and scheduled refreshes go on.
		a.forceBlockedUntil = events.NextChinaMidnight(nowClock)
		a.markForceExhausted(ctx, nowClock)
		wait = a.bo.NextBackOff()
		msg = fmt.Sprintf("stable_token force_refresh answered 45009: forced refreshes are exhausted until the China day turns (%s); reports fall back to force_refresh=false calls and scheduled refreshes go on (%v)",
			a.forceBlockedUntil.Format(time.RFC3339), err)
		a.log.Error("stable_token forced refreshes exhausted (45009) until the China day turns; scheduled refreshes go on",
			"forced_until", a.forceBlockedUntil, "error", err)
	case class == wechat.ClassQuota:
		a.blockedUntil = events.NextChinaMidnight(nowClock)
		a.markExhausted(ctx, nowClock)
		wait = a.bo.NextBackOff()
		next = a.blockedUntil
		a.log.Error("daily token quota exhausted (45009): no fetch until the China day turns",
			"next_attempt_at", next, "error", err)
	case class == wechat.ClassConfig, class == wechat.ClassPermanent, class == wechat.ClassBug:
		wait = a.h.cfg.ConfigRetryInterval
		a.log.Error("token fetch refused; check the app's configuration (appid, secret, IP whitelist)",
			"errcode", code, "retry_in", wait, "error", err)
	default:
		wait = a.bo.NextBackOff()
		a.log.Warn("token fetch failed; retrying with backoff", "errcode", code, "reason", reason, "retry_in", wait, "error", err)
	}
	a.retryAt = time.Now().Add(wait)
	if t := nowClock.Add(wait); t.After(next) {
		next = t
	}
	label := metrics.ErrCode(code)
	if code == 0 {
		label = "transport"
	}
	metrics.TokenRefreshFailures.WithLabelValues(a.id, label).Inc()
	a.mu.Lock()
	a.nextTry, a.lastErr = next, msg
	a.mu.Unlock()
	a.publish(ctx, a.h.subj.TokenRefreshFailed, "", events.TokenRefreshFailed{
		AppID: a.id, ErrCode: code, ErrMsg: msg, NextAttemptAt: next,
	})
	return err
}

// loadTermStart reads the app's record from wx_tokens at the start of a
// term, retrying NATS errors (retryNATS) for as long as the term lasts. It
// reports false when the term ended first: the leader then steps down
// without having evaluated, so it never fetches over a token it could not
// see. An undecodable record is logged and the term goes on.
func (a *app) loadTermStart(ctx context.Context) bool {
	for {
		err := a.retryNATS(ctx, "reading wx_tokens at the start of the term", a.loadToken)
		switch {
		case err == nil:
			return true
		case !errors.Is(err, errTermEnded):
			a.log.Warn("reading wx_tokens failed", "error", err)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		// The lease looks lapsed by our clock: the lease loop ends the
		// term (ctx done) or a late renewal extends it (read again).
		a.log.Warn("the term ended before wx_tokens could be read; not refreshing in it", "error", err)
		if !sleepCtx(ctx, a.h.cfg.CheckInterval) {
			return false
		}
	}
}

// loadToken reads the app's record from wx_tokens into the cache.
func (a *app) loadToken(ctx context.Context) error {
	e, err := a.h.tokens.Get(ctx, a.id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil
	case err != nil:
		return err
	}
	var rec events.TokenRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return stopRetry{fmt.Errorf("holder: decode wx_tokens %s: %w", a.id, err)}
	}
	a.setRecord(rec, e.Revision())
	return nil
}
