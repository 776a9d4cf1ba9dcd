package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/wechat"
)

// TokenCache keeps every app's current global access_token in memory.
// Follow feeds it from the wx_tokens bucket: it reads each app's record,
// re-reads an app when a token.refreshed event names it and every app at
// a regular interval, and at once (then every WaitPoll) an app someone
// waits a newer token for. Jobs read it without touching NATS.
//
// It never watches the bucket: a KV watch is a consumer whose deliveries
// go to a subject of the bucket's account, which across the accounts of
// deploy/nats would let a reader's deliveries land in the holders'
// account. Reads (a direct get) only answer the reader.
//
// The zero value is not usable: call NewTokenCache.
type TokenCache struct {
	log *slog.Logger

	mu      sync.Mutex
	recs    map[string]events.TokenRecord
	changed chan struct{} // closed and replaced on every change
	ready   chan struct{} // closed once the initial values are loaded
	loaded  bool
	waiting map[string]int    // WaitNewer calls in progress, by appid
	nudged  map[string]uint64 // apps to read now, with the version an event named
	kick    chan struct{}     // (cap 1) nudged has apps for the feed
}

// NewTokenCache returns an empty cache; logger nil means slog.Default().
func NewTokenCache(logger *slog.Logger) *TokenCache {
	if logger == nil {
		logger = slog.Default()
	}
	return &TokenCache{log: logger, recs: map[string]events.TokenRecord{}, changed: make(chan struct{}), ready: make(chan struct{}),
		waiting: map[string]int{}, nudged: map[string]uint64{}, kick: make(chan struct{}, 1)}
}

// Intervals of the feed (Follow).
const (
	// DefaultTokenPoll is how often Follow re-reads every app by default:
	// what a lost token.refreshed event costs an app nobody waits for.
	DefaultTokenPoll = 10 * time.Second
	// WaitPoll is how often Follow re-reads an app while a WaitNewer
	// waits for it, an app whose event named a version not read back
	// yet, and an app whose read failed before the cache was ready: what
	// a lost event costs a job waiting for a newer token.
	WaitPoll = 250 * time.Millisecond
	// getTimeout bounds one read of a record.
	getTimeout = 5 * time.Second
)

// Follow feeds the cache from kv (the wx_tokens bucket, reached through
// broker.JetStreams.Bucket) until ctx is done; then it returns nil. It
// returns an error only when it cannot subscribe to refreshedSubject
// (events.Subjects.TokenRefreshed).
//
// It subscribes to refreshedSubject first, then reads the record of each
// of appids and closes Ready once every read has answered (a missing
// record is an answer: the app has no token yet). From then on it reads
// an app again when an event names it (an app only events name is
// followed from then on if it has a record), every app every every (0:
// DefaultTokenPoll),
// and an app WaitNewer waits for at once and every WaitPoll until the
// wait ends. An event's version not yet readable (a replica behind) is
// read again every WaitPoll for up to every.
func (c *TokenCache) Follow(ctx context.Context, kv jetstream.KeyValue, nc *nats.Conn, refreshedSubject string, appids []string, every time.Duration) error {
	if every <= 0 {
		every = DefaultTokenPoll
	}
	sub, err := nc.Subscribe(refreshedSubject, func(m *nats.Msg) {
		var ev events.TokenRefreshed
		if err := json.Unmarshal(m.Data, &ev); err != nil || ev.AppID == "" {
			c.log.Warn("ignoring an unreadable token event", "subject", m.Subject)
			return
		}
		c.nudge(ev.AppID, ev.Version)
	})
	if err != nil {
		return fmt.Errorf("worker: subscribe %s: %w", refreshedSubject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// The subscription is in place before the first read: a refresh
	// stored after that read is heard.
	fctx, cancel := context.WithTimeout(ctx, getTimeout)
	err = nc.FlushWithContext(fctx)
	cancel()
	if err != nil && ctx.Err() != nil {
		return nil
	}

	f := &feed{c: c, kv: kv, every: every, known: map[string]bool{}, failing: map[string]bool{}, behind: map[string]behind{}}
	initial := map[string]bool{}
	for _, a := range appids {
		f.known[a] = true
		initial[a] = true
	}
	poll := time.NewTicker(every)
	defer poll.Stop()
	fast := time.NewTicker(WaitPoll)
	defer fast.Stop()
	read := maps.Clone(initial)
	for {
		f.read(ctx, read)
		if len(initial) > 0 {
			for a := range initial {
				if !f.failing[a] {
					delete(initial, a)
				}
			}
		}
		if len(initial) == 0 && ctx.Err() == nil {
			c.markLoaded()
		}
		read = map[string]bool{}
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
			for a, v := range c.takeNudged() {
				read[a] = true
				// Named by an event: once read, an app with a record is
				// polled like the configured ones (c.Versions below); an
				// appid without one is forgotten (no list that events
				// could grow).
				if b := f.behind[a]; v > b.version {
					f.behind[a] = behind{version: v, since: time.Now()}
				}
			}
		case <-poll.C:
			for a := range f.known {
				read[a] = true
			}
			for a := range c.Versions() {
				read[a] = true
			}
		case <-fast.C:
			for a := range c.waited() {
				read[a] = true
			}
			for a, b := range f.behind {
				if time.Since(b.since) > every {
					delete(f.behind, a) // the regular reads go on
					continue
				}
				read[a] = true
			}
			for a := range initial {
				read[a] = true
			}
		}
	}
}

// feed is Follow's state.
type feed struct {
	c       *TokenCache
	kv      jetstream.KeyValue
	every   time.Duration
	known   map[string]bool   // the configured apps, read at every poll (with every app held)
	failing map[string]bool   // apps whose last read failed (logged once)
	behind  map[string]behind // versions events named, not read back yet
}

type behind struct {
	version uint64
	since   time.Time
}

// read reads the record of every app in apps into the cache.
func (f *feed) read(ctx context.Context, apps map[string]bool) {
	for a := range apps {
		if ctx.Err() != nil {
			return
		}
		gctx, cancel := context.WithTimeout(ctx, getTimeout)
		e, err := f.kv.Get(gctx, a)
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			f.c.remove(a)
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			if !f.failing[a] {
				f.c.log.Warn("cannot read a token record; retrying", "appid", a, "err", err)
			}
			f.failing[a] = true
			continue
		default:
			f.c.applyEntry(e)
		}
		if f.failing[a] {
			f.c.log.Info("token record readable again", "appid", a)
			delete(f.failing, a)
		}
		if b, ok := f.behind[a]; ok {
			if rec, ok := f.c.Current(a); ok && rec.Version >= b.version {
				delete(f.behind, a)
			}
		}
	}
}

