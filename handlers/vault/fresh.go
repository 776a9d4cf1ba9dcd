package vault

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/internal/cas"
	"github.com/wxhub/wxhub/wechat"
)

// RefreshFunc renews a user's tokens with the refresh_token: in production
// wechat.Client.RefreshOAuthToken for the user's appid.
type RefreshFunc func(ctx context.Context, refreshToken string) (wechat.OAuthToken, error)

// FreshRequest asks Fresh for a user's usable tokens.
type FreshRequest struct {
	AppID, OpenID string
	// Margin: an access_token with less than this left counts as expired.
	Margin time.Duration
	// Rejected, when set, is an access_token WeChat has just refused
	// (42001, 40001, 40014): a record still holding it is refreshed even
	// if our clock says it is valid.
	Rejected string
	// RejectedRevision is the revision of the record the rejected token
	// was read from. A record refreshed since (from that revision or a
	// later one: Tokens.RefreshedFrom) is not refreshed again, even when
	// it holds the same access_token (WeChat returns it while it is
	// unexpired): N reports of one rejected token cause one refresh. A
	// record at a later revision that no refresh wrote (Rotate
	// re-encrypted it) still holds the rejected token and is refreshed.
	// 0 means the revision this call first reads.
	RejectedRevision uint64
	// RefreshTTL is the life of a NEW refresh_token, should WeChat return
	// a different one (30 days for web apps).
	RefreshTTL time.Duration
	// Refresh calls WeChat. It should take no longer than the vault's
	// Options.RefreshTimeout, retries included; its context ends before
	// the refresh lock may lapse (three quarters of Options.LockTTL after
	// the lock was taken, at least RefreshTimeout + RefreshSlack), and it
	// must honour it.
	Refresh RefreshFunc
}

// Fresh returns the user's record with a usable access_token, refreshing
// it (once for all concurrent callers, across processes) when it has
// expired; refreshed says whether this call did the refresh. It fails with
// ErrNotFound when there is no record, ErrRefreshExpired when the
// refresh_token has expired by our clock, and with Refresh's error
// (typically a *wechat.APIError: 40030, 42002, 42007 mean the user must
// authorize again) when WeChat refused.
func (v *Vault) Fresh(ctx context.Context, req FreshRequest) (rec Record, refreshed bool, err error) {
	if err := checkUser(req.AppID, req.OpenID); err != nil {
		return Record{}, false, err
	}
	rejectedRev := req.RejectedRevision
	for range 5 {
		rec, err := v.Get(ctx, req.AppID, req.OpenID)
		if err != nil {
			return Record{}, false, err
		}
		now := v.opts.Now()
		if !rec.Tokens.RefreshValid(now) {
			return rec, false, ErrRefreshExpired
		}
		rejected := req.Rejected != "" && rec.Tokens.AccessToken == req.Rejected
		if rejected && rejectedRev == 0 {
			rejectedRev = rec.Revision
		}
		// A record refreshed since the rejection counts, even when it
		// holds the same access_token; one merely re-encrypted (Rotate)
		// since, at a later revision, does not.
		rejected = rejected && !rec.Tokens.refreshedSince(rejectedRev)
		if rec.Tokens.AccessValid(now, req.Margin) && !rejected {
			return rec, false, nil
		}
		rec, refreshed, err = v.refreshOnce(ctx, req, rec)
		if errors.Is(err, errRetry) {
			continue
		}
		return rec, refreshed, err
	}
	return Record{}, false, fmt.Errorf("vault: the record kept changing while refreshing")
}

var errRetry = errors.New("vault: look again")

// refreshOnce takes the user's lock and refreshes, or waits for whoever
// holds it; errRetry means "read the record again".
func (v *Vault) refreshOnce(ctx context.Context, req FreshRequest, seen Record) (Record, bool, error) {
	// Watch before taking the lock, so a release in between is not missed.
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	w, err := v.kv.Watch(wctx, "*."+req.AppID+"."+req.OpenID, jetstream.UpdatesOnly(), jetstream.MetaOnly())
	if err != nil {
		return Record{}, false, fmt.Errorf("vault: watch: %w", err)
	}
	defer func() { _ = w.Stop() }()

	lk := lockKey(req.AppID, req.OpenID)
	locked := time.Now() // before the server starts the lock's TTL
	lockRev, err := v.kv.Create(ctx, lk, []byte(v.opts.Owner), jetstream.KeyTTL(v.opts.LockTTL))
	// Lost, not ErrKeyExists: over the marker an earlier release or lapse
	// left, nats.go passes a replicated bucket's 10164 on bare.
	if cas.Lost(err) {
		// Someone else refreshes: wait for their record or their release.
		timer := time.NewTimer(v.opts.LockTTL + time.Second)
		defer timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return Record{}, false, ctx.Err()
			case <-timer.C:
				return Record{}, false, errRetry
			case e, ok := <-w.Updates():
				if !ok {
					return Record{}, false, errRetry
				}
				if e == nil {
					continue
				}
				if e.Key() == lk && e.Operation() == jetstream.KeyValuePut {
					continue // a new lock; its release comes later
				}
				return Record{}, false, errRetry
			}
		}
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("vault: refresh lock: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := v.kv.Purge(rctx, lk, jetstream.LastRevision(lockRev), jetstream.PurgeTTL(time.Minute)); err != nil &&
			!cas.Lost(err) {
			v.opts.Logger.Warn("vault: releasing a refresh lock failed; it lapses by itself", "appid", req.AppID, "openid", req.OpenID, "err", err)
		}
	}()

	// Under the lock: has someone refreshed since we looked?
	cur, err := v.Get(ctx, req.AppID, req.OpenID)
	if err != nil {
		return Record{}, false, err
	}
	if cur.Revision != seen.Revision {
		return Record{}, false, errRetry
	}
	// The refresh runs only while the lock surely holds: a waiter takes
	// the lock once it lapses, and must not refresh beside us.
	deadline := refreshDeadline(v.opts.LockTTL)
	rctx, cancel := context.WithDeadline(ctx, locked.Add(deadline))
	defer cancel()
	tok, err := req.Refresh(rctx, cur.Tokens.RefreshToken)
	if err != nil {
		var api *wechat.APIError
		if rctx.Err() != nil && ctx.Err() == nil && !errors.As(err, &api) {
			err = fmt.Errorf("vault: refresh cut after %v, before the refresh lock may lapse (it ran longer than RefreshTimeout %v): %w", deadline, v.opts.RefreshTimeout, err)
		}
		return cur, false, err
	}
	if tok.OpenID != "" && tok.OpenID != req.OpenID {
		return cur, false, fmt.Errorf("vault: refresh answered for another openid")
	}
	nt := FromExchange(tok, v.opts.Now(), req.RefreshTTL, &cur.Tokens)
	nt.RefreshedFrom = cur.Revision
	rec, err := v.StoreIf(ctx, req.AppID, req.OpenID, nt, cur.Revision)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// A login (or Rotate) wrote the record meanwhile: read it again;
		// a new login's tokens are fresh, a re-encrypted record is
		// refreshed once more (WeChat answers the same token).
		return Record{}, false, errRetry
	}
	if err != nil {
		return Record{}, true, err
	}
	return rec, true, nil
}
