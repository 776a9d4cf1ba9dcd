package vault_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/handlers/vault"
	"github.com/wxhub/wxhub/wechat"
)

// A refresh that runs over its RefreshTimeout (a WeChat that does not
// answer, a Refresh that ignores its budget) is cut before its lock may
// lapse, so the caller that takes the lock next never refreshes with the
// same refresh_token at the same time.
func TestFreshSlowRefreshIsCutBeforeItsLockLapsesNoOverlap(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t)
	c := &clock{now: time.Now()}
	ctx := context.Background()
	const lockTTL = 2 * time.Second
	v, err := vault.Open(ctx, env.JS, ring(t, keyLine(t, "k1")), vault.Options{Now: c.Now, RefreshTimeout: 500 * time.Millisecond, LockTTL: lockTTL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Store(ctx, "wxapp", "oAlice", tokens(c, 1)); err != nil {
		t.Fatal(err)
	}
	c.Advance(3 * time.Hour)

	var calls, running, overlaps atomic.Int32
	firstEntered, secondEntered := make(chan struct{}), make(chan struct{})
	var firstDeadline time.Duration
	refresh := func(ctx context.Context, rt string) (wechat.OAuthToken, error) {
		if running.Add(1) > 1 {
			overlaps.Add(1)
		}
		defer running.Add(-1)
		if calls.Add(1) == 1 {
			entered := time.Now()
			if d, ok := ctx.Deadline(); ok {
				firstDeadline = d.Sub(entered)
			}
			close(firstEntered)
			select { // a WeChat that does not answer
			case <-ctx.Done():
				return wechat.OAuthToken{}, ctx.Err()
			case <-secondEntered:
				return wechat.OAuthToken{}, errors.New("still refreshing when the next caller refreshed")
			case <-time.After(20 * time.Second):
				return wechat.OAuthToken{}, errors.New("the refresh was never cut")
			}
		}
		close(secondEntered)
		return wechat.OAuthToken{AccessToken: "86_ACCESS_NEW", ExpiresIn: 2 * time.Hour, RefreshToken: rt, OpenID: "oAlice"}, nil
	}
	req := vault.FreshRequest{AppID: "wxapp", OpenID: "oAlice", RefreshTTL: time.Hour, Refresh: refresh}
	first := make(chan error, 1)
	go func() {
		_, _, err := v.Fresh(ctx, req)
		first <- err
	}()
	select {
	case <-firstEntered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first caller never refreshed")
	}
	rec, refreshed, err := v.Fresh(ctx, req) // waits on the lock, then refreshes
	if err != nil || !refreshed || rec.Tokens.AccessToken != "86_ACCESS_NEW" {
		t.Fatalf("second caller: refreshed=%v err=%v", refreshed, err)
	}
	if err := <-first; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first caller: %v, want its refresh cut (context.DeadlineExceeded)", err)
	}
	if overlaps.Load() != 0 {
		t.Fatalf("%d refreshes ran beside another one", overlaps.Load())
	}
	if firstDeadline <= 0 || firstDeadline >= lockTTL {
		t.Fatalf("the refresh's deadline was %v after it began, want within the %v lock", firstDeadline, lockTTL)
	}
}

// A storm of reports of one rejected access_token, which WeChat renews
// as the same token (it has not expired): 20 callers, across two
// connections, and one late caller, cause one refresh.
func TestFreshTwentyReportsOfOneRejectedTokenOneRefresh(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t)
	c := &clock{now: time.Now()}
	ctx := context.Background()
	k := ring(t, keyLine(t, "k1"))
	js2, err := jetstream.New(env.Conn(t)) // a second process
	if err != nil {
		t.Fatal(err)
	}
	v, v2 := openVault(t, env.JS, k, c), openVault(t, js2, k, c)
	tok := tokens(c, 1)
	used, err := v.Store(ctx, "wxapp", "oAlice", tok)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	req := vault.FreshRequest{AppID: "wxapp", OpenID: "oAlice", Rejected: tok.AccessToken, RejectedRevision: used.Revision,
		RefreshTTL: time.Hour, Refresh: func(_ context.Context, rt string) (wechat.OAuthToken, error) {
			calls.Add(1)
			return wechat.OAuthToken{AccessToken: tok.AccessToken, ExpiresIn: 2 * time.Hour, RefreshToken: rt, OpenID: "oAlice"}, nil
		}}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		vi := v
		if i%2 == 1 {
			vi = v2
		}
		wg.Go(func() {
			rec, _, err := vi.Fresh(ctx, req)
			if err == nil && rec.Revision == used.Revision {
				err = errors.New("got the rejected record back")
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// A report arriving after the refresh is stale too.
	if _, refreshed, err := v.Fresh(ctx, req); err != nil || refreshed {
		t.Fatalf("late report: refreshed=%v err=%v", refreshed, err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d refreshes for 21 reports of one rejected token, want 1", n)
	}
	// A rejection of the refreshed record itself does refresh.
	cur, err := v.Get(ctx, "wxapp", "oAlice")
	if err != nil {
		t.Fatal(err)
	}
	req.RejectedRevision = cur.Revision
	if _, refreshed, err := v.Fresh(ctx, req); err != nil || !refreshed || calls.Load() != 2 {
		t.Fatalf("rejection of the current record: refreshed=%v calls=%d err=%v", refreshed, calls.Load(), err)
	}
}

// A refresh whose write loses to a record written meanwhile (the user
// logged in again, or Rotate re-encrypted the record) is not an error:
// the record is read again and used, refreshed once more if it must be.
func TestFreshWriteLostToANewLoginUsesTheNewRecord(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t)
	c := &clock{now: time.Now()}
	ctx := context.Background()
	v := openVault(t, env.JS, ring(t, keyLine(t, "k1")), c)
	if _, err := v.Store(ctx, "wxapp", "oAlice", tokens(c, 1)); err != nil {
		t.Fatal(err)
	}
	c.Advance(3 * time.Hour)
	var calls atomic.Int32
	req := vault.FreshRequest{AppID: "wxapp", OpenID: "oAlice", RefreshTTL: time.Hour,
		Refresh: func(ctx context.Context, rt string) (wechat.OAuthToken, error) {
			calls.Add(1)
			// The user logs in again while WeChat answers the refresh.
			if _, err := v.Store(ctx, "wxapp", "oAlice", tokens(c, 2)); err != nil {
				return wechat.OAuthToken{}, err
			}
			return wechat.OAuthToken{AccessToken: "86_ACCESS_REFRESHED", ExpiresIn: 2 * time.Hour, RefreshToken: rt, OpenID: "oAlice"}, nil
		}}
	rec, refreshed, err := v.Fresh(ctx, req)
	if err != nil {
		t.Fatalf("Fresh: %v, want the new login's record", err)
	}
	if want := tokens(c, 2).AccessToken; rec.Tokens.AccessToken != want || refreshed {
		t.Fatalf("Fresh gave %s (refreshed %v), want the new login's %s", rec.Tokens.AccessToken, refreshed, want)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d refreshes, want 1", n)
	}
}
