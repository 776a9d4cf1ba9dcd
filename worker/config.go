package worker

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/handlers"
	"github.com/wxhub/wxhub/handlers/vault"
	"github.com/wxhub/wxhub/wechat"
)

// App is a configured WeChat app: appid and AppSecret. The secret is
// needed only to exchange OAuth codes: without it, oauth.code.received
// jobs for the app end as kind config, user.lookup jobs work.
type App = handlers.App

// Config configures a Worker. Conn, WeChat and at least one App are
// required; every other zero value means the default named on the field.
type Config struct {
	// Conn is the NATS connection for jobs, KV, results and token
	// events; the worker never closes it.
	Conn *nats.Conn
	// Accounts says the NATS server uses wxhub's accounts layout
	// (deploy/nats): the worker reaches WX_JOBS and the token bucket
	// through the API prefixes its account imports (broker.JetStreams).
	// False: every stream in the connection's own account (`wxhub run`).
	Accounts bool
	// WeChat is the API client (its BaseURL points at the simulator in
	// tests and demos).
	WeChat *wechat.Client
	// Apps the worker serves; jobs for any other appid fail with kind
	// config.
	Apps []App
	// Vault keeps users' OAuth tokens for the apps with Vault on (open it
	// with vault.Open); nil when no app has it. Its RefreshTimeout must be
	// at least RetryMaxElapsed + WeChat.Timeout(), or New refuses it.
	Vault *vault.Vault
	// Prefix of every subject, e.g. "wx." (see events.NewSubjects).
	Prefix string
	// Topology is what Provision creates (the admin's act: tests and
	// `wxhub run`; Run only binds). Its Prefix, AckWait, MaxDeliver and
	// MaxAckPending are replaced by this Config's.
	Topology broker.Topology
	// ID names this worker in logs, token.invalidated and OAuth claims;
	// "" means hostname-pid-random.
	ID string
	// Concurrency is how many jobs this process runs at once, all job
	// subjects together (one budget; see the package doc). 0 means 64.
	Concurrency int
	// AckWait of the durable consumers: a delivery not acked by then is
	// redelivered. 0 means 60 s. Must exceed JobTimeout.
	AckWait time.Duration
	// JobTimeout bounds the work of one delivery (token waits, WeChat
	// calls and backoff included). 0 means 45 s.
	JobTimeout time.Duration
	// FinishTimeout bounds what ends a delivery after its work (storing
	// the OAuth outcome, publishing the result, writing the done record).
	// JobTimeout + FinishTimeout must be shorter than AckWait, so no job
	// is redelivered while a delivery of it still runs. 0 means the
	// smaller of 10 s and half of AckWait − JobTimeout.
	FinishTimeout time.Duration
	// Fault is a fault-injection hook for tests only (see
	// handlers.Config.Fault); leave it nil.
	Fault func(stage, resultID string)
	// MaxDeliver of the durable consumers; the last delivery never naks.
	// 0 means 5.
	MaxDeliver int
	// MaxAckPending of each durable consumer: the jobs in flight across
	// ALL worker processes. Keep it above 1.5 × Concurrency × processes
	// (a process also holds up to Concurrency/2 jobs per subject waiting
	// for a slot), or more processes add no capacity. 0 means 1024.
	MaxAckPending int
	// TokenWait bounds a job's wait for a newer token: after a rejection,
	// for a first one, or when the app's token is past its expires_at
	// (handlers.TokenExpired). 0 means 20 s.
	TokenWait time.Duration
	// RetryInitial, RetryMax, RetryMaxElapsed: in-job exponential backoff
	// for transient WeChat errors. 0 means 100 ms, 2 s, 10 s.
	RetryInitial    time.Duration
	RetryMax        time.Duration
	RetryMaxElapsed time.Duration
	// NakDelayMin, NakDelayMax: redelivery delay after a delivery gave
	// up (doubling per delivery). 0 means 1 s and 30 s.
	NakDelayMin time.Duration
	NakDelayMax time.Duration
	// ShutdownGrace is how long Run lets in-flight jobs finish after its
	// context is cancelled before it cancels them (they are then nak'd for
	// immediate redelivery elsewhere). 0 means JobTimeout.
	ShutdownGrace time.Duration
	// SweepInterval: how often the worker looks in the jobs stream for
	// jobs that used all their deliveries without a result and that no
	// max-deliveries advisory ended (no worker was up to hear it). It also
	// sweeps once at start. 0 means AckWait.
	SweepInterval time.Duration
	// InvalidateInterval: this process reports one token version at most
	// once per interval. 0 means 30 s.
	InvalidateInterval time.Duration
	// TokenPoll: how often the token cache re-reads every app's record
	// even without a token.refreshed event (TokenCache.Follow). 0 means
	// DefaultTokenPoll (10 s).
	TokenPoll time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for the expiry of tokens (handlers.TokenExpired:
	// in jobs and in ReadyError) and the timestamps of the results the
	// handlers publish (handlers.Config.Now) and of those the reaper
	// publishes for jobs out of deliveries; nil means time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		c.ID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 5
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = 1024
	}
	def(&c.AckWait, 60*time.Second)
	def(&c.JobTimeout, 45*time.Second)
	// TokenWait, Retry* and NakDelay* pass through to package handlers,
	// which owns their defaults and checks.
	if c.FinishTimeout <= 0 && c.AckWait > c.JobTimeout {
		c.FinishTimeout = min(10*time.Second, (c.AckWait-c.JobTimeout)/2)
	}
	def(&c.ShutdownGrace, c.JobTimeout)
	def(&c.InvalidateInterval, 30*time.Second)
	def(&c.TokenPoll, DefaultTokenPoll)
	def(&c.SweepInterval, c.AckWait)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Topology.Prefix = c.Prefix
	c.Topology.AckWait = c.AckWait
	c.Topology.MaxDeliver = c.MaxDeliver
	c.Topology.MaxAckPending = c.MaxAckPending
}

