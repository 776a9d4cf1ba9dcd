package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
)

// Topology sizes the streams and buckets. The zero value is valid: one
// replica and the defaults below.
type Topology struct {
	// Prefix for every subject (see events.NewSubjects).
	Prefix string
	// Replicas for streams and buckets; 0 means 1. Use 3 on a cluster.
	Replicas int
	// DuplicateWindow of the job and result streams; 0 means 10 minutes.
	// Inside it a second publish with the same Nats-Msg-Id is dropped;
	// beyond it the wx_done records keep a job to one result. It must
	// cover a worker's redelivery after a crash (see
	// worker.Config.Validate).
	DuplicateWindow time.Duration
	// JobMaxAge bounds how long an unconsumed job is kept; 0 means 24h.
	// It is also the TTL of the wx_done and wx_oauth records, so they
	// outlive every delivery of their job.
	JobMaxAge time.Duration
	// ResultMaxAge bounds how long results are kept; 0 means 24h.
	ResultMaxAge time.Duration

	// The workers' durable consumers (one per job subject). Workers bind
	// to them and refuse to start when their own AckWait or MaxDeliver
	// differ, so provision with the workers' settings.

	// AckWait: a delivery not acked by then is redelivered; 0 means 60s.
	AckWait time.Duration
	// MaxDeliver: deliveries of a job before it fails; 0 means 5.
	MaxDeliver int
	// MaxAckPending: jobs in flight across all workers per job subject;
	// 0 means 1024.
	MaxAckPending int
}

// Defaults of the workers' durable consumers.
const (
	DefaultAckWait       = 60 * time.Second
	DefaultMaxDeliver    = 5
	DefaultMaxAckPending = 1024
	// MaxWaiting is the durables' limit on waiting pull requests (a
	// worker process keeps one or two per job subject). JetStream cannot
	// change it on an existing consumer, so it never changes.
	MaxWaiting = 4096
)

func (t *Topology) setDefaults() {
	if t.Replicas <= 0 {
		t.Replicas = 1
	}
	if t.DuplicateWindow <= 0 {
		t.DuplicateWindow = 10 * time.Minute
	}
	if t.JobMaxAge <= 0 {
		t.JobMaxAge = 24 * time.Hour
	}
	if t.ResultMaxAge <= 0 {
		t.ResultMaxAge = 24 * time.Hour
	}
	if t.AckWait <= 0 {
		t.AckWait = DefaultAckWait
	}
	if t.MaxDeliver <= 0 {
		t.MaxDeliver = DefaultMaxDeliver
	}
	if t.MaxAckPending <= 0 {
		t.MaxAckPending = DefaultMaxAckPending
	}
}

// ConsumerConfigs returns the durable pull consumers of WX_JOBS, one per
// job subject (events.WorkerConsumer).
func (t Topology) ConsumerConfigs() []jetstream.ConsumerConfig {
	t.setDefaults()
	s := events.NewSubjects(t.Prefix)
	var out []jetstream.ConsumerConfig
	for _, bare := range events.NewSubjects("").Jobs() {
		subject := s.Prefix + bare
		out = append(out, jetstream.ConsumerConfig{
			Durable:       events.WorkerConsumer(bare),
			Description:   "wxhub workers: " + subject,
			FilterSubject: subject,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       t.AckWait,
			MaxDeliver:    t.MaxDeliver,
			MaxAckPending: t.MaxAckPending,
			MaxWaiting:    MaxWaiting,
		})
	}
	return out
}

