package wechatsim

import (
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentUse hammers every part of the simulator at once; run it
// with -race. It checks invariants that break under lost updates: each code
// is exchanged exactly once, and every successful token fetch is counted.
func TestConcurrentUse(t *testing.T) {
	h := newHarness(t)
	seedUsers(t, h)
	const workers, rounds = 8, 40
	codes := make([]string, rounds)
	for i := range codes {
		codes[i] = h.code(testApp, plainFollower.OpenID, ScopeUserInfo)
	}
	var fetched, exchanged, used atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds*4)
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				a := h.get(PathToken, url.Values{"grant_type": {"client_credential"}, "appid": {testApp}, "secret": {testSecret}})
				if a.errcode() == 0 {
					fetched.Add(1)
				}
				if tok := h.sim.ValidToken(testApp); tok != "" {
					if ui := h.get(PathUserInfo, url.Values{"access_token": {tok}, "openid": {fullFollower.OpenID}}); ui.errcode() != 0 {
						errs <- fmt.Errorf("user/info with the newest token: %s", ui.raw)
					}
				}
				h.stable(otherApp, otherSec, w%2 == 0)
				// Two workers race for each code: exactly one must win.
				if w < 2 {
					switch ex := h.exchange(testApp, testSecret, codes[i]); ex.errcode() {
					case 0:
						exchanged.Add(1)
					case 40163:
						used.Add(1)
					default:
						errs <- fmt.Errorf("exchange: %s", ex.raw)
					}
				}
				switch w {
				case 2:
					_ = h.sim.AddFault(Fault{Path: PathAPIDomainIP, ErrCode: -1, Count: 1})
					h.get(PathAPIDomainIP, nil)
					h.sim.ClearFaults()
				case 3:
					_ = h.sim.Stats()
					h.get("/_sim/stats", nil)
				case 4:
					f := plainFollower
					f.Remark = fmt.Sprint(i)
					if err := h.sim.AddFollower(testApp, f); err != nil {
						errs <- err
					}
					h.sim.SetBoundToOpenPlatform(testApp, i%2 == 0)
				case 5:
					h.clock.Advance(time.Millisecond)
					h.sim.SetLatency(0)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if exchanged.Load() != rounds || used.Load() != rounds {
		t.Fatalf("codes: %d exchanged, %d refused as used; want %d each", exchanged.Load(), used.Load(), rounds)
	}
	if got := h.sim.Stats().TokensIssued[testApp]; got != fetched.Load() || got != workers*rounds {
		t.Fatalf("tokens issued %d, fetched %d, want %d", got, fetched.Load(), workers*rounds)
	}
	if got := h.sim.Stats().CallCount(PathToken, testApp); got != workers*rounds {
		t.Fatalf("token calls counted %d", got)
	}
}
