package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers"
)

// Worker consumes jobs and publishes their results. Make one with New and
// start it with Run.
type Worker struct {
	cfg      Config
	subjects events.Subjects
	streams  *broker.JetStreams  // the handle of each stream the worker uses
	js       jetstream.JetStream // streams.Local(): the worker's buckets, and publishes
	tokens   *TokenCache
	inval    *Invalidator
	h        *handlers.Handlers
	log      *slog.Logger

	consumers  map[string]jetstream.Consumer // by subject
	jobs       *jobSubscriber
	inflight   *counter     // deliveries held and not yet settled
	working    atomic.Int64 // jobs being worked on (slots taken)
	stopping   atomic.Bool
	hardStop   context.Context
	hardCancel context.CancelFunc
	ready      atomic.Bool
	started    atomic.Bool

	reaper *reaper // jobs that used all their deliveries
	done   *KVDoneStore
}

// New checks cfg and returns a Worker; nothing happens on NATS until Run.
func New(cfg Config) (*Worker, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	streams, err := broker.NewJetStreams(cfg.Conn, grants.Worker, cfg.Accounts)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	// wx_oauth, wx_done and wx_vault live in the worker's own account;
	// results, dead letters and token.invalidated are subject publishes,
	// which cross accounts by their imports. Only WX_JOBS and wx_tokens
	// are reached through another account's API (streams.For).
	js := broker.NATSOnceJetStream(streams.Local()) // refusals say "nats: " once
	log := cfg.Logger.With("worker", cfg.ID)
	if why := cfg.shortWindow(); why != "" {
		log.Warn("worker: " + why)
	}
	w := &Worker{
		cfg:      cfg,
		subjects: events.NewSubjects(cfg.Prefix),
		streams:  streams,
		js:       js,
		tokens:   NewTokenCache(log),
		inval:    NewInvalidator(js, cfg.Prefix, cfg.ID, cfg.InvalidateInterval),
		log:      log,
		inflight: newCounter(),
	}
	w.hardStop, w.hardCancel = context.WithCancel(context.Background())
	w.reaper = newReaper(w)
	w.done = NewKVDoneStore(js)
	w.h, err = handlers.New(handlers.Config{
		WeChat:          cfg.WeChat,
		Tokens:          w.tokens,
		Invalidator:     w.inval,
		Publisher:       NewPublisher(js),
		OAuth:           NewKVOAuthStore(js),
		Done:            w.done,
		Vault:           cfg.Vault,
		Apps:            cfg.Apps,
		Prefix:          cfg.Prefix,
		MaxDeliver:      cfg.MaxDeliver,
		JobTimeout:      cfg.JobTimeout,
		TokenWait:       cfg.TokenWait,
		RetryInitial:    cfg.RetryInitial,
		RetryMax:        cfg.RetryMax,
		RetryMaxElapsed: cfg.RetryMaxElapsed,
		NakDelayMin:     cfg.NakDelayMin,
		NakDelayMax:     cfg.NakDelayMax,
		FinishTimeout:   cfg.FinishTimeout,
		Fault:           cfg.Fault,
		Reporter:        cfg.ID,
		Logger:          log,
		Now:             cfg.Now,
	})
	if err != nil {
		return nil, err
	}
	return w, nil
}

// ID returns the worker's id.
func (w *Worker) ID() string { return w.cfg.ID }

// Tokens returns the worker's in-memory token cache.
func (w *Worker) Tokens() *TokenCache { return w.tokens }

// jobsJS is the handle that reaches WX_JOBS and its durables.
func (w *Worker) jobsJS() jetstream.JetStream { return w.streams.For(events.StreamJobs) }

// Stats returns what this worker's handlers did so far.
func (w *Worker) Stats() handlers.Stats { return w.h.Stats() }

// InFlight returns the number of jobs being worked on now (at most
// Concurrency).
func (w *Worker) InFlight() int { return int(w.working.Load()) }

// Ready reports whether the worker can do its work: ReadyError is nil.
func (w *Worker) Ready() bool { return w.ReadyError() == nil }

// ReadyError is nil when the worker has loaded the tokens, takes jobs,
// and holds no app's token past its expires_at (handlers.TokenExpired:
// a margin past it, so readiness does not turn on clock differences);
// else it says why not, naming the apps, versions and expiry times (for
// /readyz; never a token). An app with an expired token wraps
// handlers.ErrNoFreshToken: its jobs wait for a newer token and fail
// until a holder refreshes it.
func (w *Worker) ReadyError() error {
	select {
	case <-w.tokens.Ready():
	default:
		return errors.New("tokens not loaded yet")
	}
	if !w.ready.Load() {
		return errors.New("not consuming jobs yet")
	}
	return w.expiredTokens(w.cfg.Now())
}

// expiredTokens names the configured apps whose token is past its
// expires_at at now, wrapping handlers.ErrNoFreshToken; nil when none is.
func (w *Worker) expiredTokens(now time.Time) error {
	var expired []string
	for _, a := range w.cfg.Apps {
		if rec, ok := w.tokens.Current(a.AppID); ok && handlers.TokenExpired(rec, now) {
			expired = append(expired, fmt.Sprintf("%s version %d expired at %s", a.AppID, rec.Version, rec.ExpiresAt.UTC().Format(time.RFC3339)))
		}
	}
	if len(expired) == 0 {
		return nil
	}
	return fmt.Errorf("%w (%s)", handlers.ErrNoFreshToken, strings.Join(expired, "; "))
}

