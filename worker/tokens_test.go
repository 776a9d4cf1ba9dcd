package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
	iharness "github.com/wxhub/wxhub/internal/harness"
	"github.com/wxhub/wxhub/worker"
)

const otherApp = "wxfedcba9876543210"

// tokenBench is a provisioned server, the wx_tokens bucket, and a
// connection for the feed.
type tokenBench struct {
	t  *testing.T
	kv *countingKV
	nc *nats.Conn // the holder side: writes and events
	fc *nats.Conn // the feed's connection
}

func newTokenBench(t *testing.T) *tokenBench {
	t.Helper()
	env := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := env.JS.KeyValue(ctx, events.BucketTokens)
	if err != nil {
		t.Fatal(err)
	}
	return &tokenBench{t: t, kv: &countingKV{KeyValue: kv, read: make(chan struct{}, 1)}, nc: env.NC, fc: env.Conn(t)}
}

// countingKV counts the feed's reads.
type countingKV struct {
	jetstream.KeyValue
	n    atomic.Int64
	read chan struct{} // (cap 1) a read returned
}

func (k *countingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	e, err := k.KeyValue.Get(ctx, key)
	k.n.Add(1)
	select {
	case k.read <- struct{}{}:
	default:
	}
	return e, err
}

// readAfter waits until the feed has read more than n times.
func (b *tokenBench) readAfter(n int64) {
	timeout := time.After(10 * time.Second)
	for b.kv.n.Load() <= n {
		select {
		case <-b.kv.read:
		case <-timeout:
			b.t.Error("the feed did not read")
			return
		}
	}
}

// put stores version v of appid's token record.
func (b *tokenBench) put(appid string, v uint64) {
	b.t.Helper()
	rec, _ := json.Marshal(events.TokenRecord{AppID: appid, AccessToken: tokenOf(appid, v), Version: v,
		ExpiresAt: time.Now().Add(time.Hour), FetchedAt: time.Now(), Mode: events.ModeToken})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := b.kv.Put(ctx, appid, rec); err != nil {
		b.t.Fatal(err)
	}
}

// event publishes token.refreshed for version v of appid.
func (b *tokenBench) event(appid string, v uint64) {
	b.t.Helper()
	ev, _ := json.Marshal(events.TokenRefreshed{AppID: appid, Version: v, Reason: "test"})
	if err := b.nc.Publish(events.SubjectTokenRefreshed, ev); err != nil {
		b.t.Fatal(err)
	}
	if err := b.nc.Flush(); err != nil {
		b.t.Fatal(err)
	}
}

func tokenOf(appid string, v uint64) string { return fmt.Sprintf("%s-token-%d", appid, v) }

// follow runs c's feed on kv until the test ends; it returns a channel
// closed when Follow returned, and the function that stops it.
func (b *tokenBench) follow(c *worker.TokenCache, kv jetstream.KeyValue, appids []string, every time.Duration) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Follow(ctx, kv, b.fc, events.SubjectTokenRefreshed, appids, every) }()
	var stopped atomic.Bool
	var err error
	stop = func() error {
		if stopped.CompareAndSwap(false, true) {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				b.t.Fatal("Follow did not return after its context ended")
			}
		}
		return err
	}
	b.t.Cleanup(func() { _ = stop() })
	return stop
}

func waitReady(t *testing.T, c *worker.TokenCache) {
	t.Helper()
	select {
	case <-c.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("token cache never ready")
	}
}

