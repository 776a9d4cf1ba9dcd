package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers/vault"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

// A token rotation in the middle of a run, and 40001 injected by the
// simulator: no job fails, one token fetch per rotation, one report per
// rejected version per worker.
func TestTokenRotationMidRun(t *testing.T) {
	const phase = 200
	h := newHarness(t, 3*phase)
	h.holder.rotate()
	res := h.follow(events.StreamResults)
	h.sim.SetLatency(5 * time.Millisecond)
	ws := []*runningWorker{
		h.startWorker("w0", func(c *worker.Config) { c.Concurrency = 4 }),
		h.startWorker("w1", func(c *worker.Config) { c.Concurrency = 4 }),
	}
	publish := func(from int) {
		for i := from; i < from+phase; i++ {
			h.lookup(fmt.Sprintf("job-%04d", i), i)
		}
	}
	publish(0)
	res.waitIDs(t, phase/2, 30*time.Second)
	h.holder.rotate() // a scheduled rotation while jobs run: v2
	publish(phase)
	res.waitIDs(t, phase+phase/2, 30*time.Second)
	// WeChat rejects the next 5 calls: the workers report, the holder
	// refreshes once per reported version, the jobs retry.
	if err := h.sim.AddFault(wechatsim.Fault{Path: "/cgi-bin/user/info", ErrCode: 40001, Count: 5}); err != nil {
		t.Fatal(err)
	}
	publish(2 * phase)
	res.waitIDs(t, 3*phase, 60*time.Second)

	byID, total := res.snapshot()
	if total != 3*phase {
		t.Fatalf("%d results stored, want %d", total, 3*phase)
	}
	for id, rs := range byID {
		if rs[0].Subject != events.SubjectUserProfile {
			t.Fatalf("%s failed: %s", id, rs[0].Data)
		}
	}
	version, fetches, reports := h.holder.counts()
	st := h.sim.Stats()
	t.Logf("versions %d, fetches %d, reports %v, 40001 answers %d", version, fetches, reports, st.ErrCodes["40001"])
	if st.ErrCodes["40001"] != 5 {
		t.Fatalf("40001 answers: %d, want 5", st.ErrCodes["40001"])
	}
	if version < 3 {
		t.Fatalf("version %d: the 40001s caused no refresh", version)
	}
	if int64(fetches) != st.TotalCalls("/cgi-bin/token") || uint64(fetches) != version {
		t.Fatalf("fetches %d, sim token calls %d, versions %d: want one fetch per rotation, none by workers", fetches, st.TotalCalls("/cgi-bin/token"), version)
	}
	for k, n := range reports {
		if n != 1 {
			t.Errorf("report %s sent %d times", k, n)
		}
	}
	if len(reports) > 5 {
		t.Errorf("%d reports for 5 rejections", len(reports))
	}
	for _, w := range ws {
		if st := w.Stats(); st.Failed != 0 || st.Succeeded == 0 {
			t.Errorf("%s: %+v", w.ID(), st)
		}
	}
}

// A worker killed mid-job: its jobs are redelivered to another worker and
// each still has exactly one result.
func TestWorkerKilledMidJob(t *testing.T) {
	const jobs = 5
	h := newHarness(t, jobs)
	h.holder.rotate()
	res := h.follow(events.StreamResults)
	short := func(c *worker.Config) {
		c.AckWait, c.JobTimeout, c.Concurrency = 4*time.Second, 3*time.Second, jobs
	}
	// Each of the victim's calls hangs 2.5 s: a wide window in which all
	// its jobs are in flight, even on a loaded machine.
	if err := h.sim.AddFault(wechatsim.Fault{Path: "/cgi-bin/user/info", DelayMS: 2500, Count: jobs}); err != nil {
		t.Fatal(err)
	}
	a := h.startWorker("victim", short)
	for i := range jobs {
		h.lookup(fmt.Sprintf("job-%d", i), i)
	}
	wxhubtest.Eventually(t, 10*time.Second, "all jobs in flight on the victim", func() bool { return a.InFlight() == jobs })
	a.KillJobConn()
	a.nc.Close()
	b := h.startWorker("survivor", short)
	res.waitIDs(t, jobs, 20*time.Second)
	byID, total := res.snapshot()
	if total != jobs {
		t.Fatalf("%d results for %d jobs: %v", total, jobs, byID)
	}
	for id, rs := range byID {
		if len(rs) != 1 || rs[0].Subject != events.SubjectUserProfile {
			t.Fatalf("%s: %+v", id, rs)
		}
		if d := profileOf(t, rs[0]); d.JobID != id {
			t.Fatalf("result %s for %s", d.JobID, id)
		}
	}
	if st := a.Stats(); st.Succeeded != 0 {
		t.Fatalf("victim published %d results after its death", st.Succeeded)
	}
	// The stream may show a result before its publisher got the ack.
	wxhubtest.Eventually(t, 5*time.Second, "survivor's publishes acknowledged", func() bool { return b.Stats().Succeeded == jobs })
}