// Run binds to the streams, buckets and durable consumers (made by
// Provision or `wxhub provision`; it fails naming what is missing, or a
// consumer whose AckWait or MaxDeliver differ from cfg's), then handles
// jobs until ctx is cancelled. Then it stops taking jobs (new deliveries
// are nak'd for other processes), lets the jobs in flight finish for up to
// ShutdownGrace, cancels the rest (nak'd for immediate redelivery, or a
// retryable failure on their last delivery), closes the router and
// returns nil. It returns an error if it cannot start, or if the router
// stops on its own. Run may be called once.
func (w *Worker) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("worker: Run called twice")
	}
	defer w.hardCancel()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := broker.Bind(pctx, w.streams)
	if err == nil {
		err = w.ensureConsumers(pctx)
	}
	cancel()
	if err != nil {
		return err
	}

	watchCtx, stopWatch := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		w.watchTokens(watchCtx)
	}()
	defer func() { stopWatch(); <-watchDone }()

	// Jobs are pulled and acked on Config.Conn too: one connection, as a
	// hand-written nats.go worker has. A second connection for jobs cost
	// 10-25% of jobs/s at 0 ms (wxbench -quick): each connection flushes
	// its own writes, so the ack of one job and the publishes and KV calls
	// of others no longer share a socket write.
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	sub, err := newJobSubscriber(bctx, w, w.cfg.Conn)
	cancel()
	if err != nil {
		return err
	}
	defer sub.Close() // whatever ends Run: no consumer keeps pulling on the connection
	w.jobs = sub
	wmLog := newWMLogger(w.log)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: w.cfg.ShutdownGrace + 15*time.Second}, wmLog)
	if err != nil {
		return fmt.Errorf("worker: router: %w", err)
	}
	// Only the settling middleware: the handlers default a job's
	// correlation id themselves (handlers.CorrelationID would scan every
	// job's body a second time to do the same).
	router.AddMiddleware(w.settleMiddleware)
	for _, hd := range []struct {
		subject string
		fn      message.NoPublishHandlerFunc
	}{
		{w.subjects.UserLookup, w.h.UserLookup},
		{w.subjects.OAuthCodeReceived, w.h.OAuthCode},
		{w.subjects.OAuthUserInfo, w.h.OAuthUserInfo},
	} {
		router.AddNoPublisherHandler(hd.subject, hd.subject, sub, hd.fn)
	}

	// Jobs whose worker died on their last delivery: hear the advisories
	// (before the first pull: a pull can be what makes the server give
	// up on a job), sweep for the ones nobody heard.
	advSub, err := w.reaper.subscribe()
	if err != nil {
		return err
	}
	reapCtx, stopReap := context.WithCancel(context.Background())
	reapDone := make(chan struct{})
	go func() {
		defer close(reapDone)
		w.reaper.run(reapCtx, w.cfg.SweepInterval)
	}()
	defer func() {
		_ = advSub.Unsubscribe()
		stopReap()
		<-reapDone
	}()

	routerErr := make(chan error, 1)
	go func() { routerErr <- router.Run(context.Background()) }()
	select {
	case <-router.Running():
	case err := <-routerErr:
		return fmt.Errorf("worker: router: %w", err)
	}
	w.ready.Store(true)
	w.log.Info("worker running", "subjects", w.subjects.Jobs(),
		"concurrency", w.cfg.Concurrency, "ack_wait", w.cfg.AckWait, "max_deliver", w.cfg.MaxDeliver)

	select {
	case <-ctx.Done():
	case err := <-routerErr:
		w.ready.Store(false)
		if err == nil {
			err = errors.New("all handlers stopped")
		}
		return fmt.Errorf("worker: router stopped: %w", err)
	}
	w.stop(router, routerErr)
	return nil
}

// stop is the graceful part of Run.
func (w *Worker) stop(router *message.Router, routerErr <-chan error) {
	w.ready.Store(false)
	w.stopping.Store(true)
	w.jobs.drain() // no more pulls; anything already here is nak'd
	n := w.inflight.load()
	w.log.Info("worker stopping", "in_flight", n, "grace", w.cfg.ShutdownGrace)
	grace := time.NewTimer(w.cfg.ShutdownGrace)
	defer grace.Stop()
	select {
	case <-w.inflight.wait():
	case <-grace.C:
		w.log.Warn("grace period over: cancelling the jobs in flight", "in_flight", w.inflight.load())
		w.hardCancel()
		late := time.NewTimer(10 * time.Second)
		defer late.Stop()
		select {
		case <-w.inflight.wait():
		case <-late.C:
			w.log.Error("jobs still in flight after cancellation; they will be redelivered after AckWait", "in_flight", w.inflight.load())
		}
	}
	w.hardCancel()
	if err := router.Close(); err != nil {
		w.log.Warn("closing the router", "err", err)
	}
	<-routerErr
	w.log.Info("worker stopped", "stats", w.h.Stats())
}

// watchTokens keeps the token cache fed (TokenCache.FollowBucket): the
// configured apps' records, from wx_tokens in the holders' account.
func (w *Worker) watchTokens(ctx context.Context) {
	appids := make([]string, len(w.cfg.Apps))
	for i, a := range w.cfg.Apps {
		appids[i] = a.AppID
	}
	w.tokens.FollowBucket(ctx, w.streams.Bucket(events.BucketTokens), w.cfg.Conn, w.subjects.TokenRefreshed, appids, w.cfg.TokenPoll)
}
