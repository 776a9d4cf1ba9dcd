package vault

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/wxhub/wxhub/events"
)

// ErrOptions: Options that do not fit together (see Options.Validate).
var ErrOptions = errors.New("vault: bad options")

// DefaultRefreshTimeout is Options.RefreshTimeout's default: the worker's
// refresh with its defaults, 10 s of retries (RetryMaxElapsed) of which
// the last call may start just before the 10 s are up and take the
// WeChat client's 10 s timeout.
const DefaultRefreshTimeout = 20 * time.Second

// RefreshSlack is how much longer than Options.RefreshTimeout a refresh
// may run before it is cut: for the read under the lock before the
// refresh and for the refresh's own work between and after its calls.
const RefreshSlack = time.Second

// Options tune a Vault; the zero value means the defaults on each field.
type Options struct {
	// Bucket is the KV bucket; "" means events.BucketVault (wx_vault).
	Bucket string
	// Now is the clock for token expiries; nil means time.Now.
	Now func() time.Time
	// RefreshTimeout is the longest one call of a FreshRequest's Refresh
	// may take, its retries and each call's HTTP timeout included: for
	// the worker, RetryMaxElapsed plus the WeChat client's Timeout
	// (package handlers refuses a vault whose RefreshTimeout is shorter).
	// 0 means DefaultRefreshTimeout (20 s).
	RefreshTimeout time.Duration
	// LockTTL is the life of a user's refresh lock: how long it holds
	// when its refresher dies, and about how long the others wait for
	// it. A refresh is cut three quarters of it after the lock was taken
	// (the last quarter is the margin for storing the result), so it
	// never outlasts the lock; that deadline must cover RefreshTimeout
	// plus RefreshSlack. NATS keeps a key's TTL in whole seconds, so it
	// must be one. 0 means MinLockTTL(RefreshTimeout): 28 s for the
	// default RefreshTimeout.
	LockTTL time.Duration
	// Owner names this process in refresh locks; "" means "vault".
	Owner string
	// Logger; nil means slog.Default().
	Logger *slog.Logger

	hooks hooks // for the package's tests only
}

// hooks let the package's tests hold a vault at a point where it races
// others; nil ones do nothing.
type hooks struct {
	// beforeCheckCreate: Open found no check record of the newest key
	// and is about to create it.
	beforeCheckCreate func()
	// rotateListed: Rotate listed the records it re-encrypts first.
	rotateListed func()
}

func (h hooks) call(f func()) {
	if f != nil {
		f()
	}
}

// MinLockTTL is the shortest lock TTL whose refresh deadline (three
// quarters of it) covers a refresh of refreshTimeout plus RefreshSlack,
// in whole seconds.
func MinLockTTL(refreshTimeout time.Duration) time.Duration {
	need := refreshTimeout + RefreshSlack
	ttl := (need*4/3 + time.Second - 1).Truncate(time.Second)
	for refreshDeadline(ttl) < need { // integer rounding, at most once
		ttl += time.Second
	}
	return ttl
}

// refreshDeadline is how long after the lock was taken a refresh is cut:
// the lock's TTL less a quarter, the margin for storing the result and
// for NATS's latency, so that no refresh runs once the lock may have
// lapsed and a waiter may have taken it.
func refreshDeadline(lockTTL time.Duration) time.Duration { return lockTTL - lockTTL/4 }

func (o *Options) setDefaults() {
	if o.Bucket == "" {
		o.Bucket = events.BucketVault
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RefreshTimeout <= 0 {
		o.RefreshTimeout = DefaultRefreshTimeout
	}
	if o.LockTTL <= 0 {
		o.LockTTL = MinLockTTL(o.RefreshTimeout)
	}
	if o.Owner == "" {
		o.Owner = "vault"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Validate reports the first option that does not fit the others, as an
// error matching ErrOptions. Zero values stand for their defaults.
func (o Options) Validate() error {
	o.setDefaults()
	if o.LockTTL%time.Second != 0 {
		return fmt.Errorf("%w: LockTTL %s is not a whole number of seconds (NATS keeps a key's TTL in whole seconds: the lock would lapse after %s)",
			ErrOptions, o.LockTTL, o.LockTTL.Truncate(time.Second))
	}
	if d, need := refreshDeadline(o.LockTTL), o.RefreshTimeout+RefreshSlack; d < need {
		return fmt.Errorf("%w: LockTTL %s cuts a refresh after %s (three quarters of it), before RefreshTimeout %s plus %s of slack: a refresh within its time would fail; use a LockTTL of at least %s, or 0 to derive it",
			ErrOptions, o.LockTTL, d, o.RefreshTimeout, RefreshSlack, MinLockTTL(o.RefreshTimeout))
	}
	return nil
}
