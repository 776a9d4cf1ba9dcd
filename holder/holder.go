package holder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/metrics"
)

// Errors returned by Holder methods.
var (
	// ErrNotLeader: this holder does not lead the appid; ask the leader
	// (see AppStatus.LeaderID).
	ErrNotLeader = errors.New("holder: not the leader for this appid")
	// ErrUnknownApp: the appid is not configured.
	ErrUnknownApp = errors.New("holder: unknown appid")
	// ErrRateLimited: a forced refresh came sooner than MinForceInterval
	// after the previous one.
	ErrRateLimited = errors.New("holder: forced refresh rate-limited")
	// ErrQuotaReserve: today's fetch quota is down to the reserve; only
	// scheduled refreshes go on.
	ErrQuotaReserve = errors.New("holder: daily quota down to the reserve")
	// ErrBackingOff: an earlier fetch failed and the next attempt is not
	// due yet (see AppStatus.NextAttemptAt).
	ErrBackingOff = errors.New("holder: backing off after a failed fetch")
	// ErrLostRace: the token in KV changed between read and write (another
	// leader wrote); the fetched token was discarded.
	ErrLostRace = errors.New("holder: token changed in KV during the refresh")
	// ErrRefreshUnderWay: the answer to a manual refresh was due (its
	// context ended) before the refresh ended: the leader took it up, or
	// is making another refresh of the app that replaces the stored token.
	// It goes on; token.refreshed (or token.refresh_failed) tells its
	// outcome. Not a failure.
	ErrRefreshUnderWay = errors.New("holder: the refresh is still under way")
	// ErrBusy: the answer to a manual refresh was due before the leader's
	// token loop for the app could take it up, and no refresh is under
	// way (it is waiting for NATS): the request made no refresh; ask again.
	ErrBusy = errors.New("holder: busy; the request made no refresh")
)

// answerDue is the answer to a manual refresh whose context ended first
// (ErrRefreshUnderWay, ErrBusy): msg is the one line for the requester.
type answerDue struct {
	msg  string
	errs []error // the sentinel and the context's error
}

func (e *answerDue) Error() string   { return e.msg }
func (e *answerDue) Unwrap() []error { return e.errs }

// How long a holder takes at most to answer a request on
// wxhub.token.refresh: a little less than the requester's timeout
// (events.TokenRefreshRequest.TimeoutMS), at most manualAnswerMax;
// manualAnswerDefault when the request does not say.
const (
	manualAnswerDefault = 10 * time.Second
	manualAnswerMax     = 5 * time.Minute
)

// answerWithin is how long the answer to a request whose requester waits
// ms milliseconds may take: a tenth less (between 100 ms and 1 s, at most
// half), so that it arrives in time.
func answerWithin(ms int64) time.Duration {
	d := manualAnswerDefault
	if ms > 0 {
		d = time.Duration(min(ms, manualAnswerMax.Milliseconds())) * time.Millisecond
	}
	return d - min(max(d/10, 100*time.Millisecond), time.Second, d/2)
}

// Holder keeps the global access_token of each configured app in wx_tokens.
// Create it with New and start it with Run.
type Holder struct {
	cfg   Config
	subj  events.Subjects
	log   *slog.Logger
	apps  map[string]*app
	order []string

	js     jetstream.JetStream
	tokens jetstream.KeyValue
	leases jetstream.KeyValue
	quota  jetstream.KeyValue

	started atomic.Bool
	// stopCtx is done once Run's context is: the holder is stopping. A
	// stopping holder starts no WeChat call, term or judgement, refuses
	// manual requests (not_leading: stopping), and finishes the refresh
	// under way (its token is stored) before it releases its leases.
	stopCtx  context.Context
	markStop context.CancelFunc
	replies  replyGate

	// noRelease makes Run keep its leases on return, like a crashed
	// process (tests).
	noRelease atomic.Bool
	hooks     hooks

	// fetchTimeout bounds each WeChat token call: min(the client's
	// Timeout, LeaseTTL/3). A call starts only while more than
	// fetchTimeout+fetchMargin (LeaseTTL/10) of the lease is left.
	fetchTimeout, fetchMargin time.Duration

	skew clockCheck
}

