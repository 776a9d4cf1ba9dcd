package vault_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers/vault"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat"
)

// "20 callers after an earlier refresh, 1 refresh, 0 errors", also on a
// bucket replicated over three servers, as production runs it.
//
// After a refresh the user's lock key holds the release's purge marker
// (for a minute; a lapsed lock leaves a marker too), so taking the lock
// again is a write expecting the marker's revision. Of the callers that
// race for it on a replicated bucket JetStream answers most losers with
// error 10164, which nats.go's Create passes on bare, not as
// ErrKeyExists; a loser must wait for the winner's record like every
// other, not fail with "refresh lock".
func TestFreshTwentyCallersAfterAnEarlierRefreshOneRefresh(t *testing.T) {
	t.Parallel()
	brokertest.OneAndThree(t, func(t *testing.T, env *brokertest.Env) {
		t.Parallel()
		c := &clock{now: time.Now()}
		ctx := context.Background()
		k := ring(t, keyLine(t, "k1"))
		js2, err := jetstream.New(env.Conn(t)) // a second process
		if err != nil {
			t.Fatal(err)
		}
		va, vb := openVault(t, env.JS, k, c), openVault(t, js2, k, c)
		if _, err := va.Store(ctx, "wxapp", "oAlice", tokens(c, 1)); err != nil {
			t.Fatal(err)
		}
		var calls atomic.Int32
		refresh := func(_ context.Context, rt string) (wechat.OAuthToken, error) {
			n := calls.Add(1)
			return wechat.OAuthToken{AccessToken: tokens(c, 100+int(n)).AccessToken, ExpiresIn: 2 * time.Hour, RefreshToken: rt, OpenID: "oAlice"}, nil
		}
		req := vault.FreshRequest{AppID: "wxapp", OpenID: "oAlice", RefreshTTL: time.Hour, Refresh: refresh}
		c.Advance(3 * time.Hour)
		if _, refreshed, err := va.Fresh(ctx, req); err != nil || !refreshed {
			t.Fatalf("the earlier refresh: refreshed=%v err=%v", refreshed, err)
		}
		c.Advance(3 * time.Hour) // expired again; the lock key holds the release's marker

		start := make(chan struct{})
		var wg sync.WaitGroup
		var refreshedCount atomic.Int32
		errs := make(chan error, 20)
		for i := range 20 {
			v := va
			if i%2 == 1 {
				v = vb
			}
			wg.Go(func() {
				<-start
				rec, refreshed, err := v.Fresh(ctx, req)
				if err != nil {
					errs <- err
					return
				}
				if refreshed {
					refreshedCount.Add(1)
				}
				if want := tokens(c, 102).AccessToken; rec.Tokens.AccessToken != want {
					t.Errorf("got access token %s, want the second refresh's %s", wechat.Fingerprint(rec.Tokens.AccessToken), wechat.Fingerprint(want))
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if calls.Load() != 2 || refreshedCount.Load() != 1 {
			t.Fatalf("%d refresh calls after the earlier one, %d callers refreshed; want 1 and 1", calls.Load()-1, refreshedCount.Load())
		}
	})
}

// serverConns opens a connection to each server of a replicated env on
// its own (no fail-over), so that a test reaches the followers as well as
// the leader: a KV direct get is answered by the replica on the
// connection's server.
func serverConns(t *testing.T, env *brokertest.Env) []jetstream.JetStream {
	t.Helper()
	var out []jetstream.JetStream
	for _, u := range strings.Split(env.URL, ",") {
		nc, err := broker.Connect(broker.ConnConfig{URL: u, Name: t.Name()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, js)
	}
	return out
}

// busy keeps every CPU busy until stop is closed: on a loaded machine a
// follower's applying of the last write is scheduled late, and a read
// it answers meanwhile misses the write (on an idle one it rarely does).
func busy(t *testing.T, stop <-chan struct{}) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	for range runtime.NumCPU() {
		wg.Go(func() {
			for x := 0; ; x++ {
				select {
				case <-stop:
					return
				default:
				}
				for i := range 1 << 16 {
					x ^= i
				}
			}
		})
	}
}

// spyReads counts the JetStream API requests that read the vault's
// bucket, from every connection: reads through the stream's leader
// (STREAM.MSG.GET) and direct gets, which any replica answers.
func spyReads(t *testing.T, env *brokertest.Env) (leader, direct *atomic.Int64) {
	t.Helper()
	nc := env.Conn(t)
	leader, direct = new(atomic.Int64), new(atomic.Int64)
	for subj, n := range map[string]*atomic.Int64{
		jetstream.DefaultAPIPrefix + "STREAM.MSG.GET.KV_" + events.BucketVault:    leader,
		jetstream.DefaultAPIPrefix + "DIRECT.GET.KV_" + events.BucketVault + ".>": direct,
		jetstream.DefaultAPIPrefix + "DIRECT.GET.KV_" + events.BucketVault:        direct,
	} {
		if _, err := nc.Subscribe(subj, func(*nats.Msg) { n.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return leader, direct
}

// "360 Gets right after a Store see it, 0 asked of a follower", from
// every server of a bucket replicated over three, 6 writers on each, on
// a busy machine: a Get right after a Store in the same process returns
// that Store's revision (not "no record", not the one before), and a
// StoreIf on the revision that Get returned wins. A follower answers KV
// direct gets (the bucket has AllowDirect, as nats.go makes every
// bucket) from its own copy, which may not have applied the last write
// yet; the vault reads through the stream's leader. A follower lags
// only now and then, so the Gets alone would catch a vault that reads
// from followers in some runs only; every one of the Gets is also seen
// on its way (a STREAM.MSG.GET, which only the leader answers; no
// direct get), which catches it in every run. The busy CPUs make the
// lags likelier while the writers run; 10 users per writer keep that to
// about 4 s of CPU under -race (40 cost 10 s of both CPUs, to catch a
// vault reading from followers in most runs, not all).
func TestStoreThenGetSeesTheWriteOnEveryServer(t *testing.T) {
	t.Parallel()
	const servers, writers, users = 3, 6, 10
	env := brokertest.StartReplicated(t)
	c := &clock{now: time.Now()}
	ctx := context.Background()
	k := ring(t, keyLine(t, "k1"))
	s, err := env.JS.Stream(ctx, "KV_"+events.BucketVault)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := s.CachedInfo().Config; cfg.Replicas != servers || !cfg.AllowDirect {
		t.Fatalf("the bucket's stream has %d replicas, AllowDirect %v; want %d and true (as provisioned for production)", cfg.Replicas, cfg.AllowDirect, servers)
	}
	var vaults []*vault.Vault
	for _, js := range serverConns(t, env) {
		vaults = append(vaults, openVault(t, js, k, c))
	}
	leaderReads, directReads := spyReads(t, env)
	stop := make(chan struct{})
	busy(t, stop)
	var wg sync.WaitGroup
	for s, v := range vaults {
		for w := range writers {
			wg.Go(func() {
				for i := range users {
					openid := fmt.Sprintf("oUser%d_%d_%d", s, w, i)
					at := fmt.Sprintf("server %d, writer %d, user %d", s+1, w, i)
					stored, err := v.Store(ctx, "wxapp", openid, tokens(c, i))
					if err != nil {
						t.Error(err)
						return
					}
					got, err := v.Get(ctx, "wxapp", openid)
					if err != nil || got.Revision != stored.Revision {
						t.Errorf("%s: Get right after the Store = revision %d, %v; want the Store's %d", at, got.Revision, err, stored.Revision)
						return
					}
					again, err := v.Store(ctx, "wxapp", openid, tokens(c, 100+i))
					if err != nil {
						t.Error(err)
						return
					}
					got, err = v.Get(ctx, "wxapp", openid)
					if err != nil || got.Revision != again.Revision {
						t.Errorf("%s: Get right after the second Store = revision %d, %v; want %d", at, got.Revision, err, again.Revision)
						return
					}
					if _, err := v.StoreIf(ctx, "wxapp", openid, tokens(c, 200+i), got.Revision); err != nil {
						t.Errorf("%s: StoreIf on the revision Get returned: %v", at, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(stop)
	if t.Failed() {
		return
	}
	const gets = servers * writers * users * 2
	wxhubtest.Eventually(t, 10*time.Second, fmt.Sprintf("%d reads through the stream's leader (STREAM.MSG.GET)", gets), func() bool {
		return leaderReads.Load() >= gets || directReads.Load() > 0
	})
	if n, d := leaderReads.Load(), directReads.Load(); n != gets || d != 0 {
		t.Fatalf("the vault's %d Gets sent %d reads through the stream's leader and %d direct gets (a follower answers those); want %d and 0", gets, n, d, gets)
	}
}