// SIGTERM (context cancelled): the jobs in flight finish, nothing new is
// taken, Run returns nil, and the rest is handled at once by another
// worker (no AckWait wait), also on a cluster of three, where the
// consumer's leader is often on another server than the worker.
func TestGracefulStop(t *testing.T) {
	brokertest.OneAndThree(t, func(t *testing.T, env *brokertest.Env) { gracefulStop(t, newHarnessOn(t, env, 12)) })
}

func gracefulStop(t *testing.T, h *harness) {
	const jobs = 12
	h.holder.rotate()
	res := h.follow(events.StreamResults)
	h.sim.SetLatency(300 * time.Millisecond)
	a := h.startWorker("a", func(c *worker.Config) { c.Concurrency = 4 })
	for i := range jobs {
		h.lookup(fmt.Sprintf("job-%02d", i), i)
	}
	wxhubtest.Eventually(t, 10*time.Second, "4 jobs in flight", func() bool { return a.InFlight() == 4 })
	if err := a.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := a.InFlight(); n != 0 {
		t.Fatalf("%d in flight after Run returned", n)
	}
	done := a.Stats().Succeeded
	if done < 4 {
		t.Fatalf("only %d jobs finished; the 4 in flight should have", done)
	}
	// The results stream is read asynchronously: wait until it shows the
	// finished jobs before comparing.
	res.waitIDs(t, int(done), 5*time.Second)
	_, total := res.snapshot()
	if int64(total) != done {
		t.Fatalf("%d results stored, worker finished %d", total, done)
	}
	h.sim.SetLatency(0)
	start := time.Now()
	h.startWorker("b", nil)
	res.waitIDs(t, jobs, 8*time.Second) // AckWait is 10 s: nothing waited for it
	byID, total := res.snapshot()
	if total != jobs || len(byID) != jobs {
		t.Fatalf("%d stored, %d distinct, want %d", total, len(byID), jobs)
	}
	t.Logf("a finished %d, b the rest in %s", done, time.Since(start))
}

func TestConfigValidate(t *testing.T) {
	h := newHarness(t, 0)
	base := func() worker.Config {
		return worker.Config{Conn: h.env.NC, WeChat: h.wc, Apps: []worker.App{{AppID: testApp, Secret: testSecret}}}
	}
	// Vaults whose refresh may take 15 s (the default 10 s of retries and
	// this client's 5 s timeout) and 14 s.
	ring := testRing(t)
	fits, short := openTestVault(t, h, ring, 15*time.Second), openTestVault(t, h, ring, 14*time.Second)
	withVault := func(v *vault.Vault) func(*worker.Config) {
		return func(c *worker.Config) { c.Vault, c.Apps[0].Vault = v, true }
	}
	tests := []struct {
		name    string
		mod     func(*worker.Config)
		wantErr string
	}{
		{"defaults", func(*worker.Config) {}, ""},
		{"no conn", func(c *worker.Config) { c.Conn = nil }, "Conn"},
		{"no apps", func(c *worker.Config) { c.Apps = nil }, "app"},
		{"no secret is fine (OAuth jobs end as config)", func(c *worker.Config) { c.Apps[0].Secret = "" }, ""},
		{"no appid", func(c *worker.Config) { c.Apps[0].AppID = "" }, "appid"},
		{"job timeout above ack wait", func(c *worker.Config) { c.AckWait, c.JobTimeout = time.Second, 2*time.Second }, "AckWait"},
		{"max ack pending below concurrency", func(c *worker.Config) { c.Concurrency, c.MaxAckPending = 100, 10 }, "MaxAckPending"},
		{"vault refresh timeout covers the retries and the HTTP timeout", withVault(fits), ""},
		{"vault refresh timeout shorter than the retries and the HTTP timeout", withVault(short), "RefreshTimeout of at least 15s"},
		{"vault refresh timeout shorter than longer retries", func(c *worker.Config) {
			withVault(fits)(c)
			c.RetryMaxElapsed = 11 * time.Second
		}, "RetryMaxElapsed (11s)"},
		{"shorter retries fit a shorter vault refresh timeout", func(c *worker.Config) {
			withVault(short)(c)
			c.RetryMaxElapsed = 9 * time.Second
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.mod(&c)
			_, err := worker.New(c)
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("New: %v, want error containing %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), testSecret) {
				t.Fatal("secret in error")
			}
		})
	}
}

