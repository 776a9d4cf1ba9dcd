package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers/vault"
	"github.com/wxhub/wxhub/holder"
	"github.com/wxhub/wxhub/internal/config"
	"github.com/wxhub/wxhub/internal/redact"
	"github.com/wxhub/wxhub/internal/runner"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/worker"
)

// process is what every role of one process shares: the configuration,
// the NATS connection (made once), the WeChat client and the logger.
// A role builder takes it and returns a runner.Role.
type process struct {
	cfg *config.Config
	nc  *nats.Conn
	js  jetstream.JetStream // the connection's own account
	// streams reaches each stream as the role being run sees it
	// (cfg.NATS.Accounts: through the imports of the accounts layout).
	// `wxhub run` runs several roles on its embedded server, which has
	// no accounts: there every stream is local whatever the role.
	streams *broker.JetStreams
	wc      *wechat.Client
	log     *slog.Logger
}

// streamsOf returns the handles of role's view: p.streams when the
// process runs that role alone, else (`wxhub run`, no accounts) handles
// of that role on the same connection, every stream local.
func (p *process) streamsOf(role grants.Role) (*broker.JetStreams, error) {
	if p.streams.Role() == role {
		return p.streams, nil
	}
	return broker.NewJetStreams(p.nc, role, p.streams.Accounts())
}

// processRole is the grants role whose view a process's connection has:
// the role a single-role command runs (connection "wxhub-<role>"); for
// `wxhub run` and anything else, the admin's (all streams local there).
func processRole(connName string) grants.Role {
	if r, ok := strings.CutPrefix(connName, "wxhub-"); ok && slices.Contains(grants.Roles, grants.Role(r)) {
		return grants.Role(r)
	}
	return grants.Provision
}

// roleBuilder makes one role. To add a role: write a builder (see
// holderRole), add it to the list in cmdRun, and give it a subcommand
// with roleCommand.
type roleBuilder func(p *process) (runner.Role, error)

// roleLogger is the process's logger for one role.
func (p *process) roleLogger(role string) *slog.Logger { return p.log.With("role", role) }

func holderRole(p *process) (runner.Role, error) {
	cfg := p.cfg
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
		Conn: p.nc, WeChat: p.wc, Apps: apps, ID: id, Prefix: cfg.Prefix,
		LeaseTTL: cfg.Holder.LeaseTTL, RefreshMargin: cfg.Holder.RefreshMargin, QuotaReserve: reserve,
		QuotaDailyLimit: cfg.Holder.QuotaDailyLimit,
		Logger:          p.roleLogger("holder"),
	})
	if err != nil {
		return runner.Role{}, usageError{err}
	}
	streams, err := p.streamsOf(grants.Holder)
	if err != nil {
		return runner.Role{}, err
	}
	return runner.Role{Name: "holder", Start: bindStart(streams, roleBindWait), Run: h.Run,
		Ready: both(holderJetStreamReady(streams), holderReady(h)), Status: holderPresence(h)}, nil
}

// roleBindWait is how long the holder and the worker wait at start for
// the streams `wxhub provision` makes (what their own Run allows).
const roleBindWait = 30 * time.Second

// bindStart is a role's Start that waits up to wait for the streams,
// buckets and consumers the role uses (broker.Bind): a role only uses
// what `wxhub provision` made. Waiting in Start, not Run, makes a stop
// meanwhile a stop while starting (stoppedEarly): nothing ran, exit 0.
func bindStart(streams *broker.JetStreams, wait time.Duration) func(context.Context) error {
	return func(ctx context.Context) error {
		bctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		return broker.Bind(bctx, streams)
	}
}

// holderReady: every app has an unexpired token; else which do not, and
// the last fetch error (free of secrets).
func holderReady(h *holder.Holder) func() error {
	return func() error {
		if err := h.ClockSkewError(); err != nil {
			return err // refuses to lead: say why
		}
		if h.Ready() {
			return nil
		}
		var missing []string
		now := time.Now()
		for _, a := range h.Status() {
			if !a.ExpiresAt.After(now) {
				s := a.AppID
				if a.LastError != "" {
					s += " (" + a.LastError + ")"
				}
				missing = append(missing, s)
			}
		}
		if len(missing) == 0 {
			return errors.New("no unexpired token for every app yet")
		}
		return fmt.Errorf("no unexpired token for %s", strings.Join(missing, ", "))
	}
}

