package vault_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers/vault"
	"github.com/wxhub/wxhub/wechat"
)

func ring(t *testing.T, lines ...string) *vault.Keyring {
	t.Helper()
	r, err := vault.ParseKeyring(strings.Join(lines, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func keyLine(t *testing.T, id string) string {
	t.Helper()
	l, err := vault.NewKeyLine(id)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// clock is a settable clock for token expiries.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func openVault(t *testing.T, js jetstream.JetStream, r *vault.Keyring, c *clock) *vault.Vault {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := vault.Open(ctx, js, r, vault.Options{Now: c.Now, RefreshTimeout: 2 * time.Second, LockTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func tokens(c *clock, n int) vault.Tokens {
	now := c.Now()
	return vault.Tokens{
		AccessToken:      fmt.Sprintf("86_ACCESS_%04d_plaintext", n),
		RefreshToken:     fmt.Sprintf("86_REFRESH_%04d_plaintext", n),
		Scope:            "snsapi_userinfo",
		UnionID:          "uAlice",
		AccessExpiresAt:  now.Add(2 * time.Hour),
		RefreshExpiresAt: now.Add(30 * 24 * time.Hour),
		StoredAt:         now,
	}
}

// rawStream reads every message of the bucket's stream with a plain
// ordered consumer: what anyone with read access to the stream sees.
func rawStream(t *testing.T, js jetstream.JetStream) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "KV_"+events.BucketVault)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for uint64(len(out)) < info.State.Msgs {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("reading the raw stream after %d of %d: %v", len(out), info.State.Msgs, err)
		}
		out = append(out, m)
		if md, _ := m.Metadata(); md != nil && md.NumPending == 0 {
			break
		}
	}
	return out
}

func TestStoreNoPlaintextInStreamAndTTL(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t)
	c := &clock{now: time.Now()}
	v := openVault(t, env.JS, ring(t, keyLine(t, "k1")), c)
	ctx := context.Background()
	tok := tokens(c, 1)
	if _, err := v.Store(ctx, "wxapp", "oAlice", tok); err != nil {
		t.Fatal(err)
	}
	got, err := v.Get(ctx, "wxapp", "oAlice")
	if err != nil || got.Tokens.AccessToken != tok.AccessToken || got.Tokens.RefreshToken != tok.RefreshToken || got.KeyID != "k1" {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	msgs := rawStream(t, env.JS)
	var userMsgs int
	for _, m := range msgs {
		for _, secret := range []string{tok.AccessToken, tok.RefreshToken, "plaintext", "uAlice", "snsapi_userinfo"} {
			if bytes.Contains(m.Data(), []byte(secret)) || strings.Contains(fmt.Sprint(m.Headers()), secret) {
				t.Fatalf("%q in the raw stream message on %s: %s", secret, m.Subject(), m.Data())
			}
		}
		if strings.HasSuffix(m.Subject(), ".u.wxapp.oAlice") {
			userMsgs++
			ttl := m.Headers().Get("Nats-TTL")
			d, err := time.ParseDuration(ttl)
			if err != nil {
				d, err = time.ParseDuration(ttl + "s")
			}
			if err != nil || d < 29*24*time.Hour || d > 30*24*time.Hour {
				t.Fatalf("record TTL header %q, want about 30 days", ttl)
			}
		}
	}
	if userMsgs != 1 {
		t.Fatalf("%d user records in the stream, want 1", userMsgs)
	}

	existed, err := v.Forget(ctx, "wxapp", "oAlice")
	if err != nil || !existed {
		t.Fatalf("Forget = %v, %v", existed, err)
	}
	if _, err := v.Get(ctx, "wxapp", "oAlice"); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("after Forget: %v, want ErrNotFound", err)
	}
	if existed, err := v.Forget(ctx, "wxapp", "oAlice"); err != nil || existed {
		t.Fatalf("second Forget = %v, %v", existed, err)
	}
	// The ciphertext is gone from the stream, not just hidden.
	for _, m := range rawStream(t, env.JS) {
		if strings.HasSuffix(m.Subject(), ".u.wxapp.oAlice") && len(m.Data()) > 0 {
			t.Fatalf("forgotten record still in the stream: %s", m.Data())
		}
	}
	// An expired refresh_token is not stored.
	old := tokens(c, 2)
	old.RefreshExpiresAt = c.Now().Add(-time.Minute)
	if _, err := v.Store(ctx, "wxapp", "oBob", old); !errors.Is(err, vault.ErrRefreshExpired) {
		t.Fatalf("expired store: %v", err)
	}
	if _, err := v.Get(ctx, "wx.app", "oBob"); !errors.Is(err, vault.ErrBadUser) {
		t.Fatalf("bad appid: %v", err)
	}
}