// testRing is a keyring of one new key.
func testRing(t *testing.T) *vault.Keyring {
	t.Helper()
	line, err := vault.NewKeyLine("k1")
	if err != nil {
		t.Fatal(err)
	}
	ring, err := vault.ParseKeyring(line)
	if err != nil {
		t.Fatal(err)
	}
	return ring
}

// openTestVault opens the harness's vault with the given RefreshTimeout.
func openTestVault(t *testing.T, h *harness, ring *vault.Keyring, refreshTimeout time.Duration) *vault.Vault {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := vault.Open(ctx, h.env.JS, ring, vault.Options{RefreshTimeout: refreshTimeout})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestTokenCacheWaitNewer(t *testing.T) {
	c := worker.NewTokenCache(testLogger(t))
	if _, ok := c.Current(testApp); ok {
		t.Fatal("empty cache has a token")
	}
	got := make(chan events.TokenRecord, 1)
	go func() {
		rec, err := c.WaitNewer(context.Background(), testApp, 1)
		if err != nil {
			t.Error(err)
		}
		got <- rec
	}()
	c.Set(events.TokenRecord{AppID: testApp, AccessToken: "t1", Version: 1})
	select {
	case <-got:
		t.Fatal("version 1 woke a wait for newer than 1")
	case <-time.After(50 * time.Millisecond):
	}
	c.Set(events.TokenRecord{AppID: testApp, AccessToken: "t2", Version: 2})
	if rec := <-got; rec.Version != 2 || rec.AccessToken != "t2" {
		t.Fatalf("woke with %+v", rec)
	}
	c.Set(events.TokenRecord{AppID: testApp, AccessToken: "old", Version: 1})
	if rec, _ := c.Current(testApp); rec.Version != 2 {
		t.Fatalf("an older version replaced the newer: %+v", rec)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.WaitNewer(ctx, testApp, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitNewer without a newer token: %v", err)
	}
}

// A job waiting for a slot on its last delivery when the worker stops is
// run within the grace, not nak'd: JetStream counted that delivery, so a
// nak would end the job untried (a timeout failure).
func TestStopRunsALastDeliveryWaitingForASlot(t *testing.T) {
	const jobs = 3
	h := newHarness(t, jobs)
	h.holder.rotate()
	res := h.follow(events.StreamResults)
	h.sim.SetLatency(time.Second)
	a := h.startWorker("a", func(c *worker.Config) { c.Concurrency, c.MaxDeliver = 2, 1 })
	for i := range jobs {
		h.lookup(fmt.Sprintf("job-%d", i), i)
	}
	wxhubtest.Eventually(t, 10*time.Second, "2 jobs in work and 1 waiting for a slot", func() bool { return a.InFlight() == 2 && a.Held() == jobs })
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	res.waitIDs(t, jobs, 20*time.Second)
	byID, _ := res.snapshot()
	for id, rs := range byID {
		if rs[0].Subject != events.SubjectUserProfile {
			f := failureOf(t, rs[0])
			t.Errorf("%s: %s %q, want its profile", id, f.Error.Kind, f.Error.ErrMsg)
		}
	}
}
