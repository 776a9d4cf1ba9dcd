package weblogin

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
)

// testClock is a clock tests move by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func stateBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	env := brokertest.Start(t)
	kv, err := env.JS.KeyValue(context.Background(), events.BucketLoginState)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func TestStateStoreSingleUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := NewStateStore(stateBucket(t), 0, nil)
	want := State{AppID: "wxapp", Scope: ScopeUserInfo, ReturnTo: "https://shop.example.com/login/done", State: "cart-7"}
	nonce, err := s.Put(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[a-zA-Z0-9]{16,128}$`).MatchString(nonce) {
		t.Fatalf("nonce %q is not WeChat's state alphabet or too short", nonce)
	}
	other, _ := s.Put(ctx, want)
	if other == nonce {
		t.Fatal("two Puts gave the same nonce")
	}
	got, err := s.Take(ctx, nonce)
	if err != nil {
		t.Fatal(err)
	}
	if got.AppID != want.AppID || got.Scope != want.Scope || got.ReturnTo != want.ReturnTo || got.State != want.State {
		t.Fatalf("Take = %+v, want %+v", got, want)
	}
	for i := range 3 {
		if _, err := s.Take(ctx, nonce); !errors.Is(err, ErrStateUnknown) {
			t.Fatalf("Take #%d of a used nonce: %v, want ErrStateUnknown", i+2, err)
		}
	}
	if _, err := s.Take(ctx, "NeverIssued0000000000000000"); !errors.Is(err, ErrStateUnknown) {
		t.Fatalf("forged nonce: %v, want ErrStateUnknown", err)
	}
	for _, bad := range []string{"", "a.b", "ab/c", "a b", string(make([]byte, 129))} {
		if _, err := s.Take(ctx, bad); !errors.Is(err, ErrBadNonce) {
			t.Errorf("Take(%q): %v, want ErrBadNonce", bad, err)
		}
	}
}

func TestStateStoreExpiry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := &testClock{now: time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)}
	s := NewStateStore(stateBucket(t), 10*time.Minute, clock.Now)
	fresh, _ := s.Put(ctx, State{AppID: "wxapp"})
	late, _ := s.Put(ctx, State{AppID: "wxapp"})

	clock.Advance(9*time.Minute + 59*time.Second)
	if _, err := s.Take(ctx, fresh); err != nil {
		t.Fatalf("a state 9m59s old: %v", err)
	}
	clock.Advance(2 * time.Second)
	if _, err := s.Take(ctx, late); !errors.Is(err, ErrStateExpired) {
		t.Fatalf("a state 10m01s old: %v, want ErrStateExpired", err)
	}
	if _, err := s.Take(ctx, late); !errors.Is(err, ErrStateUnknown) {
		t.Fatalf("an expired state taken again: %v, want ErrStateUnknown", err)
	}
}

// The bucket's own TTL removes states nobody came back for.
func TestStateStoreBucketTTLRemovesAbandonedStates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := brokertest.Start(t)
	kv, err := env.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "login_state_ttl_test", History: 1, TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s := NewStateStore(kv, time.Hour, nil) // only the bucket expires it
	nonce, err := s.Put(ctx, State{AppID: "wxapp"})
	if err != nil {
		t.Fatal(err)
	}
	// JetStream's MaxAge removes the message without a marker a watch
	// would show: poll until it is gone, with a deadline.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := kv.Get(ctx, nonce); errors.Is(err, jetstream.ErrKeyNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the bucket TTL did not remove the state within 15 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := s.Take(ctx, nonce); !errors.Is(err, ErrStateUnknown) {
		t.Fatalf("Take after the bucket TTL: %v, want ErrStateUnknown", err)
	}
}

// "64 concurrent callbacks with one nonce, 1 gets the state".
// replicatedStateBucket is wx_login_state replicated over a cluster of
// three, as production runs it.
func replicatedStateBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	kv, err := brokertest.StartReplicated(t).JS.KeyValue(context.Background(), events.BucketLoginState)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// Concurrent callbacks with one state (a double click, a replayed
// redirect): exactly one takes it, every other gets ErrStateUnknown, also
// on a replicated bucket, where JetStream answers most losers of the
// compare-and-delete with error 10164 instead of 10071.
func TestStateStoreConcurrentTakesOneWinner(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		bucket func(*testing.T) jetstream.KeyValue
	}{
		{"one server", stateBucket},
		{"replicated over three", replicatedStateBucket},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			concurrentTakes(t, NewStateStore(tt.bucket(t), 0, nil))
		})
	}
}

func concurrentTakes(t *testing.T, s *StateStore) {
	ctx := context.Background()
	for round := range 5 {
		nonce, err := s.Put(ctx, State{AppID: "wxapp", State: "r"})
		if err != nil {
			t.Fatal(err)
		}
		const n = 64
		var won, lost atomic.Int32
		var start, done sync.WaitGroup
		start.Add(1)
		for range n {
			done.Add(1)
			go func() {
				defer done.Done()
				start.Wait()
				_, err := s.Take(ctx, nonce)
				switch {
				case err == nil:
					won.Add(1)
				case errors.Is(err, ErrStateUnknown):
					lost.Add(1)
				default:
					t.Errorf("Take: %v", err)
				}
			}()
		}
		start.Done()
		done.Wait()
		if won.Load() != 1 || lost.Load() != n-1 {
			t.Fatalf("round %d: %d winners, %d ErrStateUnknown; want 1 and %d", round, won.Load(), lost.Load(), n-1)
		}
	}
}

// A check that refuses leaves the state in place for the caller it was
// meant for; an expired state is consumed whatever the check says.
func TestStateStoreTakeIfRefusalKeepsTheState(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := &testClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	s := NewStateStore(stateBucket(t), time.Minute, clock.Now)
	nonce, err := s.Put(ctx, State{AppID: "wxapp", Browser: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	refuse := errors.New("not this browser")
	for range 3 {
		if _, err := s.TakeIf(ctx, nonce, func(State) error { return refuse }); !errors.Is(err, refuse) {
			t.Fatalf("TakeIf with a refusing check: %v, want its error", err)
		}
	}
	st, err := s.TakeIf(ctx, nonce, func(st State) error {
		if st.Browser != "b1" {
			return refuse
		}
		return nil
	})
	if err != nil || st.AppID != "wxapp" {
		t.Fatalf("TakeIf after refusals: %+v %v, want the state", st, err)
	}
	if _, err := s.TakeIf(ctx, nonce, func(State) error { return nil }); !errors.Is(err, ErrStateUnknown) {
		t.Fatalf("second TakeIf: %v, want ErrStateUnknown", err)
	}

	late, err := s.Put(ctx, State{AppID: "wxapp"})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	if _, err := s.TakeIf(ctx, late, func(State) error { return refuse }); !errors.Is(err, ErrStateExpired) {
		t.Fatalf("expired: %v, want ErrStateExpired", err)
	}
	if _, err := s.TakeIf(ctx, late, nil); !errors.Is(err, ErrStateUnknown) {
		t.Fatalf("expired state not consumed: %v", err)
	}
}

// laggingReplica is the bucket as read through a replica that has not
// seen the last writes yet: its first misses Gets of a key say "not
// found", as a direct get served by a lagging replica does. Every other
// call goes to the real bucket.
type laggingReplica struct {
	jetstream.KeyValue
	misses int
	gets   atomic.Int32
}

func (r *laggingReplica) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if int(r.gets.Add(1)) <= r.misses {
		return nil, jetstream.ErrKeyNotFound
	}
	return r.KeyValue.Get(ctx, key)
}

// A callback read by a replica that lags behind the Put still finds its
// state (the read is asked again), takes it once, and a never-issued or
// used nonce is still unknown, after the same few reads.
func TestStateStoreReadsPastALaggingReplica(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bucket := stateBucket(t)
	tests := []struct {
		name    string
		misses  int
		put     bool // take a nonce that was stored
		wantErr error
	}{
		{name: "in sync", misses: 0, put: true},
		{name: "one stale read", misses: 1, put: true},
		{name: "stale for every retry but the last", misses: len(notFoundRetries), put: true},
		{name: "never issued", misses: 0, wantErr: ErrStateUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kv := &laggingReplica{KeyValue: bucket, misses: tt.misses}
			s := NewStateStore(kv, 0, nil)
			nonce := "NeverIssuedLaggingReplica0"
			if tt.put {
				var err error
				if nonce, err = s.Put(ctx, State{AppID: "wxapp", Scope: ScopeBase, ReturnTo: "https://shop.example.com/"}); err != nil {
					t.Fatal(err)
				}
			}
			st, err := s.Take(ctx, nonce)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Take = %+v, %v; want error %v", st, err, tt.wantErr)
			}
			if tt.wantErr == nil && st.AppID != "wxapp" {
				t.Fatalf("Take = %+v", st)
			}
			if tt.wantErr != nil {
				if got, want := int(kv.gets.Load()), len(notFoundRetries)+1; got != want {
					t.Errorf("unknown nonce read %d times, want %d", got, want)
				}
				return
			}
			if _, err := NewStateStore(bucket, 0, nil).Take(ctx, nonce); !errors.Is(err, ErrStateUnknown) {
				t.Fatalf("second Take: %v, want ErrStateUnknown", err)
			}
		})
	}
}

// A flood of callbacks with made-up nonces: the first rereadBurst are
// read again (any of them could be a login that just started, read by a
// lagging replica), every one after that, while the budget is spent, is
// unknown after one read (so without the 0.2 s of waits). A real state is still
// found at the first read.
func TestStateStoreUnknownNonceFloodCostsOneReadEach(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bucket := stateBucket(t)
	kv := &laggingReplica{KeyValue: bucket}
	s := NewStateStore(kv, 0, nil)
	s.rereads = rate.NewLimiter(rate.Every(time.Hour), 2) // the budget does not refill during the test
	for i := range 2 {
		if _, err := s.Take(ctx, fmt.Sprintf("MadeUpNonceNumber%05d", i)); !errors.Is(err, ErrStateUnknown) {
			t.Fatalf("Take: %v, want ErrStateUnknown", err)
		}
	}
	if got, want := int(kv.gets.Swap(0)), 2*(len(notFoundRetries)+1); got != want {
		t.Fatalf("within the budget: %d reads for 2 unknown nonces, want %d", got, want)
	}
	for i := range 50 {
		if _, err := s.Take(ctx, fmt.Sprintf("MadeUpNonceFlood%05d", i)); !errors.Is(err, ErrStateUnknown) {
			t.Fatalf("Take: %v, want ErrStateUnknown", err)
		}
	}
	if got := int(kv.gets.Swap(0)); got != 50 {
		t.Fatalf("past the budget: %d reads for 50 unknown nonces, want 50", got)
	}
	nonce, err := s.Put(ctx, State{AppID: "wxapp", Scope: ScopeBase, ReturnTo: "https://shop.example.com/"})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := s.Take(ctx, nonce); err != nil || st.AppID != "wxapp" {
		t.Fatalf("a real state while the budget is spent: %+v, %v", st, err)
	}
}