// StreamConfigs returns the configuration of wxhub's four streams.
//
// WX_RESULTS listens only on the internal subjects
// <prefix>wxhub.result.user.profile and <prefix>wxhub.result.user.profile.failed,
// stores each result under its public subject (<prefix>user.profile,
// <prefix>user.profile.failed: consumers filter on those) and republishes
// it there once stored.
func (t Topology) StreamConfigs() []jetstream.StreamConfig {
	t.setDefaults()
	s := events.NewSubjects(t.Prefix)
	return []jetstream.StreamConfig{
		{
			Name:        events.StreamJobs,
			Description: "wxhub jobs: one durable consumer per job subject",
			Subjects:    s.Jobs(),
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
			MaxAge:      t.JobMaxAge,
			Duplicates:  t.DuplicateWindow,
			// No MaxMsgSize: the stream takes whatever the server takes
			// (max_payload), so an oversized job is stored and ends as
			// invalid_job with a dead letter instead of vanishing.
		},
		{
			Name:        events.StreamResults,
			Description: "wxhub results: user.profile and user.profile.failed",
			// Workers publish to the internal stored subjects; the
			// stream keeps each result under its public subject and
			// only then republishes it to core subscribers, so a
			// duplicate (dropped by the dedupe) never reaches them.
			Subjects:         s.StoredResults(),
			SubjectTransform: &jetstream.SubjectTransformConfig{Source: s.StoredResultPrefix + ">", Destination: s.Prefix + ">"},
			RePublish:        &jetstream.RePublish{Source: s.Prefix + "user.>", Destination: s.Prefix + "user.>"},
			Retention:        jetstream.LimitsPolicy,
			Storage:          jetstream.FileStorage,
			Replicas:         t.Replicas,
			MaxAge:           t.ResultMaxAge,
			Duplicates:       t.DuplicateWindow,
		},
		{
			Name:        events.StreamTokenEvents,
			Description: "wxhub token events (audit trail; never holds a token)",
			Subjects:    s.Tokens(),
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
			MaxAge:      24 * time.Hour,
			Duplicates:  time.Minute,
		},
		{
			Name:        events.StreamDeadLetters,
			Description: "wxhub dead letters: original bytes of rejected jobs",
			// Stored first, then republished, as the results.
			Subjects:         []string{s.StoredDeadLetterPrefix + ">"},
			SubjectTransform: &jetstream.SubjectTransformConfig{Source: s.StoredDeadLetterPrefix + ">", Destination: s.DeadLetterPrefix + ">"},
			RePublish:        &jetstream.RePublish{Source: s.DeadLetterPrefix + ">", Destination: s.DeadLetterPrefix + ">"},
			Retention:        jetstream.LimitsPolicy,
			Storage:          jetstream.FileStorage,
			Replicas:         t.Replicas,
			MaxAge:           7 * 24 * time.Hour,
			Duplicates:       t.DuplicateWindow,
		},
	}
}

// BucketConfigs returns the configuration of wxhub's KV buckets.
func (t Topology) BucketConfigs() []jetstream.KeyValueConfig {
	t.setDefaults()
	return []jetstream.KeyValueConfig{
		{
			Bucket:      events.BucketTokens,
			Description: "global access_token per appid (holder writes, CAS on revision)",
			History:     5,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
		},
		{
			Bucket:         events.BucketLeases,
			Description:    "holder leadership lease per appid (per-key TTL)",
			History:        1,
			Storage:        jetstream.FileStorage,
			Replicas:       t.Replicas,
			LimitMarkerTTL: time.Minute,
		},
		{
			Bucket:      events.BucketQuota,
			Description: "token fetches per appid per China day (appid.YYYYMMDD)",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
			TTL:         72 * time.Hour,
		},
		{
			Bucket:      events.BucketOAuth,
			Description: "OAuth code exchange outcomes by sha256(appid+code)",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
			// As long as the job may be redelivered: the owner's
			// redelivery finishes from the identity stored here.
			TTL: t.JobMaxAge,
		},
		{
			Bucket:      events.BucketDone,
			Description: "finished jobs by sha256(result id): a redelivery ends without a second result",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
			TTL:         t.JobMaxAge,
		},
		{
			Bucket:      events.BucketLoginState,
			Description: "web-login states by nonce (used once: revision-checked delete)",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
			TTL:         10 * time.Minute,
		},
		{
			// Per-record TTL (the refresh_token's remaining life) needs
			// LimitMarkerTTL; no bucket TTL: key check records live on.
			Bucket:         events.BucketVault,
			Description:    "users' OAuth tokens, AES-256-GCM encrypted, by appid.openid (per-key TTL)",
			History:        1,
			Storage:        jetstream.FileStorage,
			Replicas:       t.Replicas,
			LimitMarkerTTL: time.Minute,
		},
	}
}

