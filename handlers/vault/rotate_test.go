package vault_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/handlers/vault"
	"github.com/wxhub/wxhub/wechat"
)

// Rotate run with an older keyring (k1,k2) while another process has k3:
// it refuses, naming k3, and k3's check record stays, so a process
// without k3 still refuses to open the vault.
func TestRotateWithAnOlderKeyringRefusesAndKeepsTheNewerKeysCheck(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t)
	c := &clock{now: time.Now()}
	ctx := context.Background()
	k1, k2, k3 := keyLine(t, "k1"), keyLine(t, "k2"), keyLine(t, "k3")
	v1 := openVault(t, env.JS, ring(t, k1), c)
	if _, err := v1.Store(ctx, "wxapp", "oOld", tokens(c, 1)); err != nil {
		t.Fatal(err)
	}
	v12 := openVault(t, env.JS, ring(t, k1, k2), c)      // opened before k3 existed
	v123 := openVault(t, env.JS, ring(t, k1, k2, k3), c) // writes k3's check record
	if _, err := v123.Store(ctx, "wxapp", "oAlice", tokens(c, 2)); err != nil {
		t.Fatal(err)
	}

	st, err := v12.Rotate(ctx)
	if !errors.Is(err, vault.ErrMissingKey) || !strings.Contains(err.Error(), `"k3"`) {
		t.Fatalf("Rotate with k1,k2 = %v, want ErrMissingKey naming k3", err)
	}
	if len(st.RetiredKeys) != 0 || st.Reencrypted != 0 {
		t.Fatalf("a refused rotate did work: %+v", st)
	}
	if _, err := vault.Open(ctx, env.JS, ring(t, k1, k2), vault.Options{Now: c.Now}); !errors.Is(err, vault.ErrMissingKey) {
		t.Fatalf("Open without k3 after the refused rotate: %v, want ErrMissingKey", err)
	}
	if rec, err := v123.Get(ctx, "wxapp", "oOld"); err != nil || rec.KeyID != "k1" {
		t.Fatalf("oOld after the refused rotate: %+v %v (want untouched under k1)", rec, err)
	}

	// With the newest ring, rotate retires k1 and k2 and keeps k3.
	st, err = v123.Rotate(ctx)
	if err != nil || strings.Join(st.RetiredKeys, ",") != "k1,k2" || st.Reencrypted != 1 {
		t.Fatalf("Rotate with k1,k2,k3 = %+v, %v", st, err)
	}
	if _, err := openVault(t, env.JS, ring(t, k3), c).Get(ctx, "wxapp", "oAlice"); err != nil {
		t.Fatal(err)
	}
}

// readSignal is a vault clock that tells, once armed, when Fresh first
// asks it the time: right after it has read the user's record.
type readSignal struct {
	c     *clock
	armed atomic.Bool
	once  sync.Once
	read  chan struct{}
}

func (r *readSignal) Now() time.Time {
	if r.armed.Load() {
		r.once.Do(func() { close(r.read) })
	}
	return r.c.Now()
}

