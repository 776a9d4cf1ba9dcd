package handlers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers/vault"
	"github.com/wxhub/wxhub/wechat"
)

// App is a configured WeChat app: its appid and the AppSecret needed to
// exchange OAuth codes.
type App struct {
	AppID  string
	Secret string
	// Vault keeps this app's users' OAuth tokens in the vault after each
	// login (Config.Vault), which oauth.userinfo jobs need. Off by default.
	Vault bool
	// RefreshTTL is the life of this app's refresh_tokens from the login:
	// 0 means 30 days (web apps); mobile apps get 180 days from WeChat.
	RefreshTTL time.Duration
}

// LogValue keeps the secret out of logs.
func (a App) LogValue() slog.Value {
	return slog.GroupValue(slog.String("appid", a.AppID), slog.String("secret_fp", wechat.Fingerprint(a.Secret)))
}

// TokenSource gives the current global access_token of an app, from memory.
type TokenSource interface {
	// Current returns the newest token known for appid.
	Current(appid string) (events.TokenRecord, bool)
	// WaitNewer blocks until a token with a version greater than version
	// is known for appid (version 0: any token), or ctx is done.
	WaitNewer(ctx context.Context, appid string, version uint64) (events.TokenRecord, error)
}

// Invalidator reports that WeChat rejected the token of appid with the
// given version (publishes token.invalidated).
type Invalidator interface {
	Invalidate(ctx context.Context, appid string, version uint64, errcode int) error
}

// Config configures Handlers. WeChat, Tokens, Invalidator, Publisher,
// OAuth, Done and at least one App are required; every other zero value means
// the default named on the field.
type Config struct {
	WeChat      *wechat.Client
	Tokens      TokenSource
	Invalidator Invalidator
	// Publisher stores results and dead letters in JetStream (see
	// package worker's Publisher).
	Publisher Publisher
	OAuth     OAuthStore
	// Done keeps the done record of every finished job (wx_done).
	Done DoneStore
	// Vault keeps users' OAuth tokens for the apps with Vault on; nil
	// when no app has it. Its RefreshTimeout must cover a refresh with
	// its retries: at least RetryMaxElapsed + WeChat.Timeout() (the
	// defaults, 10 s + 10 s, fit vault.DefaultRefreshTimeout).
	Vault *vault.Vault
	Apps  []App
	// Prefix of every subject (see events.NewSubjects).
	Prefix string
	// MaxDeliver is the consumer's MaxDeliver: on that delivery a job
	// is never retried again. 0 means 5.
	MaxDeliver int
	// JobTimeout bounds the work of one delivery; JobTimeout +
	// FinishTimeout must be shorter than the consumer's AckWait. 0 means
	// 45 s.
	JobTimeout time.Duration
	// TokenWait bounds the wait for a newer token after a rejection, for
	// a first token, or for a newer one when the app's token has expired
	// (TokenExpired). 0 means 20 s.
	TokenWait time.Duration
	// MaxRotations bounds how many newer tokens one delivery tries. 0
	// means 3.
	MaxRotations int
	// RetryInitial, RetryMax and RetryMaxElapsed shape the exponential
	// backoff (cenkalti/backoff/v4) for transient WeChat errors within
	// one delivery. 0 means 100 ms, 2 s and 10 s.
	RetryInitial    time.Duration
	RetryMax        time.Duration
	RetryMaxElapsed time.Duration
	// NakDelayMin and NakDelayMax bound the redelivery delay after a
	// delivery gave up on a transient error: NakDelayMin doubled per
	// delivery, capped by NakDelayMax. 0 means 1 s and 30 s.
	NakDelayMin time.Duration
	NakDelayMax time.Duration
	// FinishTimeout bounds what ends a delivery after its work: storing
	// the OAuth outcome, publishing the result (and dead letter), writing
	// the done record. A delivery is over JobTimeout + FinishTimeout
	// after it started. 0 means 10 s.
	FinishTimeout time.Duration
	// Fault, if set, is called at the fault stages (FaultResultStored,
	// FaultDoneRecorded) with the job's result id. It exists for fault
	// tests only (cmd/wxhub wires it to the WXHUB_TEST_FAULT variable to
	// SIGKILL the process there); leave it nil.
	Fault func(stage, resultID string)
	// Reporter names this worker in token.invalidated and OAuth claims.
	Reporter string
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now returns the time for result timestamps and for the expiry of
	// tokens (TokenExpired); nil means time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 5
	}
	if c.MaxRotations <= 0 {
		c.MaxRotations = 3
	}
	def(&c.JobTimeout, 45*time.Second)
	def(&c.TokenWait, 20*time.Second)
	def(&c.RetryInitial, 100*time.Millisecond)
	def(&c.RetryMax, 2*time.Second)
	def(&c.RetryMaxElapsed, 10*time.Second)
	def(&c.NakDelayMin, time.Second)
	def(&c.NakDelayMax, 30*time.Second)
	def(&c.FinishTimeout, 10*time.Second)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports the first configuration error.
func (c Config) Validate() error {
	switch {
	case c.WeChat == nil:
		return errors.New("handlers: WeChat client required")
	case c.Tokens == nil:
		return errors.New("handlers: Tokens required")
	case c.Invalidator == nil:
		return errors.New("handlers: Invalidator required")
	case c.Publisher == nil:
		return errors.New("handlers: Publisher required")
	case c.OAuth == nil:
		return errors.New("handlers: OAuth store required")
	case c.Done == nil:
		return errors.New("handlers: Done store required")
	case len(c.Apps) == 0:
		return errors.New("handlers: at least one app required")
	case c.NakDelayMin > c.NakDelayMax:
		return errors.New("handlers: NakDelayMin above NakDelayMax")
	}
	if err := c.validateVault(); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, a := range c.Apps {
		if a.AppID == "" {
			return fmt.Errorf("handlers: apps[%d]: appid required", i)
		}
		if seen[a.AppID] {
			return fmt.Errorf("handlers: apps[%d]: appid %s listed twice", i, a.AppID)
		}
		seen[a.AppID] = true
		if a.Vault && c.Vault == nil {
			return fmt.Errorf("handlers: apps[%d]: %s has the vault on but no Vault is configured", i, a.AppID)
		}
	}
	return nil
}

// validateVault refuses a vault whose refresh lock would not cover a
// refresh: the refresh retries transient errors for up to RetryMaxElapsed,
// and its last call may start just before that and take the client's
// Timeout.
func (c Config) validateVault() error {
	if c.Vault == nil {
		return nil
	}
	need := c.RetryMaxElapsed + c.WeChat.Timeout()
	if have := c.Vault.RefreshTimeout(); have < need {
		return fmt.Errorf("handlers: a user-token refresh may take RetryMaxElapsed (%s) + the WeChat client's Timeout (%s) = %s, longer than the vault's RefreshTimeout (%s), and would be cut before its refresh lock lapses: open the vault with vault.Options.RefreshTimeout of at least %s (its LockTTL follows)",
			c.RetryMaxElapsed, c.WeChat.Timeout(), need, have, need)
	}
	return nil
}