// Provision creates or updates every stream, bucket and durable consumer.
// It is the admin's act (`wxhub provision`, and `wxhub run` on its
// embedded server): no other role's grant allows it (package grants). It
// is idempotent, and since it may run while a cluster is still electing
// its JetStream leaders, it retries failed steps with exponential backoff
// until ctx ends (give it a deadline).
//
// js is the admin's view (role grants.Provision): each stream, bucket and
// durable is made through js.For(its stream), so in the accounts layout
// the token bucket is created in HOLDER through $JS.HOLDER.API, the vault
// in WORKER through $JS.WORKER.API, and the job streams in CORE, the
// admin's own account.
func Provision(ctx context.Context, js *JetStreams, t Topology) error {
	if js.Role() != grants.Provision {
		return fmt.Errorf("broker: provision needs the %s role's view of the streams, not %s's", grants.Provision, js.Role())
	}
	for _, sc := range t.StreamConfigs() {
		err := retry(ctx, func(ctx context.Context) error {
			if err := refuseScaleDown(ctx, js.For(sc.Name), sc.Name, sc.Replicas); err != nil {
				return err
			}
			_, err := js.For(sc.Name).CreateOrUpdateStream(ctx, sc)
			return err
		})
		if err != nil {
			return fmt.Errorf("broker: stream %s: %w", sc.Name, err)
		}
	}
	for _, kc := range t.BucketConfigs() {
		err := retry(ctx, func(ctx context.Context) error {
			if err := refuseScaleDown(ctx, js.Bucket(kc.Bucket), grants.KVStream(kc.Bucket), kc.Replicas); err != nil {
				return err
			}
			_, err := js.Bucket(kc.Bucket).CreateOrUpdateKeyValue(ctx, kc)
			return err
		})
		if err != nil {
			return fmt.Errorf("broker: bucket %s: %w", kc.Bucket, err)
		}
	}
	for _, cc := range t.ConsumerConfigs() {
		err := retry(ctx, func(ctx context.Context) error {
			_, err := js.For(events.StreamJobs).CreateOrUpdateConsumer(ctx, events.StreamJobs, cc)
			return err
		})
		if err != nil {
			return fmt.Errorf("broker: consumer %s on %s: %w", cc.Durable, events.StreamJobs, err)
		}
	}
	return nil
}

// ErrScaleDown is wrapped by Provision's error when a stream or bucket
// exists with more replicas than the topology asks for. Provision never
// scales one down: run by hand without --replicas on a cluster, it would
// otherwise take every stream from 3 replicas to 1. Scaling down is done
// deliberately (e.g. `nats stream edit --replicas`).
var ErrScaleDown = errors.New("provision would scale down")

// refuseScaleDown fails, for good (backoff.Permanent), when stream exists
// with more replicas than want.
func refuseScaleDown(ctx context.Context, js jetstream.JetStream, stream string, want int) error {
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if have := s.CachedInfo().Config.Replicas; have > want {
		return backoff.Permanent(fmt.Errorf("%w: stream %s has %d replicas and this provision asks for %d: pass --replicas %d (or set replicas: %d); scale down by hand if you mean it",
			ErrScaleDown, stream, have, want, have, have))
	}
	return nil
}

// ErrNotProvisioned is wrapped by Bind's error when a stream, bucket or
// consumer a role needs does not exist.
var ErrNotProvisioned = errors.New("not provisioned")

// ErrWrongLayout is wrapped by Bind's error when what the role needs is
// missing where it looked but found through the other accounts layout:
// the server is (or is not) the accounts layout of deploy/nats and the
// role's --nats-accounts says otherwise.
var ErrWrongLayout = errors.New("wrong NATS accounts layout")