// A re-encryption is no refresh. A caller whose access_token WeChat
// rejected asks for a refresh (Rejected, RejectedRevision); `vault rotate`
// rewrites the record meanwhile: a newer revision of the same tokens. The
// caller does not take it for a refresh, which would hand the rejected
// token back: it refreshes. Either the rotate comes between the rejection
// and the call, or while the caller waits for another worker's refresh
// of the same rejection, which then fails.
func TestFreshRotateMeanwhileIsNoRefresh(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name            string
		behindRefresher bool
	}{
		{"rotate between the rejection and the call", false},
		{"rotate while waiting for another worker's refresh", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := brokertest.Start(t)
			c := &clock{now: time.Now()}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			k1, k2 := keyLine(t, "k1"), keyLine(t, "k2")
			tok := tokens(c, 1) // valid by our clock: only WeChat's rejection makes it stale
			read, err := openVault(t, env.JS, ring(t, k1), c).Store(ctx, "wxapp", "oAlice", tok)
			if err != nil {
				t.Fatal(err)
			}
			both := ring(t, k1, k2)
			operator := openVault(t, env.JS, both, c)
			sig := &readSignal{c: c, read: make(chan struct{})}
			caller, err := vault.Open(ctx, env.JS, both, vault.Options{Now: sig.Now, RefreshTimeout: 2 * time.Second, LockTTL: 5 * time.Second, Owner: "caller"})
			if err != nil {
				t.Fatal(err)
			}
			rejectedReq := func(refresh vault.RefreshFunc) vault.FreshRequest {
				return vault.FreshRequest{AppID: "wxapp", OpenID: "oAlice", Rejected: tok.AccessToken, RejectedRevision: read.Revision,
					RefreshTTL: time.Hour, Refresh: refresh}
			}

			// The other worker saw the same rejection and is refreshing.
			release, refresher := make(chan struct{}), make(chan error, 1)
			if tt.behindRefresher {
				js2, err := jetstream.New(env.Conn(t))
				if err != nil {
					t.Fatal(err)
				}
				other := openVault(t, js2, both, c)
				entered := make(chan struct{})
				go func() {
					_, _, err := other.Fresh(ctx, rejectedReq(func(ctx context.Context, _ string) (wechat.OAuthToken, error) {
						close(entered)
						select {
						case <-release: // WeChat fails it, after the rotate
							return wechat.OAuthToken{}, errors.New("simulated system error")
						case <-ctx.Done():
							return wechat.OAuthToken{}, ctx.Err()
						}
					}))
					refresher <- err
				}()
				select {
				case <-entered:
				case <-ctx.Done():
					t.Fatal("the other worker never refreshed")
				}
			}

			var calls atomic.Int32
			type outcome struct {
				rec       vault.Record
				refreshed bool
				err       error
			}
			got := make(chan outcome, 1)
			rotate := func() {
				t.Helper()
				if st, err := operator.Rotate(ctx); err != nil || st.Reencrypted != 1 {
					t.Fatalf("Rotate: %+v %v", st, err)
				}
			}
			if !tt.behindRefresher {
				rotate()
			}
			sig.armed.Store(true)
			go func() {
				rec, refreshed, err := caller.Fresh(ctx, rejectedReq(func(_ context.Context, rt string) (wechat.OAuthToken, error) {
					calls.Add(1)
					return wechat.OAuthToken{AccessToken: "86_ACCESS_NEW", ExpiresIn: 2 * time.Hour, RefreshToken: rt, OpenID: "oAlice"}, nil
				}))
				got <- outcome{rec, refreshed, err}
			}()
			if tt.behindRefresher {
				select {
				case <-sig.read: // the caller has read the rejected record, and waits on the lock
				case <-ctx.Done():
					t.Fatal("the caller never read the record")
				}
				rotate()
				close(release)
				if err := <-refresher; err == nil {
					t.Fatal("the other worker's refresh did not fail as arranged")
				}
			}
			o := <-got
			if o.err != nil {
				t.Fatalf("Fresh: %v", o.err)
			}
			if o.rec.Tokens.AccessToken == tok.AccessToken {
				t.Fatalf("Fresh handed back the rejected token (revision %d, rejected at %d, refreshed=%v): the rotate passed for a refresh",
					o.rec.Revision, read.Revision, o.refreshed)
			}
			if !o.refreshed || calls.Load() != 1 || o.rec.Tokens.AccessToken != "86_ACCESS_NEW" || o.rec.KeyID != "k2" {
				t.Fatalf("refreshed=%v calls=%d kid=%s token %s, want one refresh stored under k2", o.refreshed, calls.Load(), o.rec.KeyID,
					wechat.Fingerprint(o.rec.Tokens.AccessToken))
			}
		})
	}
}

// "A record written under the old key while Rotate runs ends under the
// new key." A worker not yet restarted with the new keyring (k1 only)
// stores a login's record under k1 after Rotate (k1,k2) listed the
// records: Rotate retires k1 and then finds the record, listing again,
// and re-encrypts it, so a process with k2 alone reads it.
func TestRotateReencryptsARecordWrittenUnderTheOldKeyMeanwhile(t *testing.T) {
	t.Parallel()
	brokertest.OneAndThree(t, func(t *testing.T, env *brokertest.Env) {
		t.Parallel()
		c := &clock{now: time.Now()}
		ctx := context.Background()
		k1, k2 := keyLine(t, "k1"), keyLine(t, "k2")
		v1 := openVault(t, env.JS, ring(t, k1), c) // not restarted with k2
		if _, err := v1.Store(ctx, "wxapp", "oEarly", tokens(c, 1)); err != nil {
			t.Fatal(err)
		}
		var lateErr error
		writeLate := func() { _, lateErr = v1.Store(ctx, "wxapp", "oLate", tokens(c, 2)) }
		v12, err := vault.OpenHooked(ctx, env.JS, ring(t, k1, k2), vault.Options{Now: c.Now}, vault.Hooks{RotateListed: writeLate})
		if err != nil {
			t.Fatal(err)
		}
		st, err := v12.Rotate(ctx)
		if lateErr != nil {
			t.Fatalf("the late Store: %v", lateErr)
		}
		if err != nil || strings.Join(st.RetiredKeys, ",") != "k1" || st.Reencrypted != 2 || st.Late != 1 || st.Records != 2 {
			t.Fatalf("Rotate = %+v, %v; want k1 retired, 2 records re-encrypted of which 1 late", st, err)
		}
		v2 := openVault(t, env.JS, ring(t, k2), c)
		for _, openid := range []string{"oEarly", "oLate"} {
			if rec, err := v2.Get(ctx, "wxapp", openid); err != nil || rec.KeyID != "k2" {
				t.Errorf("%s with k2 alone after the rotate: key %q, %v; want it under k2", openid, rec.KeyID, err)
			}
		}
	})
}
