package vault_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/handlers/vault"
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