func workerRole(p *process) (runner.Role, error) {
	cfg := p.cfg
	streams, err := p.streamsOf(grants.Worker)
	if err != nil {
		return runner.Role{}, err
	}
	exportBacklog(streams) // wxhub_consumer_* and wxhub_stream_* on /metrics
	apps := make([]worker.App, len(cfg.Apps))
	for i, a := range cfg.Apps {
		apps[i] = worker.App{AppID: a.AppID, Secret: a.Secret, Vault: a.Vault, RefreshTTL: time.Duration(a.RefreshDays) * 24 * time.Hour}
	}
	var v *vault.Vault
	if vaultApps(cfg) {
		if v, err = openVault(context.Background(), streams.Bucket(events.BucketVault), cfg, hostnameID(), p.roleLogger("worker")); err != nil {
			return runner.Role{}, err
		}
	}
	w, err := worker.New(worker.Config{
		Conn: p.nc, Accounts: cfg.NATS.Accounts, WeChat: p.wc, Apps: apps, Prefix: cfg.Prefix, Vault: v,
		Topology:    broker.Topology{Prefix: cfg.Prefix, Replicas: cfg.Replicas, DuplicateWindow: cfg.DuplicateWindow},
		Concurrency: cfg.Worker.Concurrency, MaxDeliver: cfg.Worker.MaxDeliver,
		AckWait: cfg.Worker.AckWait, JobTimeout: cfg.Worker.AckWait * 3 / 4,
		Fault:  testFault(),
		Logger: p.roleLogger("worker"),
	})
	if err != nil {
		return runner.Role{}, usageError{err}
	}
	return runner.Role{Name: "worker", Start: bindStart(streams, roleBindWait), Run: w.Run,
		Ready: both(workerJetStreamReady(streams), w.ReadyError), Status: workerPresence(w)}, nil
}

// cmdHolder runs the token holder against an existing NATS.
func cmdHolder(ctx context.Context, env *cmdEnv, args []string) error {
	return roleCommand(ctx, env, args, "holder", config.CommandHolder, holderRole)
}

// cmdWorker runs job workers against an existing NATS.
func cmdWorker(ctx context.Context, env *cmdEnv, args []string) error {
	return roleCommand(ctx, env, args, "worker", config.CommandWorker, workerRole)
}

// roleCommand parses and validates a long-running role's configuration
// (apps with their secrets are required) and serves the role alone.
func roleCommand(ctx context.Context, env *cmdEnv, args []string, role string, flags config.Roles, build roleBuilder) error {
	cfg, _, err := parseConfig(env, role, flags, args, nil)
	if err != nil {
		return err
	}
	// Only the holder fetches tokens with the AppSecret; a worker needs it
	// for OAuth jobs alone and ends them as kind config without it.
	if err := serverConfig(env, cfg, flags&config.FlagsHolder != 0); err != nil {
		return err
	}
	if flags&config.FlagsWorker != 0 {
		if err := checkDuplicateWindow(cfg); err != nil {
			return err
		}
	}
	if len(cfg.Apps) == 0 {
		return usagef("apps: none configured (use --app appid=...,secret_file=... or the config file)")
	}
	log := newLogger(env, cfg.Log) // each role's logger adds "role" (roleLogger)
	return serve(ctx, cfg, "wxhub-"+role, log, nil, build)
}

// runConnName is the connection name of `wxhub run`, the one command that
// provisions (its own embedded server).
const runConnName = "wxhub-run"

// serve is the one runner of wxhub's long-running commands: it connects
// to NATS once, provisions when it is `wxhub run` (every other role only
// binds, in its Start: bindStart), builds the roles and runs them (ops
// HTTP, presence and SIGTERM handled once by runner.Runner) until ctx
// ends.
// started, if set, is called with the ops address once all roles run.
func serve(ctx context.Context, cfg *config.Config, connName string, log *slog.Logger, started func(opsAddr string), builds ...roleBuilder) error {
	nc, js, err := connectWait(ctx, cfg, connName, log)
	if err != nil {
		return stoppedEarly(ctx, log, err)
	}
	defer nc.Close()
	if connName == runConnName {
		if err := provision(ctx, js, cfg); err != nil {
			return stoppedEarly(ctx, log, err)
		}
	}
	wc, err := newWeChatClient(cfg.WeChatBaseURL)
	if err != nil {
		return usageError{err}
	}
	streams, err := broker.NewJetStreams(nc, processRole(connName), cfg.NATS.Accounts)
	if err != nil {
		return err
	}
	p := &process{cfg: cfg, nc: nc, js: js, streams: streams, wc: wc, log: log}
	roles := make([]runner.Role, 0, len(builds))
	for _, b := range builds {
		r, err := b(p)
		if err != nil {
			return err
		}
		roles = append(roles, r)
	}
	var running atomic.Bool
	rn := &runner.Runner{
		Roles: roles, Conn: nc, Prefix: cfg.Prefix, OpsListen: cfg.HTTPListen,
		Logger: log.With("nats", redact.URL(cfg.NATS.URL), "apps", len(cfg.Apps)),
		Started: func(opsAddr string) {
			running.Store(true)
			if started != nil {
				started(opsAddr)
			}
		},
	}
	err = rn.Run(ctx)
	var le *runner.ListenError
	if errors.As(err, &le) {
		return usageError{err}
	}
	if !running.Load() {
		return stoppedEarly(ctx, log, err)
	}
	return err
}

// stoppedEarly is err, or nil when a stop (SIGTERM, Ctrl-C: ctx ended)
// came while the process was still starting: waiting for NATS, for the
// streams `wxhub provision` makes, or for a role to start. Nothing had
// started, so nothing is lost; the process stops as asked, with status 0,
// and says what it was waiting for. An error once every role ran (a
// drain cut short, a role that failed) stays an error.
func stoppedEarly(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil || ctx.Err() == nil {
		return err
	}
	var ue usageError
	if errors.As(err, &ue) {
		return err
	}
	log.Info("stopped while starting", "waiting_for", err.Error())
	return nil
}