// FollowBucket runs Follow on the wx_tokens bucket reached through js
// (broker.JetStreams.Bucket(events.BucketTokens)) until ctx is done,
// opening the bucket again a second after a failure (logged).
func (c *TokenCache) FollowBucket(ctx context.Context, js jetstream.JetStream, nc *nats.Conn, refreshedSubject string, appids []string, every time.Duration) {
	for ctx.Err() == nil {
		kv, err := js.KeyValue(ctx, events.BucketTokens)
		if err == nil {
			err = c.Follow(ctx, kv, nc, refreshedSubject, appids, every)
		} else {
			err = fmt.Errorf("worker: token bucket: %w", err)
		}
		if err != nil && ctx.Err() == nil {
			c.log.Warn("token feed failed; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// nudge asks the feed to read appid now; version > 0 is the version an
// event named.
func (c *TokenCache) nudge(appid string, version uint64) {
	c.mu.Lock()
	if v, ok := c.nudged[appid]; !ok || version > v {
		c.nudged[appid] = version
	}
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *TokenCache) takeNudged() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nudged
	c.nudged = map[string]uint64{}
	return n
}

// waited returns the apps some WaitNewer waits for.
func (c *TokenCache) waited() map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]bool, len(c.waiting))
	for a := range c.waiting {
		out[a] = true
	}
	return out
}

// remove forgets appid's token (its record was deleted).
func (c *TokenCache) remove(appid string) {
	c.mu.Lock()
	_, ok := c.recs[appid]
	delete(c.recs, appid)
	c.mu.Unlock()
	if ok {
		c.log.Info("token removed from the bucket", "appid", appid)
	}
}

func (c *TokenCache) applyEntry(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		c.remove(e.Key())
		return
	}
	var rec events.TokenRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.AccessToken == "" {
		c.log.Warn("ignoring an unreadable token record", "appid", e.Key(), "revision", e.Revision())
		return
	}
	if rec.AppID == "" {
		rec.AppID = e.Key()
	}
	c.Set(rec)
}

// Set stores rec if it is at least as new as the version held for its
// app, and wakes every WaitNewer. The feed calls it; tests and tools may
// too.
func (c *TokenCache) Set(rec events.TokenRecord) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.recs[rec.AppID]; ok && (old.Version > rec.Version ||
		old.Version == rec.Version && old.AccessToken == rec.AccessToken && old.ExpiresAt.Equal(rec.ExpiresAt)) {
		return // older, or the same record read again: nobody to wake
	}
	c.recs[rec.AppID] = rec
	close(c.changed)
	c.changed = make(chan struct{})
	c.log.Debug("token updated", "appid", rec.AppID, "version", rec.Version, "token_fp", wechat.Fingerprint(rec.AccessToken), "expires_at", rec.ExpiresAt)
}

func (c *TokenCache) markLoaded() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.loaded {
		c.loaded = true
		close(c.ready)
	}
}

// Ready is closed once the feed has read every configured app's record
// (Follow).
func (c *TokenCache) Ready() <-chan struct{} { return c.ready }

// Current returns the newest token known for appid.
func (c *TokenCache) Current(appid string) (events.TokenRecord, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec, ok := c.recs[appid]
	return rec, ok
}

// Versions returns the version held for every app (no tokens).
func (c *TokenCache) Versions() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64, len(c.recs))
	for k, r := range c.recs {
		out[k] = r.Version
	}
	return out
}

// WaitNewer returns as soon as a token with a version above version is
// known for appid (version 0: any token), or ctx's error.
//
// While it waits the feed (Follow) reads appid's record at once and every
// WaitPoll, so a lost token.refreshed event delays it by WaitPoll at most.
func (c *TokenCache) WaitNewer(ctx context.Context, appid string, version uint64) (events.TokenRecord, error) {
	if rec, ok := c.Current(appid); ok && rec.Version > version {
		return rec, nil
	}
	c.mu.Lock()
	c.waiting[appid]++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.waiting[appid]--; c.waiting[appid] <= 0 {
			delete(c.waiting, appid)
		}
		c.mu.Unlock()
	}()
	c.nudge(appid, 0)
	for {
		c.mu.Lock()
		rec, ok := c.recs[appid]
		ch := c.changed
		c.mu.Unlock()
		if ok && rec.Version > version {
			return rec, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return events.TokenRecord{}, ctx.Err()
		}
	}
}
