package holder

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/metrics"
)

// maxPendingVersions bounds the distinct versions kept from reports.
const maxPendingVersions = 64

// manualReq is a manual refresh request for the token loop. replace,
// when set, is the version the requester wants replaced: a newer stored
// token answers it without a fetch.
type manualReq struct {
	replace *uint64
	reply   chan error
}

// reportBurst is what is kept of the reports for one version that are not
// judged yet (app.pending; a standby's too, see receiveReport): how many
// arrived in the latest burst (none more than reportHorizon apart) and when
// the last did (real time).
type reportBurst struct {
	n    int
	last time.Time
}

// app is the holder's state for one appid. The lease loop owns the lease
// fields, the token loop owns the refresh fields; mu guards what both and
// Status read.
type app struct {
	h      *Holder
	id     string
	mode   string
	secret string
	log    *slog.Logger

	manual  chan manualReq
	reports chan struct{} // capacity 1: "pending has something"
	termCh  chan struct{} // capacity 1: "a new term began"

	mu         sync.Mutex
	rec        events.TokenRecord
	rev        uint64 // KV revision of rec
	maxVersion uint64 // highest version ever seen (version only grows)
	pending    map[uint64]reportBurst
	leader     bool
	leaseRev   uint64
	validUntil time.Time // real time after which our lease may have lapsed
	leaderID   string
	sawOther   bool // another holder led this appid since we started
	term       context.Context
	quotaUsed  dayCount  // wx_quota's fetch count, as last seen
	nextTry    time.Time // holder clock, for Status
	lastErr    string
	lockouts   []Lockout // the token loop's view, for Status
	refreshing string    // reason of the refresh under way, "" when none

	// Owned by the token loop.
	bo           *backoff.ExponentialBackOff
	retryAt      time.Time // real time: no fetch before
	blockedUntil time.Time // holder clock: no fetch before (45009)
	forced       *forcedNeed
	lastForcedAt time.Time // holder clock
	lastManualAt time.Time // holder clock
	// forceBlockedUntil: WeChat answered 45009 to a stable_token
	// force_refresh call; forced calls wait for the China day to turn.
	forceBlockedUntil time.Time
	forceUsed         dayCount // stable_token force_refresh count, as last seen
	forcedVer         uint64   // version produced by the last refresh for a report
	acceptedVer       uint64   // version whose report caused a refresh
	conflictVer       uint64   // version a conflict was announced for
	conflictAt        time.Time
	reserveWarn       string // China day the reserve warning was logged
	termReason        string // reason of the term's first fetch; "" once one succeeded or a stored token was adopted
	// retiredVer: a stored version adopted after a lost race that our own
	// fetch may have retired at WeChat; evaluate refreshes it at once.
	retiredVer uint64
	jitterVer  uint64
	jitter     time.Duration
}

type forcedNeed struct {
	reason  string
	version uint64 // the version the need is about
	// normal: a stable_token app out of force_refresh calls answers the
	// report with a normal call instead (new token only in the current
	// one's last 5 minutes). It is judged by the force_refresh budget of
	// one China day, day (judgeNeed); evaluate judges it again once that
	// day is over.
	normal bool
	day    string
	// recorded: the stored record says the refresh is pending
	// (TokenRecord.InvalidatedAt), so the holder that leads next makes it;
	// recordTried: writing that was tried (recordPending).
	recorded, recordTried bool
}

func newApp(h *Holder, a App, secret string) *app {
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(h.cfg.RetryInitial),
		backoff.WithMaxInterval(h.cfg.RetryMax),
		backoff.WithMaxElapsedTime(0),
	)
	return &app{
		h:       h,
		id:      a.AppID,
		mode:    a.mode(),
		secret:  secret,
		log:     h.log.With("appid", a.AppID, "mode", a.mode()),
		manual:  make(chan manualReq),
		reports: make(chan struct{}, 1),
		termCh:  make(chan struct{}, 1),
		pending: map[uint64]reportBurst{},
		bo:      bo,
	}
}

func (a *app) stable() bool { return a.mode == events.ModeStableToken }

// record returns the latest known token record and its KV revision.
func (a *app) record() (events.TokenRecord, uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rec, a.rev
}

// setRecord adopts rec if rev is newer than what we know.
func (a *app) setRecord(rec events.TokenRecord, rev uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if rev <= a.rev {
		return
	}
	a.rec, a.rev = rec, rev
	if rec.Version > a.maxVersion {
		a.maxVersion = rec.Version
	}
	if !rec.ExpiresAt.IsZero() {
		metrics.TokenExpiresAt.WithLabelValues(a.id).Set(float64(rec.ExpiresAt.Unix()))
	}
}

