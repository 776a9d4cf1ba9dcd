package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/holder"
	"github.com/wxhub/wxhub/internal/config"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/worker"
)

func newHolder(cfg *config.Config, nc *nats.Conn, wc *wechat.Client, log *slog.Logger) (*holder.Holder, error) {
	apps := make([]holder.App, len(cfg.Apps))
	for i, a := range cfg.Apps {
		apps[i] = holder.App{AppID: a.AppID, Secret: a.Secret, Mode: a.Mode}
	}
	reserve := cfg.Holder.QuotaReserve
	if reserve == 0 {
		reserve = -1 // holder.Config: negative means no reserve, 0 the default
	}
	id := cfg.Holder.ID
	if id == "" {
		id = hostnameID()
	}
	h, err := holder.New(holder.Config{
		Conn: nc, WeChat: wc, Apps: apps, ID: id, Prefix: cfg.Prefix,
		LeaseTTL: cfg.Holder.LeaseTTL, RefreshMargin: cfg.Holder.RefreshMargin, QuotaReserve: reserve,
		Logger: log,
	})
	if err != nil {
		return nil, usageError{err}
	}
	return h, nil
}

// cmdHolder runs the token holder against an existing NATS.
func cmdHolder(ctx context.Context, env *cmdEnv, args []string) error {
	return roleCommand(ctx, env, args, "holder", config.FlagsHolder, func(cfg *config.Config, nc *nats.Conn, wc *wechat.Client, log *slog.Logger) (runner, error) {
		return newHolder(cfg, nc, wc, log)
	})
}

// cmdWorker runs job workers against an existing NATS.
func cmdWorker(ctx context.Context, env *cmdEnv, args []string) error {
	return roleCommand(ctx, env, args, "worker", config.FlagsWorker, func(cfg *config.Config, nc *nats.Conn, wc *wechat.Client, log *slog.Logger) (runner, error) {
		return newWorker(cfg, nc, wc, log)
	})
}

type roleBuilder func(*config.Config, *nats.Conn, *wechat.Client, *slog.Logger) (runner, error)

// roleCommand parses and validates a long-running role's configuration
// (apps with their secrets are required) and serves the role.
func roleCommand(ctx context.Context, env *cmdEnv, args []string, role string, flags config.Roles, build roleBuilder) error {
	cfg, _, err := parseConfig(env, role, config.FlagsNATS|config.FlagsServer|flags, args, nil)
	if err != nil {
		return err
	}
	if err := serverConfig(env, cfg, true); err != nil {
		return err
	}
	if len(cfg.Apps) == 0 {
		return usagef("apps: none configured (use --app appid=...,secret_file=... or the config file)")
	}
	return serveRole(ctx, env, cfg, role, build)
}

// serveRole connects, provisions, serves ops HTTP and runs one role until
// ctx ends (SIGTERM), then lets it stop cleanly.
func serveRole(ctx context.Context, env *cmdEnv, cfg *config.Config, role string, build roleBuilder) error {
	log := newLogger(env, cfg.Log).With("role", role)
	nc, js, err := connect(cfg, "wxhub-"+role)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := provision(ctx, js, cfg); err != nil {
		return err
	}
	wc, err := newWeChatClient(cfg.WeChatBaseURL)
	if err != nil {
		return usageError{err}
	}
	r, err := build(cfg, nc, wc, log)
	if err != nil {
		return err
	}
	var stopping atomic.Bool
	ready := &readiness{}
	ready.add("nats", natsReady(nc))
	addRoleReady(ready, role, r)
	if err := announce(nc, cfg.Prefix, r); err != nil {
		return err
	}
	opsAddr, err := serveOps(ctx, log, cfg.HTTPListen, ready, &stopping)
	if err != nil {
		return err
	}
	log.Info("started", "nats", cfg.NATS.URL, "apps", len(cfg.Apps), "ops", opsAddr)
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	select {
	case <-ctx.Done():
		stopping.Store(true)
		log.Info("stopping")
		stop()
		err = <-done
	case err = <-done:
	}
	if err = roleErr(role, err); err != nil {
		return fmt.Errorf("%w", err)
	}
	log.Info("stopped")
	return nil
}

func newWorker(cfg *config.Config, nc *nats.Conn, wc *wechat.Client, log *slog.Logger) (*worker.Worker, error) {
	apps := make([]worker.App, len(cfg.Apps))
	for i, a := range cfg.Apps {
		apps[i] = worker.App{AppID: a.AppID, Secret: a.Secret}
	}
	w, err := worker.New(worker.Config{
		Conn: nc, WeChat: wc, Apps: apps, Prefix: cfg.Prefix,
		Topology:    broker.Topology{Prefix: cfg.Prefix, Replicas: cfg.Replicas},
		Concurrency: cfg.Worker.Concurrency, MaxDeliver: cfg.Worker.MaxDeliver,
		AckWait: cfg.Worker.AckWait, JobTimeout: cfg.Worker.AckWait * 3 / 4,
		Logger: log,
	})
	if err != nil {
		return nil, usageError{err}
	}
	return w, nil
}

// addRoleReady adds a role's own readiness (holder: every app has an
// unexpired token; worker: subscribed and holding tokens) to /readyz.
func addRoleReady(ready *readiness, role string, r runner) {
	if rr, ok := r.(interface{ Ready() bool }); ok {
		ready.add(role, func() error {
			if !rr.Ready() {
				return fmt.Errorf("not ready")
			}
			return nil
		})
	}
}

// announce makes a holder or worker answer `wxhub status`.
func announce(nc *nats.Conn, prefix string, r runner) error {
	var status func() processStatus
	switch v := r.(type) {
	case *holder.Holder:
		status = holderPresence(v)
	case *worker.Worker:
		status = workerPresence(v)
	default:
		return nil
	}
	_, err := answerStatus(nc, prefix, status)
	return err
}