func TestOpenRefusesWrongOrMissingKey(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t)
	c := &clock{now: time.Now()}
	k1 := keyLine(t, "k1")
	v := openVault(t, env.JS, ring(t, k1), c)
	if _, err := v.Store(context.Background(), "wxapp", "oAlice", tokens(c, 1)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		ring *vault.Keyring
		want error
		text string
	}{
		{"another key under the same id", ring(t, keyLine(t, "k1")), vault.ErrWrongKey, `key "k1" does not decrypt its check record`},
		{"the old key missing", ring(t, keyLine(t, "k2")), vault.ErrMissingKey, `encrypted under key "k1", which is not in the keyring`},
		{"a wrong old key next to a new one", ring(t, keyLine(t, "k1"), keyLine(t, "k2")), vault.ErrWrongKey, `key "k1"`},
	} {
		_, err := vault.Open(ctx, env.JS, tc.ring, vault.Options{Now: c.Now})
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: Open err = %v, want %v containing %q", tc.name, err, tc.want, tc.text)
		}
	}
	if _, err := vault.Open(ctx, env.JS, nil, vault.Options{}); !errors.Is(err, vault.ErrNoKeys) {
		t.Errorf("no keys: %v", err)
	}
	// The right key still opens, and reads the record.
	if _, err := openVault(t, env.JS, ring(t, k1), c).Get(ctx, "wxapp", "oAlice"); err != nil {
		t.Fatal(err)
	}
}

func TestRotateReencryptsOldRecords(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t)
	c := &clock{now: time.Now()}
	ctx := context.Background()
	k1, k2 := keyLine(t, "k1"), keyLine(t, "k2")
	v1 := openVault(t, env.JS, ring(t, k1), c)
	for i := range 5 {
		if _, err := v1.Store(ctx, "wxapp", fmt.Sprintf("oUser%d", i), tokens(c, i)); err != nil {
			t.Fatal(err)
		}
	}
	v12 := openVault(t, env.JS, ring(t, k1, k2), c)
	// Old records read; new ones are written under k2.
	rec, err := v12.Get(ctx, "wxapp", "oUser0")
	if err != nil || rec.KeyID != "k1" || rec.Tokens.AccessToken != tokens(c, 0).AccessToken {
		t.Fatalf("old record under the new ring: %+v %v", rec, err)
	}
	if rec, err := v12.Store(ctx, "wxapp", "oNew", tokens(c, 9)); err != nil || rec.KeyID != "k2" {
		t.Fatalf("new record under %s (%v), want k2", rec.KeyID, err)
	}
	// Before rotate, k1 cannot leave the ring.
	if _, err := vault.Open(ctx, env.JS, ring(t, k2), vault.Options{Now: c.Now}); !errors.Is(err, vault.ErrMissingKey) {
		t.Fatalf("k2 only before rotate: %v", err)
	}
	st, err := v12.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != 6 || st.Reencrypted != 5 || st.Current != 1 || len(st.RetiredKeys) != 1 || st.RetiredKeys[0] != "k1" {
		t.Fatalf("rotate stats %+v", st)
	}
	// Now k2 alone opens the vault and reads every record.
	v2 := openVault(t, env.JS, ring(t, k2), c)
	for i := range 5 {
		rec, err := v2.Get(ctx, "wxapp", fmt.Sprintf("oUser%d", i))
		if err != nil || rec.KeyID != "k2" || rec.Tokens.RefreshToken != tokens(c, i).RefreshToken {
			t.Fatalf("after rotate: %+v %v", rec, err)
		}
	}
	// The re-encrypted records kept their TTL (the refresh_token's life).
	for _, m := range rawStream(t, env.JS) {
		if strings.Contains(m.Subject(), ".u.") {
			if m.Headers().Get("Nats-TTL") == "" {
				t.Fatalf("record %s lost its TTL", m.Subject())
			}
		}
	}
}