// hooks let tests pause or observe the holder at chosen points. All nil in
// production.
type hooks struct {
	leaseStep   func(appid string)              // at each step of the lease loop (a test pauses it there)
	beforeWrite func(appid string)              // just before the CAS write of a fetched token
	afterWrite  func(appid string, err error)   // result of that write
	evaluated   func(appid string)              // after each evaluation of the leader loop
	leadership  func(appid string, leader bool) // on every leadership change
	releasing   func(appid string)              // a stopping leader, just before it steps down and releases its lease
	fetching    func(appid string)              // just before every WeChat call
	fetched     func(appid string, forced bool) // after every WeChat call
	// wrapKV lets a test put faults between the holder and a bucket.
	wrapKV func(bucket string, kv jetstream.KeyValue) jetstream.KeyValue
}

// New checks cfg, reads the apps' secrets and returns a Holder.
func New(cfg Config) (*Holder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	h := &Holder{
		cfg:  cfg,
		subj: events.NewSubjects(cfg.Prefix),
		log:  cfg.Logger.With("component", "holder", "holder", cfg.ID),
		apps: make(map[string]*app, len(cfg.Apps)),
	}
	h.stopCtx, h.markStop = context.WithCancel(context.Background())
	h.skew.bound = cfg.MaxClockSkew
	h.fetchTimeout = min(cfg.WeChat.Timeout(), cfg.LeaseTTL/3)
	h.fetchMargin = cfg.LeaseTTL / 10
	for _, a := range cfg.Apps {
		secret, err := a.LoadSecret()
		if err != nil {
			return nil, err
		}
		h.apps[a.AppID] = newApp(h, a, secret)
		h.order = append(h.order, a.AppID)
	}
	return h, nil
}

// ID returns the holder's id as written in wx_leases and token records.
func (h *Holder) ID() string { return h.cfg.ID }

// open makes the holder's JetStream handle and binds its streams and
// buckets (wx_tokens, wx_leases, wx_quota). Their errors say "nats: "
// once (broker.NATSOnceJetStream, broker.NATSOnceKeyValue).
func (h *Holder) open(ctx context.Context) error {
	js, err := jetstream.New(h.cfg.Conn)
	if err != nil {
		return fmt.Errorf("holder: jetstream: %w", err)
	}
	h.js = broker.NATSOnceJetStream(js)
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	// Every stream and bucket of the holder lives in its own account in
	// both layouts (grants.StreamAccount), so the local handle reaches all.
	streams, err := broker.NewJetStreams(h.cfg.Conn, grants.Holder, false)
	if err == nil {
		err = broker.Bind(bctx, streams)
	}
	cancel()
	if err != nil {
		return fmt.Errorf("holder: %w", err)
	}
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{events.BucketTokens, &h.tokens}, {events.BucketLeases, &h.leases}, {events.BucketQuota, &h.quota}} {
		kv, err := js.KeyValue(ctx, b.name)
		if err != nil {
			return fmt.Errorf("holder: bucket %s (run wxhub provision first): %w", b.name, err)
		}
		if h.hooks.wrapKV != nil {
			kv = h.hooks.wrapKV(b.name, kv)
		}
		*b.kv = broker.NATSOnceKeyValue(kv)
	}
	return nil
}

