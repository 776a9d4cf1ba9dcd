package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/internal/config"
	"github.com/wxhub/wxhub/internal/metrics"
	"github.com/wxhub/wxhub/internal/redact"
	"github.com/wxhub/wxhub/wechat"
)

// parseConfig loads the configuration of a command: the flag set gets the
// flag groups in roles plus whatever extra adds.
func parseConfig(env *cmdEnv, name string, roles config.Roles, args []string, extra func(fs *flag.FlagSet)) (*config.Config, *flag.FlagSet, error) {
	fs := flag.NewFlagSet("wxhub "+name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	if extra != nil {
		extra(fs)
	}
	cfg, err := config.Load(fs, roles, args, env.getenv)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, err
		}
		return nil, nil, usageError{err}
	}
	if fs.NArg() > 0 && name != "token" {
		return nil, nil, usagef("unexpected argument %q", fs.Arg(0))
	}
	return cfg, fs, nil
}

// serverConfig finishes the configuration of a long-running role: secrets
// resolved and everything validated.
func serverConfig(env *cmdEnv, cfg *config.Config, needSecrets bool) error {
	if err := cfg.ResolveSecrets(env.getenv); err != nil {
		return usageError{err}
	}
	if err := cfg.Validate(needSecrets); err != nil {
		return usageError{err}
	}
	return nil
}

// checkDuplicateWindow refuses a duplicate window no longer than the
// workers' ack wait, before anything connects: a job redelivered after
// ack-wait could get a second result (worker.Config refuses the same).
func checkDuplicateWindow(cfg *config.Config) error {
	if cfg.DuplicateWindow <= cfg.Worker.AckWait {
		return usagef("duplicate-window (%v) must be longer than ack-wait (%v): a job redelivered after ack-wait could get a second result", cfg.DuplicateWindow, cfg.Worker.AckWait)
	}
	return nil
}

func newLogger(env *cmdEnv, l config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(l.Level))
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(env.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(env.stderr, opts))
}

// connect dials NATS and returns the connection and its JetStream context.
func connect(cfg *config.Config, name string) (*nats.Conn, jetstream.JetStream, error) {
	cc := cfg.NATS.Conn(name)
	cc.InboxPrefix = inboxPrefix(name)
	nc, err := broker.Connect(cc)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// connectAs is connect for a command that reaches the streams as role: an
// operator command as grants.Provision (the admin user), the vault
// commands as grants.Worker (the worker user, see cmdVault). With
// --nats-accounts the streams of other accounts are reached through the
// API prefixes role's account imports them under (broker.JetStreams). A
// role other than the admin gets its own inbox prefix, the only one its
// user may subscribe to.
func connectAs(cfg *config.Config, name string, role grants.Role) (*nats.Conn, *broker.JetStreams, error) {
	cc := cfg.NATS.Conn(name)
	cc.InboxPrefix = inboxPrefix(name)
	if role != grants.Provision {
		cc.InboxPrefix = role.InboxPrefix()
	}
	nc, err := broker.Connect(cc)
	if err != nil {
		return nil, nil, err
	}
	js, err := broker.NewJetStreams(nc, role, cfg.NATS.Accounts)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// accountsHint ends the error of a command that did not find a stream or
// bucket: without --nats-accounts on a server with the accounts layout,
// the admin's account holds the job streams only.
func accountsHint(js *broker.JetStreams) string {
	if js.Accounts() {
		return ""
	}
	return "; on a NATS with wxhub's accounts layout (deploy/nats), pass --nats-accounts"
}

// connectWait is connect for a long-running role: the first connection
// is retried with exponential backoff for up to cfg.NATS.ConnectTimeout,
// each failed attempt logged, so a role started a moment before its NATS
// server (systemd, Kubernetes) just waits for it. Bad configuration and
// refused credentials are not retried.
func connectWait(ctx context.Context, cfg *config.Config, name string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	if err := cfg.NATS.Conn(name).Validate(); err != nil {
		return nil, nil, usageError{err}
	}
	deadline := time.Now().Add(cfg.NATS.ConnectTimeout)
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 250 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	for attempt := 1; ; attempt++ {
		nc, js, err := connect(cfg, name)
		if err == nil {
			if attempt > 1 {
				log.Info("connected to NATS", "url", redact.URL(cfg.NATS.URL), "attempt", attempt)
			}
			warnDemoPassword(cfg, log)
			return nc, js, nil
		}
		wait := b.NextBackOff()
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || time.Now().Add(wait).After(deadline) {
			if attempt > 1 {
				return nil, nil, fmt.Errorf("%w (gave up after %d attempts in %v; --nats-connect-timeout)", err, attempt, cfg.NATS.ConnectTimeout)
			}
			return nil, nil, err
		}
		log.Warn("NATS not reachable yet, retrying", "url", redact.URL(cfg.NATS.URL), "attempt", attempt, "retry_in", wait.Round(time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
			return nil, nil, err
		case <-time.After(wait):
		}
	}
}

// warnDemoPassword warns when the NATS login is a user's demo password
// shipped in deploy/: the server accepted it, so its hash is in the
// server's config, and anyone who read deploy/ can log in as that user.
// It names the user, never the password.
func warnDemoPassword(cfg *config.Config, log *slog.Logger) {
	if cfg.NATS.UsesDemoPassword() {
		log.Warn("NATS login uses the demo password shipped in deploy/, which anyone can read: replace it in the NATS config and the Secret (deploy/README.md)", "nats_user", cfg.NATS.User)
	}
}

// provision creates the streams, buckets and consumers (idempotent): only
// `wxhub run` does, on its embedded server, which has no accounts (see
// cmdProvision).
func provision(ctx context.Context, js jetstream.JetStream, cfg *config.Config) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return broker.Provision(ctx, broker.LocalJetStreams(js, grants.Provision), broker.Topology{Prefix: cfg.Prefix, Replicas: cfg.Replicas, DuplicateWindow: cfg.DuplicateWindow,
		AckWait: cfg.Worker.AckWait, MaxDeliver: cfg.Worker.MaxDeliver})
}

// newWeChatClient returns a client that records latency and errcodes.
func newWeChatClient(baseURL string) (*wechat.Client, error) {
	return wechat.NewClient(wechat.Config{
		BaseURL: baseURL,
		Observer: func(endpoint string, d time.Duration, err error) {
			metrics.WeChatLatency.WithLabelValues(endpoint).Observe(d.Seconds())
			if err != nil {
				code := "transport"
				if c := wechat.ErrCode(err); c != 0 {
					code = metrics.ErrCode(c)
				}
				metrics.WeChatErrors.WithLabelValues(endpoint, code).Inc()
			}
		},
	})
}

func hostnameID() string {
	h, _ := os.Hostname()
	if h == "" {
		h = "wxhub"
	}
	return fmt.Sprintf("%s-%d", h, os.Getpid())
}