// TestTokenCacheFollow: the feed learns each new version through the way
// the case names (the others are off: a poll interval of an hour, and
// WaitNewer used only where the case says).
func TestTokenCacheFollow(t *testing.T) {
	t.Parallel()
	const never = time.Hour
	tests := []struct {
		name   string
		apps   []string
		before func(b *tokenBench)            // before the feed starts
		after  func(b *tokenBench)            // once the cache is ready
		every  time.Duration                  // the feed's poll
		want   func(*worker.TokenCache) error // how the case observes the new version
		appid  string
		ver    uint64
	}{
		{
			name: "refresh seen via the event", apps: []string{testApp}, every: never,
			before: func(b *tokenBench) { b.put(testApp, 1) },
			after:  func(b *tokenBench) { b.put(testApp, 2); b.event(testApp, 2) },
			appid:  testApp, ver: 2,
		},
		{
			name: "lost event caught by the poll", apps: []string{testApp}, every: 100 * time.Millisecond,
			before: func(b *tokenBench) { b.put(testApp, 1) },
			after:  func(b *tokenBench) { b.put(testApp, 2) },
			appid:  testApp, ver: 2,
		},
		{
			name: "lost event caught by WaitNewer's nudge", apps: []string{testApp}, every: never,
			before: func(b *tokenBench) { b.put(testApp, 1) },
			after:  func(b *tokenBench) { b.put(testApp, 2) },
			want:   waitNewer(testApp, 1),
			appid:  testApp, ver: 2,
		},
		{
			name: "lost event, then a write while WaitNewer waits", apps: []string{testApp}, every: never,
			before: func(b *tokenBench) { b.put(testApp, 1) },
			after: func(b *tokenBench) {
				n := b.kv.n.Load()
				go func() {
					b.readAfter(n) // WaitNewer's nudge read version 1: only the wait's re-reads see 2
					b.put(testApp, 2)
				}()
			},
			want:  waitNewer(testApp, 1),
			appid: testApp, ver: 2,
		},
		{
			name: "missing at start, then written with its event", apps: []string{testApp}, every: never,
			after: func(b *tokenBench) { b.put(testApp, 1); b.event(testApp, 1) },
			appid: testApp, ver: 1,
		},
		{
			name: "missing at start, then written without an event", apps: []string{testApp}, every: never,
			after: func(b *tokenBench) { b.put(testApp, 1) },
			want:  waitNewer(testApp, 0),
			appid: testApp, ver: 1,
		},
		{
			name: "an app only an event names", apps: []string{testApp}, every: never,
			before: func(b *tokenBench) { b.put(testApp, 1) },
			after:  func(b *tokenBench) { b.put(otherApp, 4); b.event(otherApp, 4) },
			appid:  otherApp, ver: 4,
		},
		{
			// The event is heard before its version can be read (as from
			// a replica behind): the feed reads again until it can.
			name: "event ahead of the readable record", apps: []string{testApp}, every: never,
			before: func(b *tokenBench) { b.put(testApp, 1) },
			after: func(b *tokenBench) {
				n := b.kv.n.Load()
				b.event(testApp, 2)
				b.readAfter(n) // the event's own read found version 1
				b.put(testApp, 2)
			},
			appid: testApp, ver: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := newTokenBench(t)
			if tt.before != nil {
				tt.before(b)
			}
			c := worker.NewTokenCache(testLogger(t))
			b.follow(c, b.kv, tt.apps, tt.every)
			waitReady(t, c)
			tt.after(b)
			want := tt.want
			if want == nil {
				want = waitVersion(tt.appid, tt.ver)
			}
			if err := want(c); err != nil {
				t.Fatal(err)
			}
			if rec, _ := c.Current(tt.appid); rec.Version != tt.ver || rec.AccessToken != tokenOf(tt.appid, tt.ver) {
				t.Fatalf("cache holds %d %q, want version %d", rec.Version, rec.AccessToken, tt.ver)
			}
		})
	}
}

// waitVersion observes without asking the feed to read.
func waitVersion(appid string, v uint64) func(*worker.TokenCache) error {
	return func(c *worker.TokenCache) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := worker.WaitVersion(ctx, c, appid, v)
		return err
	}
}

func waitNewer(appid string, v uint64) func(*worker.TokenCache) error {
	return func(c *worker.TokenCache) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.WaitNewer(ctx, appid, v)
		return err
	}
}

// flakyKV fails the first reads of the bucket, as a NATS that does not
// answer yet.
type flakyKV struct {
	jetstream.KeyValue
	failures atomic.Int32
}

var errNotYet = errors.New("injected: no answer")

func (f *flakyKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if f.failures.Add(-1) >= 0 {
		return nil, errNotYet
	}
	return f.KeyValue.Get(ctx, key)
}

// TestTokenCacheReadyWaitsForEveryRead: Ready (and so /readyz) waits
// until every configured app's read has answered, and a missing record is
// an answer.
func TestTokenCacheReadyWaitsForEveryRead(t *testing.T) {
	t.Parallel()
	b := newTokenBench(t)
	b.put(testApp, 3)
	kv := &flakyKV{KeyValue: b.kv.KeyValue}
	kv.failures.Store(3)
	c := worker.NewTokenCache(testLogger(t))
	b.follow(c, kv, []string{testApp, otherApp}, time.Hour) // otherApp has no record
	waitReady(t, c)
	if kv.failures.Load() >= 0 {
		t.Fatalf("ready before the failing reads were retried (%d left)", kv.failures.Load()+1)
	}
	if rec, ok := c.Current(testApp); !ok || rec.Version != 3 {
		t.Fatalf("ready without the token: %+v %v", rec, ok)
	}
	if _, ok := c.Current(otherApp); ok {
		t.Fatal("a token for an app without a record")
	}
}

// TestTokenCacheFollowStops: when its context ends Follow returns nil,
// with its subscription gone and no goroutine left behind, even while a
// WaitNewer is waiting.
func TestTokenCacheFollowStops(t *testing.T) {
	b := newTokenBench(t)
	b.put(testApp, 1)
	baseSubs := b.fc.NumSubscriptions()
	baseG := runtime.NumGoroutine()
	c := worker.NewTokenCache(testLogger(t))
	stop := b.follow(c, b.kv, []string{testApp}, 50*time.Millisecond)
	waitReady(t, c)
	wctx, cancelWait := context.WithCancel(context.Background())
	waited := make(chan error, 1)
	go func() { _, err := c.WaitNewer(wctx, testApp, 1); waited <- err }()
	if err := stop(); err != nil {
		t.Fatalf("Follow: %v", err)
	}
	cancelWait()
	if err := <-waited; !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitNewer: %v", err)
	}
	if n := b.fc.NumSubscriptions(); n != baseSubs {
		t.Fatalf("%d subscriptions left, had %d", n, baseSubs)
	}
	// Goroutines end asynchronously (the subscription's delivery loop)
	// and nothing announces it: poll the count, bounded.
	if err := iharness.WaitFor(context.Background(), 5*time.Second, 10*time.Millisecond,
		func() bool { return runtime.NumGoroutine() <= baseG }); err != nil {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines, had %d:\n%s", runtime.NumGoroutine(), baseG, buf[:runtime.Stack(buf, true)])
	}
}
