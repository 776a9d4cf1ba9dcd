package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/internal/config"
	"github.com/wxhub/wxhub/internal/metrics"
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
	nc, err := broker.Connect(cfg.NATS.Conn(name))
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

// provision creates the streams and buckets (idempotent).
func provision(ctx context.Context, js jetstream.JetStream, cfg *config.Config) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return broker.Provision(ctx, js, broker.Topology{Prefix: cfg.Prefix, Replicas: cfg.Replicas})
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

// readiness collects named checks for /readyz.
type readiness struct {
	checks []readyCheck
}

type readyCheck struct {
	name string
	ok   func() error
}

func (r *readiness) add(name string, ok func() error) {
	r.checks = append(r.checks, readyCheck{name, ok})
}

// natsReady reports whether the connection is up.
func natsReady(nc *nats.Conn) func() error {
	return func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("NATS %s", strings.ToLower(nc.Status().String()))
		}
		return nil
	}
}

// serveOps serves /metrics, /healthz and /readyz on addr until ctx ends.
// It returns the listening address ("" when addr is empty: ops HTTP off).
func serveOps(ctx context.Context, log *slog.Logger, addr string, ready *readiness, stopping *atomic.Bool) (string, error) {
	if addr == "" {
		return "", nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", usagef("http-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if stopping.Load() {
			http.Error(w, "stopping", http.StatusServiceUnavailable)
			return
		}
		var b strings.Builder
		failed := false
		for _, c := range ready.checks {
			if err := c.ok(); err != nil {
				failed = true
				fmt.Fprintf(&b, "%s: %v\n", c.name, err)
			} else {
				fmt.Fprintf(&b, "%s: ok\n", c.name)
			}
		}
		if failed {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprint(w, b.String())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("ops HTTP server", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return ln.Addr().String(), nil
}

func hostnameID() string {
	h, _ := os.Hostname()
	if h == "" {
		h = "wxhub"
	}
	return fmt.Sprintf("%s-%d", h, os.Getpid())
}
