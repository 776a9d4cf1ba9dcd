package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/wechat"
)

// TokenCache keeps every app's current global access_token in memory,
// fed by a watch of the wx_tokens bucket. Jobs read it without touching
// NATS, and WaitNewer lets a job wait for the next version without
// polling. The zero value is not usable: call NewTokenCache.
type TokenCache struct {
	log *slog.Logger

	mu      sync.Mutex
	recs    map[string]events.TokenRecord
	changed chan struct{} // closed and replaced on every change
	ready   chan struct{} // closed once the initial values are loaded
	loaded  bool
}

// NewTokenCache returns an empty cache; logger nil means slog.Default().
func NewTokenCache(logger *slog.Logger) *TokenCache {
	if logger == nil {
		logger = slog.Default()
	}
	return &TokenCache{log: logger, recs: map[string]events.TokenRecord{}, changed: make(chan struct{}), ready: make(chan struct{})}
}

// Watch feeds the cache from the wx_tokens bucket until ctx is done
// (then it returns nil) or the watch fails.
func (c *TokenCache) Watch(ctx context.Context, js jetstream.JetStream) error {
	kv, err := js.KeyValue(ctx, events.BucketTokens)
	if err != nil {
		return fmt.Errorf("worker: token bucket: %w", err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("worker: watch %s: %w", events.BucketTokens, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("worker: token watch closed")
			}
			if e == nil {
				c.markLoaded()
				continue
			}
			c.applyEntry(e)
		}
	}
}

func (c *TokenCache) applyEntry(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		c.mu.Lock()
		delete(c.recs, e.Key())
		c.mu.Unlock()
		c.log.Info("token removed from the bucket", "appid", e.Key())
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
// app, and wakes every WaitNewer. The watch calls it; tests and tools may
// too.
func (c *TokenCache) Set(rec events.TokenRecord) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.recs[rec.AppID]; ok && old.Version > rec.Version {
		return
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

// Ready is closed once the bucket's initial values are loaded.
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
func (c *TokenCache) WaitNewer(ctx context.Context, appid string, version uint64) (events.TokenRecord, error) {
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
