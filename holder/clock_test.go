package holder

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/metrics"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// A holder 10 minutes ahead and one 10 minutes behind the NATS server's
// clock measure their offset, refuse to lead (log line, metric, lockout,
// /readyz reason), and leave the app to a holder with a good clock: the
// stored expires_at is right by the server's clock, so no reader holds a
// token it believes valid after WeChat expired it. When the good holder
// dies, the skewed ones still do not lead: not_leading shows.
func TestClockSkewedHoldersRefuseToLead(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	app := e.newApp(events.ModeToken)
	skewed := func(id string, off time.Duration) Config {
		c := e.config(id, app)
		c.Now = func() time.Time { return time.Now().Add(off) }
		c.MaxClockSkew = 0 // the default bound, 30 s
		c.LeaseTTL = 2 * time.Second
		return c
	}
	// Lease-loop rounds of each skewed holder: the proof below waits for
	// rounds in which it could (wrongly) acquire, not for wall time.
	var rounds [2]atomic.Int64
	counting := func(i int) func(*Holder) {
		return func(h *Holder) { h.hooks.leaseStep = func(string) { rounds[i].Add(1) } }
	}
	ahead := e.start(skewed("ahead", 10*time.Minute), counting(0))
	behind := e.start(skewed("behind", -10*time.Minute), counting(1))
	for _, r := range []*running{ahead, behind} {
		wxhubtest.Eventually(t, 5*time.Second, r.h.ID()+" measures its clock", func() bool { _, ok := r.h.ClockOffset(); return ok })
		off, _ := r.h.ClockOffset()
		if d := off.Abs() - 10*time.Minute; d.Abs() > 5*time.Second {
			t.Errorf("%s: offset %v, want ±10m", r.h.ID(), off)
		}
		if r.h.ClockSkewError() == nil {
			t.Errorf("%s: no /readyz reason", r.h.ID())
		}
		var m dto.Metric
		_ = metrics.HolderClockOffset.WithLabelValues(r.h.ID()).Write(&m)
		if v := m.GetGauge().GetValue(); v < 590 && v > -590 {
			t.Errorf("%s: wxhub_holder_clock_offset_seconds = %v", r.h.ID(), v)
		}
		if lockoutOf(r.h.Status()[0], LockoutClockSkew) == nil {
			t.Errorf("%s: no clock_skew lockout: %+v", r.h.ID(), r.h.Status()[0].Lockouts)
		}
	}
	if !containsLog(e.logs.String(), "ERROR", "clock skew") {
		t.Error("no error log line about the clock skew")
	}
	from := [2]int64{rounds[0].Load(), rounds[1].Load()}
	wxhubtest.Eventually(t, 20*time.Second, "three more lease-loop rounds of each skewed holder", func() bool {
		return rounds[0].Load() >= from[0]+3 && rounds[1].Load() >= from[1]+3
	})
	if _, err := e.tokens.Get(context.Background(), app.AppID); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("a skewed holder stored a token (err %v)", err)
	}
	if ahead.leader(app.AppID) || behind.leader(app.AppID) || e.fetches(app.AppID) != 0 {
		t.Fatal("a skewed holder leads or fetched")
	}

	good := e.start(skewed("good", 0), nil)
	waitRefreshed(t, e, app.AppID, 1)
	rec, _ := e.record(app.AppID)
	if rec.Holder != "good" {
		t.Fatalf("token stored by %q, want good", rec.Holder)
	}
	if d := time.Until(rec.ExpiresAt) - 7200*time.Second; d.Abs() > 5*time.Second {
		t.Errorf("expires_at is %v off the server's clock", d)
	}
	if off, ok := good.h.ClockOffset(); !ok || off.Abs() > time.Second || good.h.ClockSkewError() != nil {
		t.Errorf("good holder: offset %v measured %v, skew error %v", off, ok, good.h.ClockSkewError())
	}

	good.kill(t)
	wxhubtest.Eventually(t, 10*time.Second, "not_leading shows on the skewed holders", func() bool {
		return lockoutOf(ahead.h.Status()[0], LockoutNotLeading) != nil && lockoutOf(behind.h.Status()[0], LockoutNotLeading) != nil
	})
	if ahead.leader(app.AppID) || behind.leader(app.AppID) || e.fetches(app.AppID) != 1 {
		t.Error("a skewed holder took over")
	}
}

// A clock probe's record outlives two probe intervals (probes go out
// every LeaseTTL), so the next probe replaces it before it expires: with
// a TTL equal to the interval, the server's delete marker for the
// expiring probe evicted the next one (history 1) and its read back
// failed with "key not found" every few probes. The test waits for that
// marker on a watch of the key and compares its server stamp with the
// probe's. NATS enforces the TTL in real time, so the probe's TTL (3 s,
// the least there is: 3 x LeaseTTL, LeaseTTL at least 1 s) has to pass
// once; nothing sleeps or polls.
func TestClockProbesAreReplacedBeforeTheyExpire(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	cfg := e.config("probe", e.newApp(events.ModeToken))
	cfg.LeaseTTL = time.Second
	cfg.MaxClockSkew = 0
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := h.open(ctx); err != nil {
		t.Fatal(err)
	}
	key := clockProbeKey("probe")
	w, err := h.leases.Watch(ctx, key, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	if err := h.probeClock(ctx); err != nil {
		t.Fatal(err)
	}
	var probe jetstream.KeyValueEntry
	for probe == nil {
		select {
		case e := <-w.Updates():
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				probe = e
			}
		case <-ctx.Done():
			t.Fatal("the probe never showed on the watch")
		}
	}
	for {
		select {
		case e := <-w.Updates():
			if e == nil || e.Operation() == jetstream.KeyValuePut {
				continue
			}
			if lived := e.Created().Sub(probe.Created()); lived < 2*cfg.LeaseTTL {
				t.Fatalf("the probe expired %v after it was stored, within two probe intervals (%v): the next probe would find its delete marker",
					lived, 2*cfg.LeaseTTL)
			}
			// A probe after one expired is stored and read back too.
			if err := h.probeClock(ctx); err != nil {
				t.Fatalf("probe after the expiry: %v", err)
			}
			return
		case <-ctx.Done():
			t.Fatal("no delete marker for the expired probe within 15s")
		}
	}
}