// Run keeps the tokens until ctx is done. It needs the buckets and streams
// of package events, made by the admin (`wxhub provision`,
// broker.Provision): it waits up to 30 s for them (broker.Bind), then
// fails naming what is missing. When ctx is done it starts no WeChat call
// and finishes the refresh under way, so a token WeChat issued is stored,
// not lost (for at most the call's bound plus LeaseTTL). On return it
// has stopped every loop, answered every manual request it received, and
// released the leases it held (a lease key is deleted only if its
// revision is still ours), so a standby takes over at once. Run may be
// called once.
func (h *Holder) Run(ctx context.Context) error {
	if !h.started.CompareAndSwap(false, true) {
		return errors.New("holder: Run called twice")
	}
	defer h.markStop()
	stopWatch := context.AfterFunc(ctx, h.markStop)
	defer stopWatch()
	if err := h.open(ctx); err != nil {
		return err
	}
	sub, err := h.cfg.Conn.Subscribe(h.subj.TokenInvalidated, h.onInvalidated)
	if err != nil {
		return fmt.Errorf("holder: subscribe %s: %w", h.subj.TokenInvalidated, err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	msub, err := h.cfg.Conn.Subscribe(h.subj.TokenRefreshRequest, h.onRefreshRequest)
	if err != nil {
		return fmt.Errorf("holder: subscribe %s: %w", h.subj.TokenRefreshRequest, err)
	}
	defer func() { _ = msub.Unsubscribe() }()
	// The leases, the clock check and the watch outlive ctx until the token
	// loops are done: a refresh under way keeps its lease and is stored.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var wg, tokenLoops sync.WaitGroup
	if h.skew.bound > 0 {
		if err := h.probeClock(ctx); err != nil {
			h.log.Warn("measuring the clock offset to the NATS server failed; not leading until it succeeds", "error", err)
		}
		wg.Go(func() { h.clockLoop(runCtx) })
	}
	wg.Go(func() { h.watchTokens(runCtx) })
	for _, id := range h.order {
		a := h.apps[id]
		metrics.HolderLeader.WithLabelValues(id).Set(0)
		if !a.stable() { // the reserve applies to /cgi-bin/token fetches only
			metrics.QuotaLimit.WithLabelValues(id).Set(float64(h.cfg.QuotaDailyLimit))
			metrics.QuotaReserve.WithLabelValues(id).Set(float64(h.cfg.QuotaReserve))
		}
		for _, d := range allDecisions {
			metrics.TokenInvalidations.WithLabelValues(id, d) // every series exists from the start, at 0
		}
		tokenLoops.Go(func() { a.tokenLoop(h.stopCtx) })
		wg.Go(func() { a.leaseLoop(runCtx) })
	}
	h.log.Info("holder started", "apps", len(h.order), "lease_ttl", h.cfg.LeaseTTL)
	<-ctx.Done()
	h.finishRefreshes(&tokenLoops, cancel)
	cancel() // the lease loops step down and release
	wg.Wait()
	_ = msub.Unsubscribe()
	h.replies.closeAndWait()
	h.log.Info("holder stopped")
	return nil
}

// finishRefreshes waits for the token loops to end their refresh under way
// (its WeChat call and the write of its token), for at most the call's
// bound plus a lease TTL: a write that NATS keeps refusing while the lease
// is still renewed would hold the stop for ever. Then endTerms ends the
// terms (the lease loops step down), which gives up the write; the
// token.refresh_failed of a term that ended before the write says the
// token is lost.
func (h *Holder) finishRefreshes(tokenLoops *sync.WaitGroup, endTerms context.CancelFunc) {
	done := make(chan struct{})
	go func() { tokenLoops.Wait(); close(done) }()
	bound := h.fetchTimeout + h.cfg.LeaseTTL
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	h.log.Warn("the refresh under way did not end within the stop's bound; giving it up", "bound", bound)
	endTerms()
	<-done
}

// stopping reports whether Run's context is done.
func (h *Holder) stopping() bool { return h.stopCtx.Err() != nil }

// untilStop returns a context that is done with ctx or when the holder
// stops: for the work a stopping holder gives up (reading at the start of
// a term, counting a fetch not made yet), never for a WeChat call under
// way or the write of the token it returned.
func (h *Holder) untilStop(ctx context.Context) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(ctx)
	unwatch := context.AfterFunc(h.stopCtx, cancel)
	return c, func() { unwatch(); cancel() }
}

// replyGate counts the goroutines answering manual refresh requests, so
// that Run returns only after their answers went out.
type replyGate struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// add reports whether an answer may start (false once Run is returning).
func (g *replyGate) add() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	return true
}

func (g *replyGate) done() { g.wg.Done() }

func (g *replyGate) closeAndWait() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}