func TestFreshTwentyConcurrentCallersTwoProcessesOneRefresh(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t)
	c := &clock{now: time.Now()}
	ctx := context.Background()
	k := ring(t, keyLine(t, "k1"))
	// Two "processes": separate connections and Vaults.
	js2, err := jetstream.New(env.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	va, vb := openVault(t, env.JS, k, c), openVault(t, js2, k, c)
	tok := tokens(c, 1)
	if _, err := va.Store(ctx, "wxapp", "oAlice", tok); err != nil {
		t.Fatal(err)
	}
	c.Advance(3 * time.Hour) // the access token has expired

	var calls atomic.Int32
	refresh := func(ctx context.Context, rt string) (wechat.OAuthToken, error) {
		calls.Add(1)
		if rt != tok.RefreshToken {
			return wechat.OAuthToken{}, errors.New("wrong refresh token")
		}
		time.Sleep(200 * time.Millisecond) // a slow WeChat: the others must wait, not refresh
		return wechat.OAuthToken{AccessToken: "86_ACCESS_NEW", ExpiresIn: 2 * time.Hour, RefreshToken: rt, OpenID: "oAlice", Scope: "snsapi_userinfo"}, nil
	}
	var wg sync.WaitGroup
	var refreshedCount atomic.Int32
	errs := make(chan error, 20)
	for i := range 20 {
		v := va
		if i%2 == 1 {
			v = vb
		}
		wg.Go(func() {
			rec, refreshed, err := v.Fresh(ctx, vault.FreshRequest{AppID: "wxapp", OpenID: "oAlice", Margin: time.Minute, RefreshTTL: 30 * 24 * time.Hour, Refresh: refresh})
			if err != nil {
				errs <- err
				return
			}
			if refreshed {
				refreshedCount.Add(1)
			}
			if rec.Tokens.AccessToken != "86_ACCESS_NEW" {
				errs <- fmt.Errorf("got access token %s", wechat.Fingerprint(rec.Tokens.AccessToken))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if calls.Load() != 1 || refreshedCount.Load() != 1 {
		t.Fatalf("%d refresh calls, %d callers refreshed; want 1 and 1", calls.Load(), refreshedCount.Load())
	}
	rec, err := va.Get(ctx, "wxapp", "oAlice")
	if err != nil {
		t.Fatal(err)
	}
	// The refresh_token is not extended by a refresh.
	if !rec.Tokens.RefreshExpiresAt.Equal(tok.RefreshExpiresAt) || !rec.Tokens.AccessExpiresAt.After(c.Now()) {
		t.Fatalf("after refresh: %v", rec.Tokens)
	}

	// A token WeChat rejected is refreshed even if our clock says valid.
	_, refreshed, err := va.Fresh(ctx, vault.FreshRequest{AppID: "wxapp", OpenID: "oAlice", Rejected: "86_ACCESS_NEW", RefreshTTL: time.Hour,
		Refresh: func(context.Context, string) (wechat.OAuthToken, error) {
			return wechat.OAuthToken{AccessToken: "86_ACCESS_NEWER", ExpiresIn: 2 * time.Hour, OpenID: "oAlice"}, nil
		}})
	if err != nil || !refreshed {
		t.Fatalf("rejected token: refreshed=%v err=%v", refreshed, err)
	}
	// 31 days after the login: the refresh_token is dead by our clock.
	c.Advance(31*24*time.Hour - 3*time.Hour)
	if _, _, err := va.Fresh(ctx, vault.FreshRequest{AppID: "wxapp", OpenID: "oAlice", Refresh: refresh}); !errors.Is(err, vault.ErrRefreshExpired) {
		t.Fatalf("31 days later: %v, want ErrRefreshExpired", err)
	}
	if _, _, err := va.Fresh(ctx, vault.FreshRequest{AppID: "wxapp", OpenID: "oBob", Refresh: refresh}); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("no record: %v", err)
	}
}

func TestRecordsSurviveNATSRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	start := func() (*broker.Embedded, jetstream.JetStream) {
		srv, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		nc, err := broker.Connect(broker.ConnConfig{URL: srv.ClientURL(), Name: t.Name()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := broker.Provision(ctx, broker.LocalJetStreams(js, grants.Provision), broker.Topology{}); err != nil {
			t.Fatal(err)
		}
		return srv, js
	}
	c := &clock{now: time.Now()}
	k := ring(t, keyLine(t, "k1"))
	srv, js := start()
	v := openVault(t, js, k, c)
	for i := range 3 {
		if _, err := v.Store(context.Background(), "wxapp", fmt.Sprintf("oUser%d", i), tokens(c, i)); err != nil {
			t.Fatal(err)
		}
	}
	srv.Shutdown()
	srv, js = start()
	defer srv.Shutdown()
	v = openVault(t, js, k, c)
	for i := range 3 {
		rec, err := v.Get(context.Background(), "wxapp", fmt.Sprintf("oUser%d", i))
		if err != nil || rec.Tokens.AccessToken != tokens(c, i).AccessToken {
			t.Fatalf("after the restart: %+v %v", rec, err)
		}
	}
}

// A refresher that died holding the lock does not block the user for
// good: the lock lapses with its TTL and the next caller refreshes.
func TestFreshAfterADeadRefreshersLockLapses(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t)
	c := &clock{now: time.Now()}
	ctx := context.Background()
	r := ring(t, keyLine(t, "k1"))
	v, err := vault.Open(ctx, env.JS, r, vault.Options{Now: c.Now, RefreshTimeout: 500 * time.Millisecond, LockTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Store(ctx, "wxapp", "oAlice", tokens(c, 1)); err != nil {
		t.Fatal(err)
	}
	c.Advance(3 * time.Hour)
	// The dead refresher's lock, as it left it.
	kv, err := env.JS.KeyValue(ctx, events.BucketVault)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "l.wxapp.oAlice", []byte("dead-worker"), jetstream.KeyTTL(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var calls atomic.Int32
	rec, refreshed, err := v.Fresh(ctx, vault.FreshRequest{AppID: "wxapp", OpenID: "oAlice", RefreshTTL: time.Hour,
		Refresh: func(context.Context, string) (wechat.OAuthToken, error) {
			calls.Add(1)
			return wechat.OAuthToken{AccessToken: "86_ACCESS_AFTER_LAPSE", ExpiresIn: 2 * time.Hour, OpenID: "oAlice"}, nil
		}})
	if err != nil || !refreshed || calls.Load() != 1 || rec.Tokens.AccessToken != "86_ACCESS_AFTER_LAPSE" {
		t.Fatalf("after the lapse: refreshed=%v calls=%d err=%v", refreshed, calls.Load(), err)
	}
	if waited := time.Since(start); waited < time.Second || waited > 10*time.Second {
		t.Fatalf("waited %v for a 2 s lock", waited)
	}
}
