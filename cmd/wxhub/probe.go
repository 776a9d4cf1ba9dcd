package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/runner"
	"github.com/wxhub/wxhub/worker"
)

// A connected NATS client is not a working one: a server whose JetStream
// was disabled (nats-server does so after a storage failure), is over its
// storage limit, or whose streams have lost their leader, accepts the
// connection and answers nothing a role needs; publishes time out. So
// /readyz asks JetStream for what each role uses, at most once per
// probeEvery and for probeTimeout at most, and reports the reason.
const (
	probeEvery   = 2 * time.Second
	probeTimeout = 2 * time.Second
)

// probe caches one readiness check's result for probeEvery.
type probe struct {
	check func(ctx context.Context) error
	mu    sync.Mutex
	at    time.Time
	err   error
}

func newProbe(check func(ctx context.Context) error) func() error {
	p := &probe{check: check}
	return p.ready
}

func (p *probe) ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.at.IsZero() && time.Since(p.at) < probeEvery {
		return p.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	p.err, p.at = p.check(ctx), time.Now()
	return p.err
}

// jetStreamReady: the account's JetStream answers and has room to store
// (account info: for `wxhub run`'s own server, where nothing is denied).
func jetStreamReady(ctx context.Context, js jetstream.JetStream) error {
	info, err := js.AccountInfo(ctx)
	if err != nil {
		return fmt.Errorf("JetStream does not answer: %w", err)
	}
	if max := info.Limits.MaxStore; max > 0 && int64(info.Store) >= max {
		return fmt.Errorf("JetStream storage full (%d of %d bytes): writes fail", info.Store, max)
	}
	return nil
}

// streamReady: the stream answers and, on a cluster, has a leader.
func streamReady(ctx context.Context, js jetstream.JetStream, name string) error {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("stream %s: %w", name, err)
	}
	info := s.CachedInfo()
	if info.Cluster != nil && info.Cluster.Leader == "" {
		return fmt.Errorf("stream %s has no leader", name)
	}
	return nil
}

// workerJetStreamReady: a worker can pull its jobs: WX_JOBS and its
// durables answer. It asks only what a worker's NATS grant allows anyway
// (stream and consumer info, which binding needs), through the worker's
// view js (in the accounts layout WX_JOBS is CORE's, reached by
// $JS.CORE.API); a JetStream that lost WX_JOBS' leader or stopped
// answering fails here, the publish path with it.
func workerJetStreamReady(js *broker.JetStreams) func() error {
	jobs := js.For(events.StreamJobs)
	return newProbe(func(ctx context.Context) error {
		if err := streamReady(ctx, jobs, events.StreamJobs); err != nil {
			return fmt.Errorf("JetStream: %w", err)
		}
		for _, bare := range events.NewSubjects("").Jobs() {
			name := worker.ConsumerName(bare)
			if _, err := jobs.Consumer(ctx, events.StreamJobs, name); err != nil {
				if errors.Is(err, jetstream.ErrConsumerNotFound) {
					continue // bound when the worker starts; its own check covers that
				}
				return fmt.Errorf("JetStream: consumer %s: %w", name, err)
			}
		}
		return nil
	})
}

// holderJetStreamReady: a holder can write wx_tokens and wx_leases: their
// streams answer and have a leader (bucket info, which a holder's grant
// allows anyway), through the holder's view js.
func holderJetStreamReady(js *broker.JetStreams) func() error {
	return newProbe(func(ctx context.Context) error {
		for _, b := range []string{events.BucketTokens, events.BucketLeases} {
			if err := streamReady(ctx, js.Bucket(b), grants.KVStream(b)); err != nil {
				return fmt.Errorf("JetStream: bucket %s: %w", b, err)
			}
		}
		return nil
	})
}

// both is ready when a and b are.
func both(a, b func() error) func() error {
	return func() error {
		if err := a(); err != nil {
			return err
		}
		return b()
	}
}

// embeddedServerRole puts `wxhub run`'s own nats-server on /readyz: not
// ready once its JetStream is disabled, or when it stops answering
// JetStream requests, though clients still connect.
func embeddedServerRole(srv *broker.Embedded) roleBuilder {
	return func(p *process) (runner.Role, error) {
		js := newProbe(func(ctx context.Context) error { return jetStreamReady(ctx, p.js) })
		return runner.Role{
			Name: "nats-server",
			Run: func(ctx context.Context) error {
				<-ctx.Done()
				return nil
			},
			Ready: func() error {
				if !srv.Server().JetStreamEnabled() {
					return errors.New("the embedded server's JetStream is disabled (after a storage failure: see its data dir); publishes fail")
				}
				return js()
			},
		}, nil
	}
}