// AppStatus is what a holder knows about one app.
type AppStatus struct {
	AppID string
	Mode  string
	// Leader is true while this holder holds the app's lease.
	Leader bool
	// LeaderID is the holder id in wx_leases ("" when nobody leads).
	LeaderID string
	// Version, ExpiresAt and FetchedAt describe the token in wx_tokens
	// (zero before one is known).
	Version   uint64
	ExpiresAt time.Time
	FetchedAt time.Time
	// FetchesToday is the wx_quota count of the current China day (by
	// Config.Now) as the leader sees it; 0 from the China midnight until
	// the new day's count is read, and on a standby.
	FetchesToday int64
	// QuotaLimit and QuotaReserve are this holder's QuotaDailyLimit and
	// QuotaReserve for a token mode app (0 for stable_token apps: their
	// normal calls do not use the daily quota, their forced calls have
	// WeChat's StableForceDailyLimit).
	QuotaLimit, QuotaReserve int
	// NextAttemptAt is set while fetching is backing off after a failure.
	NextAttemptAt time.Time
	// LastError is the last fetch error (free of secrets), "" after a success.
	LastError string
	// Lockouts lists what stops refreshes of the app now, as this holder
	// sees it (the leader knows them all; a standby only not_leading and
	// clock_skew).
	Lockouts []Lockout
}

// Status returns the state of every app, in configuration order.
func (h *Holder) Status() []AppStatus {
	out := make([]AppStatus, 0, len(h.order))
	for _, id := range h.order {
		out = append(out, h.apps[id].status())
	}
	return out
}

// Ready reports whether every app has an unexpired token in wx_tokens by the
// holder's clock (a standby counts: the token is there for users).
func (h *Holder) Ready() bool {
	now := h.cfg.Now()
	for _, id := range h.order {
		rec, _ := h.apps[id].record()
		if !rec.Fresh(now, 0) {
			return false
		}
	}
	return true
}

// Refresh fetches a new token for appid now (reason manual) and waits for
// it to be stored. It works on the leader only (ErrNotLeader otherwise; a
// *RefusedError not_leading matching it when the holder is stopping: no
// refresh was made) and counts as a forced refresh: ErrRateLimited,
// ErrQuotaReserve and ErrBackingOff say why none was made. If ctx ends
// first, the error matches ctx's and ErrRefreshUnderWay (the refresh goes
// on: the leader took the request up, or makes another refresh of the
// app) or ErrBusy (the request made no refresh).
func (h *Holder) Refresh(ctx context.Context, appid string) error {
	return h.refreshUnless(ctx, appid, nil)
}

// refreshUnless is Refresh, except that with replace set a stored token
// newer than *replace answers it with no fetch: the requester's token has
// been replaced already (asking again never makes a second refresh).
func (h *Holder) refreshUnless(ctx context.Context, appid string, replace *uint64) error {
	a, ok := h.apps[appid]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownApp, appid)
	}
	switch {
	case !a.leaseValid():
		return ErrNotLeader
	case a.replaced(replace):
		return nil
	case h.stopping():
		return a.stoppingRefusal()
	}
	asked := time.Now()
	outcome := fmt.Sprintf("its outcome is announced on token.refreshed (the new version) or token.refresh_failed (see `wxhub token get --appid %s`, `wxhub status`)", appid)
	req := manualReq{replace: replace, reply: make(chan error, 1)}
	select {
	case a.manual <- req:
	case <-ctx.Done():
		waited := time.Since(asked).Round(100 * time.Millisecond)
		if reason := a.refreshUnderWay(); reason != "" {
			return &answerDue{fmt.Sprintf("refresh under way: holder %s is making a %s refresh of this app, not ended after %v; it replaces the stored token, so this request made none of its own; %s",
				h.cfg.ID, reason, waited, outcome), []error{ErrRefreshUnderWay, ctx.Err()}}
		}
		return &answerDue{fmt.Sprintf("refresh not started: holder %s's token loop for this app stayed busy for %v (waiting for NATS, see `wxhub status`): this request made no refresh; ask again",
			h.cfg.ID, waited), []error{ErrBusy, ctx.Err()}}
	case <-h.stopCtx.Done():
		return a.stoppingRefusal()
	}
	// The token loop answers every request it takes.
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return &answerDue{fmt.Sprintf("refresh under way: holder %s took the request up and its manual refresh had not ended after %v; it goes on: %s",
			h.cfg.ID, time.Since(asked).Round(100*time.Millisecond), outcome), []error{ErrRefreshUnderWay, ctx.Err()}}
	}
}

