package holder

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/metrics"
)

// DefaultMaxClockSkew bounds how far a holder's clock (Config.Now) may be
// off the NATS server's before it refuses to lead.
const DefaultMaxClockSkew = 30 * time.Second

// clockProbeKey is the wx_leases key a holder's clock probes go to. Appids
// have no dots, so it never names an app's lease.
func clockProbeKey(id string) string {
	return "clock." + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, id)
}

// clockCheck is the holder's measured offset to the NATS server's clock.
//
// A probe publishes to the holder's own key in wx_leases (with a TTL, so
// probes never pile up) and reads the stored message back: JetStream
// stamps it with the server's time when it stores it. The offset is the
// holder's clock (Config.Now) at the middle of the round trip minus that
// stamp; its error is at most half the round trip.
type clockCheck struct {
	bound time.Duration // <= 0: not checked

	mu       sync.Mutex
	measured bool
	offset   time.Duration
	rtt      time.Duration
}

func (c *clockCheck) set(offset, rtt time.Duration) (changed bool, skewed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	was := c.measured && c.skewedLocked()
	first := !c.measured
	c.measured, c.offset, c.rtt = true, offset, rtt
	now := c.skewedLocked()
	return first || was != now, now
}

func (c *clockCheck) skewedLocked() bool {
	return c.bound > 0 && (c.offset > c.bound || c.offset < -c.bound)
}

// mayLead reports whether the clock is known to be within the bound.
func (c *clockCheck) mayLead() bool {
	if c.bound <= 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.measured && !c.skewedLocked()
}

// lockout is the clock_skew lockout, or nil.
func (c *clockCheck) lockout() *Lockout {
	if c.bound <= 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !c.measured:
		return &Lockout{State: LockoutClockSkew, Detail: "clock offset to the NATS server not measured yet: not leading"}
	case c.skewedLocked():
		return &Lockout{State: LockoutClockSkew, Detail: fmt.Sprintf("this holder's clock is %v off the NATS server's (bound %v): refusing to lead; fix its time sync (NTP)",
			c.offset.Round(time.Second), c.bound)}
	}
	return nil
}

// ClockOffset returns this holder's clock minus the NATS server's as last
// measured, and whether a measurement exists.
func (h *Holder) ClockOffset() (time.Duration, bool) {
	h.skew.mu.Lock()
	defer h.skew.mu.Unlock()
	return h.skew.offset, h.skew.measured
}

// ClockSkewError is nil while the holder's clock is within MaxClockSkew of
// the NATS server's (or the check is off); else it says by how much it is
// off (for /readyz).
func (h *Holder) ClockSkewError() error {
	if l := h.skew.lockout(); l != nil {
		return fmt.Errorf("%s", l.String())
	}
	return nil
}

// probeClock measures the offset once.
func (h *Holder) probeClock(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(h.cfg.LeaseTTL/3, time.Second))
	defer cancel()
	key := clockProbeKey(h.cfg.ID)
	msg := &nats.Msg{Subject: "$KV." + events.BucketLeases + "." + key, Data: []byte(h.cfg.ID)}
	sentReal, sentClock := time.Now(), h.cfg.Now()
	// The TTL outlives the probe interval (LeaseTTL) well: a probe expiring
	// as the next is stored makes the server write a delete marker after
	// it, which (history 1) evicts the new probe before it is read back.
	// Replaced in time, a probe never expires while its holder runs.
	ack, err := h.js.PublishMsg(ctx, msg, jetstream.WithMsgTTL(3*max(h.cfg.LeaseTTL, time.Second)))
	rtt := time.Since(sentReal)
	if err != nil {
		return fmt.Errorf("holder: clock probe: %w", err)
	}
	e, err := h.leases.GetRevision(ctx, key, ack.Sequence)
	for wait := 5 * time.Millisecond; errors.Is(err, jetstream.ErrKeyNotFound); wait *= 2 {
		// On a cluster a replica may answer the read before it has the
		// probe the leader acked: ask again (the stored time is the
		// leader's, so waiting does not change the measure).
		select {
		case <-ctx.Done():
			return fmt.Errorf("holder: clock probe: read back: %w", err)
		case <-time.After(wait):
		}
		e, err = h.leases.GetRevision(ctx, key, ack.Sequence)
	}
	if err != nil {
		return fmt.Errorf("holder: clock probe: read back: %w", err)
	}
	offset := sentClock.Add(rtt / 2).Sub(e.Created())
	metrics.HolderClockOffset.WithLabelValues(h.cfg.ID).Set(offset.Seconds())
	changed, skewed := h.skew.set(offset, rtt)
	switch {
	case changed && skewed:
		h.log.Error("clock skew: this holder's clock is off the NATS server's beyond the bound; refusing to lead",
			"offset", offset.Round(time.Millisecond), "bound", h.skew.bound, "rtt", rtt.Round(time.Microsecond))
	case changed:
		h.log.Info("clock offset to the NATS server measured", "offset", offset.Round(time.Millisecond), "bound", h.skew.bound,
			"rtt", rtt.Round(time.Microsecond))
	}
	return nil
}

// clockLoop re-measures the offset every LeaseTTL until ctx ends.
func (h *Holder) clockLoop(ctx context.Context) {
	t := time.NewTicker(h.cfg.LeaseTTL)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := h.probeClock(ctx); err != nil && ctx.Err() == nil {
				h.log.Warn("measuring the clock offset to the NATS server failed", "error", err)
			}
		}
	}
}