// Validate reports the first configuration error.
func (c Config) Validate() error {
	switch {
	case c.Conn == nil:
		return errors.New("worker: Conn required")
	case c.WeChat == nil:
		return errors.New("worker: WeChat client required")
	case len(c.Apps) == 0:
		return errors.New("worker: at least one app required")
	case c.JobTimeout+c.FinishTimeout >= c.AckWait:
		return fmt.Errorf("worker: JobTimeout (%s) + FinishTimeout (%s) must be shorter than AckWait (%s), or running jobs get redelivered", c.JobTimeout, c.FinishTimeout, c.AckWait)
	case c.MaxAckPending < c.Concurrency:
		return fmt.Errorf("worker: MaxAckPending (%d) below Concurrency (%d)", c.MaxAckPending, c.Concurrency)
	}
	if err := c.validateSpans(); err != nil {
		return err
	}
	for i, a := range c.Apps {
		if a.AppID == "" {
			return fmt.Errorf("worker: apps[%d]: appid required", i)
		}
	}
	return nil
}

// validateSpans rejects settings under which a job can be delivered again
// after what keeps it to one result is gone:
//   - a worker that dies after storing a result and before writing the
//     done record leaves the job to a redelivery after AckWait, which only
//     the results stream's duplicate window stops: the window must be
//     longer than AckWait;
//   - the done records and OAuth records live as long as a job may stay
//     in WX_JOBS (its max age; package broker sets their TTL to it), and
//     a job's deliveries must fit in that age, or it is removed unfinished.
func (c Config) validateSpans() error {
	t := c.Topology
	window, maxAge := t.DuplicateWindow, t.JobMaxAge
	if window <= 0 {
		window = 10 * time.Minute
	}
	if maxAge <= 0 {
		maxAge = 24 * time.Hour
	}
	if window <= c.AckWait {
		return fmt.Errorf("worker: the duplicate window (%s) must be longer than AckWait (%s): a job redelivered after its worker died between storing its result and recording it done would get a second result", window, c.AckWait)
	}
	if span := c.deliverySpan(); span >= maxAge {
		return fmt.Errorf("worker: MaxDeliver × (AckWait + NakDelayMax) = %s is not below the jobs' max age (%s): a job could expire before its last delivery", span, maxAge)
	}
	return nil
}

// deliverySpan is DeliverySpan of c's settings.
func (c Config) deliverySpan() time.Duration {
	return DeliverySpan(c.AckWait, c.MaxDeliver, c.NakDelayMax)
}

// DeliverySpan bounds the time from a job's first delivery to the end of
// its last: each delivery ends (acked, nak'd, or its AckWait run out)
// within ackWait, and the next starts at most nakDelayMax later (0: the
// default, 30 s). A duplicate window longer than this keeps a job to one
// result through every redelivery while workers run.
func DeliverySpan(ackWait time.Duration, maxDeliver int, nakDelayMax time.Duration) time.Duration {
	if nakDelayMax <= 0 {
		nakDelayMax = 30 * time.Second
	}
	return time.Duration(maxDeliver) * (ackWait + nakDelayMax)
}

// shortWindow says why the duplicate window leaves a gap, or "": a window
// above AckWait covers the first redelivery of a job whose worker died
// between storing its result and recording it done, but when that
// redelivery fails transiently and a later one stores the result after
// the window, the job gets a second result. A window longer than
// deliverySpan closes the gap while workers run (the defaults: 10 min
// against 5 × (60 s + 30 s)); nothing covers a job redelivered after
// every worker was down for longer than the window.
func (c Config) shortWindow() string {
	window := c.Topology.DuplicateWindow
	if window <= 0 {
		window = 10 * time.Minute
	}
	if span := c.deliverySpan(); window <= span {
		return fmt.Sprintf("the duplicate window (%s) is not longer than MaxDeliver × (AckWait + NakDelayMax) = %s: a job whose worker dies between storing its result and recording it done, and whose redelivery then fails transiently, can get a second result; provision a longer --duplicate-window", window, span)
	}
	return ""
}