// Bind checks that every stream, bucket and durable consumer that the
// grant of js's role names exists (package grants), each through the
// handle that reaches it (js.For), using only the calls the grant allows.
// Roles start at the same time as `wxhub provision`, so it looks again
// with backoff until ctx ends; then its error names everything still
// missing and wraps ErrNotProvisioned, or ErrWrongLayout when the other
// accounts layout finds them (set or unset --nats-accounts).
func Bind(ctx context.Context, js *JetStreams) error {
	role := js.Role()
	streams, consumers := grants.Uses(role)
	// missing is what the last complete look found missing, and unsure
	// the streams a look could not check (an error other than not
	// found, e.g. a call the server does not answer): a look cut short
	// by ctx's end keeps the previous one's answer, so the error still
	// names what is missing.
	var missing, unsure []string
	type look struct {
		stream, what string // the stream asked, what it is called in errors
		notFound     bool
		err          error
	}
	outer := ctx
	check := func(ctx context.Context) error {
		// All calls at once, each for at most bindCallTimeout: one the
		// server never answers does not hold up the look.
		looks := make([]look, 0, len(streams)+len(consumers))
		for _, st := range streams {
			looks = append(looks, look{stream: st, what: describeStream(st)})
		}
		for _, c := range consumers {
			looks = append(looks, look{stream: c.Stream, what: "consumer " + c.Durable + " on " + c.Stream})
		}
		var wg sync.WaitGroup
		for i := range looks {
			l := &looks[i]
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, bindCallTimeout)
				defer cancel()
				var err error
				if i < len(streams) {
					_, err = js.For(l.stream).Stream(cctx, l.stream)
				} else {
					c := consumers[i-len(streams)]
					_, err = js.For(c.Stream).Consumer(cctx, c.Stream, c.Durable)
				}
				l.notFound = errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound)
				l.err = err
			}()
		}
		wg.Wait()
		var found, failed []string
		var last error
		for _, l := range looks {
			switch {
			case l.notFound:
				found = append(found, l.what)
			case l.err != nil:
				failed = append(failed, l.stream)
				last = fmt.Errorf("%s: %w", l.what, l.err)
			}
		}
		if last != nil && outer.Err() != nil {
			return last // cut short: keep the previous look's answer
		}
		missing, unsure = found, failed
		if len(missing) > 0 {
			return ErrNotProvisioned
		}
		return last
	}
	err := retry(ctx, check)
	if err == nil {
		return nil
	}
	if flag, ok := otherLayoutFinds(ctx, js, streams, missing, unsure); ok {
		what := slices.Clone(missing)
		for _, st := range unsure {
			if d := describeStream(st); !slices.Contains(what, d) {
				what = append(what, d)
			}
		}
		return fmt.Errorf("broker: %s: %w: %s not reachable here but found through the other layout: %s", role, ErrWrongLayout, strings.Join(what, ", "), flag)
	}
	if len(missing) > 0 {
		return fmt.Errorf("broker: %s: %w on this NATS: %s (run `wxhub provision` with admin credentials first)",
			role, ErrNotProvisioned, strings.Join(missing, ", "))
	}
	return fmt.Errorf("broker: %s: bind: %w", role, err)
}

// bindCallTimeout bounds each call of one of Bind's looks.
const bindCallTimeout = 2 * time.Second

// otherLayoutFinds reports whether the handles of the other accounts
// layout reach one of the streams Bind could not find or check, and then
// what the operator must change. It looks once, for at most two seconds
// beyond ctx's end (Bind's look has used ctx up).
func otherLayoutFinds(ctx context.Context, js *JetStreams, streams, missing, unsure []string) (string, bool) {
	if len(missing) == 0 && len(unsure) == 0 {
		return "", false
	}
	other, err := NewJetStreams(js.Conn(), js.Role(), !js.Accounts(), js.opts...)
	if err != nil {
		return "", false
	}
	look := slices.Clone(unsure)
	for _, st := range streams {
		if slices.Contains(missing, describeStream(st)) {
			look = append(look, st)
		}
	}
	// All at once: a call the server does not answer (not granted, not
	// imported) takes the whole time.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	found := make(chan bool, len(look))
	n := 0
	for _, st := range slices.Compact(slices.Sorted(slices.Values(look))) {
		if other.prefix(st) == js.prefix(st) {
			continue // the same call: no other answer to expect
		}
		n++
		go func() {
			_, err := other.For(st).Stream(ctx, st)
			found <- err == nil
		}()
	}
	ok := false
	for range n {
		if ok = <-found; ok {
			break // the rest end with ctx
		}
	}
	switch {
	case !ok:
		return "", false
	case js.Accounts():
		return "unset --nats-accounts (nats.accounts: false): this server has no wxhub accounts layout", true
	default:
		return "set --nats-accounts (nats.accounts: true): this server uses wxhub's accounts layout (deploy/nats)", true
	}
}

func describeStream(name string) string {
	if b, ok := strings.CutPrefix(name, "KV_"); ok {
		return "bucket " + b
	}
	return "stream " + name
}

// retry runs op until it succeeds or ctx ends; each attempt gets at most
// 10 s. The error returned is op's last one.
func retry(ctx context.Context, op func(context.Context) error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 2 * time.Second
	b.MaxElapsedTime = 0 // bounded by ctx
	var last error
	err := backoff.Retry(func() error {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		last = op(actx)
		if last != nil && ctx.Err() != nil {
			return backoff.Permanent(last)
		}
		return last
	}, backoff.WithContext(b, ctx))
	if err != nil && last != nil {
		return last
	}
	return err
}
