package holder

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/cas"
	"github.com/wxhub/wxhub/internal/metrics"
)

// whyStopping is the step-down reason of a holder that stops.
const whyStopping = "stopping"

// leaseLoop competes for and keeps the app's lease in wx_leases.
//
// Acquire: kv.Create with a per-key TTL (the bucket has LimitMarkerTTL).
// Renew: every LeaseTTL/3, a publish to the key's subject that expects the
// lease's last revision and carries the TTL again (kv.Update cannot set a
// TTL, and an update without one would make the lease eternal). Standbys
// watch the key: the TTL expiry or a release shows up as a delete/purge
// marker, and they try Create at once; a periodic retry is the safety net.
func (a *app) leaseLoop(ctx context.Context) {
	cfg := &a.h.cfg
	var cancelTerm context.CancelFunc
	stepDown := func(why string) {
		a.mu.Lock()
		was := a.leader
		a.leader, a.leaseRev, a.term = false, 0, nil
		a.mu.Unlock()
		if cancelTerm != nil {
			cancelTerm()
			cancelTerm = nil
		}
		if was {
			metrics.HolderLeader.WithLabelValues(a.id).Set(0)
			// A stop is the one planned step-down: Info, so that a clean
			// shutdown logs no warning. Every other reason means the lease
			// was lost and deserves an operator's look.
			level := slog.LevelWarn
			if why == whyStopping {
				level = slog.LevelInfo
			}
			a.log.Log(context.Background(), level, "stepped down as token leader", "why", why)
			if f := a.h.hooks.leadership; f != nil {
				f(a.id, false)
			}
		}
	}
	becomeLeader := func(rev uint64, sent time.Time) {
		termCtx, cancel := context.WithCancel(ctx)
		cancelTerm = cancel
		a.mu.Lock()
		a.leader, a.leaseRev, a.validUntil, a.leaderID, a.term = true, rev, a.leaseDeadline(sent), a.h.cfg.ID, termCtx
		a.dropReportsLocked(time.Now()) // the handover's reports are judged in this term, older ones are not
		a.mu.Unlock()
		metrics.HolderLeader.WithLabelValues(a.id).Set(1)
		a.log.Info("became token leader", "lease_revision", rev)
		if f := a.h.hooks.leadership; f != nil {
			f(a.id, true)
		}
		select {
		case a.termCh <- struct{}{}:
		default:
		}
	}
	tryAcquire := func() {
		if !a.h.skew.mayLead() || a.h.stopping() {
			return // clock skew: refuse to lead (logged by the probe); or stopping
		}
		sent := time.Now()
		rev, err := a.h.leases.Create(ctx, a.id, []byte(cfg.ID), jetstream.KeyTTL(cfg.LeaseTTL))
		switch {
		case err == nil:
			becomeLeader(rev, sent)
		case cas.Lost(err): // another holder leads (over a marker, a replicated bucket answers 10164, bare)
		case ctx.Err() == nil:
			a.log.Warn("lease acquire failed", "error", err)
		}
	}
	// renew runs on its own goroutine (the loop keeps watching the
	// lease's deadline meanwhile) and gives up when the lease could lapse.
	type renewal struct {
		rev  uint64 // the revision the renewal expected
		ack  *jetstream.PubAck
		sent time.Time
		err  error
	}
	renewed := make(chan renewal, 1)
	renewing := false
	renew := func() {
		renewing = true
		a.mu.Lock()
		rev, until := a.leaseRev, a.validUntil
		a.mu.Unlock()
		go func() {
			rctx, cancel := context.WithDeadline(ctx, until)
			defer cancel()
			sent := time.Now()
			msg := &nats.Msg{Subject: "$KV." + events.BucketLeases + "." + a.id, Data: []byte(cfg.ID)}
			ack, err := a.h.js.PublishMsg(rctx, msg,
				jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(cfg.LeaseTTL))
			renewed <- renewal{rev, ack, sent, err}
		}()
	}
	onRenewed := func(r renewal) {
		renewing = false
		a.mu.Lock()
		current := a.leader && a.leaseRev == r.rev
		a.mu.Unlock()
		switch {
		case !current: // a renewal of an earlier term
		case r.err == nil:
			a.mu.Lock()
			if a.leader {
				a.leaseRev, a.validUntil = r.ack.Sequence, a.leaseDeadline(r.sent)
			}
			a.mu.Unlock()
		case cas.Lost(r.err):
			stepDown("lease revision moved (another holder took over)")
		case ctx.Err() != nil:
		default:
			a.log.Warn("lease renewal failed", "error", r.err)
			if !a.leaseValid() {
				stepDown("lease could not be renewed in time")
			}
		}
	}

	defer func() {
		a.mu.Lock()
		held, rev := a.leader, a.leaseRev
		a.mu.Unlock()
		if f := a.h.hooks.releasing; f != nil && held {
			f(a.id)
		}
		stepDown(whyStopping)
		if held && !a.h.noRelease.Load() {
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err := a.h.leases.Purge(rctx, a.id, jetstream.LastRevision(rev), jetstream.PurgeTTL(time.Minute))
			if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				a.log.Warn("lease release failed", "error", err)
			} else if err == nil {
				a.log.Info("lease released")
			}
		}
	}()

	var updates <-chan jetstream.KeyValueEntry
	var w jetstream.KeyWatcher
	defer func() {
		if w != nil {
			_ = w.Stop()
		}
	}()
	check := time.NewTicker(cfg.CheckInterval)
	defer check.Stop()
	renewEvery := cfg.LeaseTTL / 3
	renewT := time.NewTimer(renewEvery)
	defer renewT.Stop()
	lastTry := time.Time{}
	// deadline fires when the lease may lapse: the leader steps down then,
	// before the server's TTL ends, however slow a renewal is.
	deadline := time.NewTimer(time.Hour)
	defer deadline.Stop()

	for {
		if f := a.h.hooks.leaseStep; f != nil {
			f(a.id)
		}
		if updates == nil {
			var err error
			if w, err = a.h.leases.Watch(ctx, a.id); err == nil {
				updates = w.Updates()
			} else if ctx.Err() == nil {
				a.log.Warn("watch wx_leases failed; retrying", "error", err)
			}
		}
		a.mu.Lock()
		leader, leaderID, until := a.leader, a.leaderID, a.validUntil
		a.mu.Unlock()
		if leader {
			deadline.Reset(time.Until(until))
		}
		if !leader && (leaderID == "" || time.Since(lastTry) >= renewEvery) && time.Since(lastTry) >= cfg.CheckInterval/2 {
			lastTry = time.Now()
			tryAcquire()
		}
		select {
		case <-ctx.Done():
			return
		case e, ok := <-updates:
			if !ok {
				updates, w = nil, nil
				continue
			}
			if e == nil {
				continue
			}
			a.onLeaseEntry(e, stepDown)
			if e.Operation() != jetstream.KeyValuePut {
				lastTry = time.Time{} // free: try at once
			}
		case <-check.C:
			if leader && !a.leaseValid() {
				stepDown("lease lapsed before it could be renewed")
			}
			if leader && !a.h.skew.mayLead() {
				a.mu.Lock()
				rev := a.leaseRev
				a.mu.Unlock()
				stepDown("clock skew beyond the bound")
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_ = a.h.leases.Purge(rctx, a.id, jetstream.LastRevision(rev), jetstream.PurgeTTL(time.Minute))
				cancel()
			}
			a.lockoutMetric()
		case <-deadline.C:
			if leader && !a.leaseValid() {
				stepDown("lease lapsed before it could be renewed")
			}
		case r := <-renewed:
			onRenewed(r)
		case <-renewT.C:
			renewT.Reset(renewEvery)
			if leader && !renewing {
				renew()
			}
		}
	}
}

// onLeaseEntry follows who holds the lease.
func (a *app) onLeaseEntry(e jetstream.KeyValueEntry, stepDown func(string)) {
	a.mu.Lock()
	leader, rev := a.leader, a.leaseRev
	if e.Operation() == jetstream.KeyValuePut {
		a.leaderID = string(e.Value())
		if a.leaderID != a.h.cfg.ID {
			a.sawOther = true
		}
	} else {
		a.leaderID = ""
	}
	a.mu.Unlock()
	switch {
	case !leader:
	case e.Operation() == jetstream.KeyValuePut && string(e.Value()) != a.h.cfg.ID:
		stepDown("another holder holds the lease")
	case e.Operation() != jetstream.KeyValuePut && e.Revision() > rev:
		stepDown("lease expired or was removed")
	}
}

// leaseDeadline is when a lease renewed at sent may have lapsed: the server
// starts the TTL when it stores the message, after sent; we stop trusting
// it a little earlier still.
func (a *app) leaseDeadline(sent time.Time) time.Time {
	ttl := a.h.cfg.LeaseTTL
	return sent.Add(ttl - ttl/10)
}