// receiveReport keeps a token.invalidated report for the token loop to
// judge and reports whether this holder leads (by its own clock). A
// standby keeps reports too, for reportHorizon: the holder that leads next
// judges the reports of the handover, which reached no judging leader (the
// previous one had stopped judging or was dead, or nobody led), against
// the stored record. Older ones reached a leader that judged them.
func (a *app) receiveReport(version uint64, now time.Time) (leading bool) {
	a.mu.Lock()
	leading = a.leader && now.Before(a.validUntil)
	if !leading {
		a.dropReportsLocked(now)
	}
	if b, ok := a.pending[version]; ok || len(a.pending) < maxPendingVersions {
		if now.Sub(b.last) > a.reportHorizon() {
			b.n = 0 // a new burst
		}
		b.n++
		b.last = now
		a.pending[version] = b
	}
	a.mu.Unlock()
	if leading {
		select {
		case a.reports <- struct{}{}:
		default:
		}
	}
	return leading
}

// reportHorizon is how long a standby keeps reports: the longest a
// handover can leave them unjudged. A dead leader's lease lapses within
// LeaseTTL of its last renewal, and it may have left the reports of its
// last WeChat call (up to LeaseTTL/3) unjudged: twice LeaseTTL covers both.
func (a *app) reportHorizon() time.Duration { return 2 * a.h.cfg.LeaseTTL }

// dropReportsLocked forgets the reports whose last one arrived more than
// reportHorizon before now. Call with a.mu held.
func (a *app) dropReportsLocked(now time.Time) {
	for v, b := range a.pending {
		if now.Sub(b.last) > a.reportHorizon() {
			delete(a.pending, v)
		}
	}
}

// takeReports returns the reports to judge, per version, and forgets them.
func (a *app) takeReports() map[uint64]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.pending) == 0 {
		return nil
	}
	p := make(map[uint64]int, len(a.pending))
	for v, b := range a.pending {
		p[v] = b.n
	}
	clear(a.pending)
	return p
}

// refreshUnderWay returns the reason of the refresh under way, "" when
// none is.
func (a *app) refreshUnderWay() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.refreshing
}

func (a *app) setRefreshing(reason string) {
	a.mu.Lock()
	a.refreshing = reason
	a.mu.Unlock()
}

// leaseValid reports whether we hold the lease by our own (real) clock.
func (a *app) leaseValid() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.leader && time.Now().Before(a.validUntil)
}

func (a *app) currentTerm() context.Context {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.term
}

func (a *app) status() AppStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := AppStatus{
		AppID:         a.id,
		Mode:          a.mode,
		Leader:        a.leader && time.Now().Before(a.validUntil),
		LeaderID:      a.leaderID,
		Version:       a.rec.Version,
		ExpiresAt:     a.rec.ExpiresAt,
		FetchedAt:     a.rec.FetchedAt,
		FetchesToday:  a.quotaUsed.on(a.h.cfg.Now()),
		NextAttemptAt: a.nextTry,
		LastError:     a.lastErr,
		Lockouts:      a.lockoutsNow(),
	}
	if !a.stable() {
		st.QuotaLimit, st.QuotaReserve = a.h.cfg.QuotaDailyLimit, a.h.cfg.QuotaReserve
	}
	return st
}

// margins returns the refresh margin and jitter bound for this app's mode.
func (a *app) margins() (margin, jitter time.Duration) {
	margin, jitter = a.h.cfg.RefreshMargin, a.h.cfg.Jitter
	if a.stable() {
		margin = min(margin, stableMaxMargin)
		jitter = min(jitter, stableMaxJitter)
	}
	return margin, jitter
}

// refreshAt is when rec is due for a scheduled refresh: ExpiresAt minus the
// margin and a per-version random jitter, but never earlier than half-way
// through the token's life (short-lived tokens would loop otherwise).
func (a *app) refreshAt(rec events.TokenRecord) time.Time {
	margin, jitter := a.margins()
	if a.jitterVer != rec.Version || rec.Version == 0 {
		a.jitterVer = rec.Version
		a.jitter = 0
		if jitter > 0 {
			a.jitter = rand.N(jitter)
		}
	}
	lead := margin + a.jitter
	if life := rec.ExpiresAt.Sub(rec.FetchedAt); life > 0 && lead > life/2 {
		lead = life / 2
	}
	return rec.ExpiresAt.Add(-lead)
}

func (a *app) minForceInterval() time.Duration {
	if a.stable() {
		return max(a.h.cfg.MinForceInterval, StableForceMinInterval)
	}
	return a.h.cfg.MinForceInterval
}
