package deploy_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers/vault"
	"github.com/wxhub/wxhub/wechat"
)

// TestVaultUnderTheWorkerGrant: the vault does its whole job as the
// shipped worker user (open with the key check, store with a TTL, a
// refresh shared by concurrent callers through the lock and its watch,
// forget), and no other service role can read the bucket.
func TestVaultUnderTheWorkerGrant(t *testing.T) {
	t.Parallel()
	s := provisioned(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	wu := connectAs(t, s, grants.Worker)
	noViolations(t, wu)
	line, _ := vault.NewKeyLine("k1")
	ring, err := vault.ParseKeyring(line)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	v, err := vault.Open(ctx, wu.js, ring, vault.Options{Now: clock, RefreshTimeout: 2 * time.Second, LockTTL: 5 * time.Second})
	if err != nil {
		t.Fatalf("the worker cannot open the vault: %v", err)
	}
	tok := vault.Tokens{AccessToken: "86_A", RefreshToken: "86_R", Scope: "snsapi_userinfo",
		AccessExpiresAt: now.Add(2 * time.Hour), RefreshExpiresAt: now.Add(30 * 24 * time.Hour), StoredAt: now}
	if _, err := v.Store(ctx, "wxapp", "oAlice", tok); err != nil {
		t.Fatalf("the worker cannot store: %v", err)
	}
	mu.Lock()
	now = now.Add(3 * time.Hour)
	mu.Unlock()
	var calls atomic.Int32
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			_, _, err := v.Fresh(ctx, vault.FreshRequest{AppID: "wxapp", OpenID: "oAlice", RefreshTTL: time.Hour,
				Refresh: func(context.Context, string) (wechat.OAuthToken, error) {
					calls.Add(1)
					time.Sleep(100 * time.Millisecond)
					return wechat.OAuthToken{AccessToken: "86_B", ExpiresIn: 2 * time.Hour, OpenID: "oAlice"}, nil
				}})
			if err != nil {
				t.Errorf("Fresh as the worker: %v", err)
			}
		})
	}
	wg.Wait()
	if calls.Load() != 1 {
		t.Fatalf("%d refreshes, want 1", calls.Load())
	}
	if existed, err := v.Forget(ctx, "wxapp", "oAlice"); err != nil || !existed {
		t.Fatalf("Forget as the worker: %v %v", existed, err)
	}

	// Nobody else reads the vault, not even the ciphertext.
	if _, err := v.Store(ctx, "wxapp", "oBob", tok); err != nil {
		t.Fatal(err)
	}
	for _, r := range []grants.Role{grants.Holder, grants.Gateway} {
		u := connectAs(t, s, r)
		// A denied request gets no answer: short deadlines.
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
		kv, err := u.js.KeyValue(dctx, events.BucketVault)
		if err == nil {
			_, err = kv.Get(dctx, "u.wxapp.oBob")
		}
		dcancel()
		if err == nil {
			t.Errorf("%s read the vault", u.name)
		}
		dctx, dcancel = context.WithTimeout(ctx, 2*time.Second)
		if _, err := vault.Open(dctx, u.js, ring, vault.Options{}); err == nil || errors.Is(err, vault.ErrWrongKey) {
			t.Errorf("%s opened the vault: %v", u.name, err)
		}
		dcancel()
	}
}