// onRefreshRequest answers manual refresh requests (wxhub.token.refresh,
// request/reply) for the apps this holder leads; standbys stay silent, so
// the requester hears from the leader only, or from nobody when no holder
// leads. The answer is the new version (or the stored one, newer than the
// request's version) or a one-line refusal naming the lockout; a leader
// that stops answers not_leading: no refresh was made, ask the next. It
// goes out within the requester's timeout (answerWithin): a refresh not
// ended by then is answered under_way, never as failed.
func (h *Holder) onRefreshRequest(m *nats.Msg) {
	var req events.TokenRefreshRequest
	if m.Reply == "" || json.Unmarshal(m.Data, &req) != nil {
		return
	}
	a, ok := h.apps[req.AppID]
	if !ok || !a.leaseValid() || !h.replies.add() {
		return
	}
	if req.Version != nil {
		a.log.Info("manual refresh requested", "requester", req.Requester, "replace", *req.Version)
	} else {
		a.log.Info("manual refresh requested", "requester", req.Requester)
	}
	go func() {
		defer h.replies.done()
		rctx, cancel := context.WithTimeout(context.Background(), answerWithin(req.TimeoutMS))
		defer cancel()
		err := h.refreshUnless(rctx, req.AppID, req.Version)
		reply := events.TokenRefreshReply{AppID: req.AppID, Holder: h.cfg.ID}
		var re *RefusedError
		var due *answerDue
		switch {
		case err == nil:
			rec, _ := a.record()
			reply.Version, reply.ExpiresAt = rec.Version, rec.ExpiresAt
		case errors.As(err, &due):
			reply.UnderWay, reply.Error = errors.Is(err, ErrRefreshUnderWay), due.msg
		case errors.As(err, &re):
			reply.Refused, reply.Until, reply.Error = re.State, re.Until, err.Error()
		case errors.Is(err, ErrNotLeader):
			reply.Refused, reply.Error = LockoutNotLeading, "refresh refused: "+LockoutNotLeading+": this holder lost the lease; ask again"
		default:
			reply.Error = "refresh failed: " + err.Error() + " (the holder retries by its rules; see `wxhub status`)"
		}
		data, _ := json.Marshal(reply)
		_ = m.Respond(data)
	}()
}

// onInvalidated receives token.invalidated on every holder; the reports are
// coalesced per app and judged by the leader's loop. A standby keeps them
// for the handover (receiveReport).
func (h *Holder) onInvalidated(m *nats.Msg) {
	var r events.TokenInvalidated
	if err := json.Unmarshal(m.Data, &r); err != nil {
		h.log.Debug("ignoring malformed token.invalidated", "error", err)
		return
	}
	a, ok := h.apps[r.AppID]
	if !ok {
		return
	}
	if !a.receiveReport(r.Version, time.Now()) {
		metrics.TokenInvalidations.WithLabelValues(r.AppID, decisionStandby).Inc()
	}
}

// watchTokens keeps every app's cached record current from wx_tokens.
func (h *Holder) watchTokens(ctx context.Context) {
	for ctx.Err() == nil {
		w, err := h.tokens.WatchAll(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return // stopping: not a failure
			}
			h.log.Warn("watch wx_tokens failed; retrying", "error", err)
			if !sleepCtx(ctx, h.cfg.LeaseTTL/3) {
				return
			}
			continue
		}
		for e := range w.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			a, ok := h.apps[e.Key()]
			if !ok {
				continue
			}
			var rec events.TokenRecord
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				h.log.Warn("unreadable record in wx_tokens", "appid", e.Key(), "error", err)
				continue
			}
			a.setRecord(rec, e.Revision())
		}
		_ = w.Stop()
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
