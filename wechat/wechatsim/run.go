package wechatsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// RunConfig configures Run. The zero value serves an empty simulator on a
// free loopback port on the real clock.
type RunConfig struct {
	Addr    string        // listen address; "" means 127.0.0.1:0 (a free port)
	Latency time.Duration // added to every API request
	Seed    bool          // call SeedDemo and print the demo app to Out (its AppSecret as a fingerprint)
	Logger  *slog.Logger  // nil means slog.Default()
	Out     io.Writer     // where the seed summary goes; nil means io.Discard
	Ready   func(addr string)
	// Options are applied to the simulator after the fields above (e.g.
	// WithClock).
	Options []Option
}

func (c *RunConfig) setDefaults() {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
}

// Validate reports a configuration Run cannot use.
func (c RunConfig) Validate() error {
	if c.Latency < 0 {
		return errors.New("wechatsim: latency must not be negative")
	}
	return nil
}

// Run serves a new simulator on cfg.Addr until ctx is done, then shuts down
// gracefully (in-flight requests get 5 s). Ready, if set, is called with
// the bound address once the listener is open.
func Run(ctx context.Context, cfg RunConfig) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	opts := append([]Option{WithLatency(cfg.Latency), WithLogger(cfg.Logger)}, cfg.Options...)
	sim := New(opts...)
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("wechatsim: listen: %w", err)
	}
	addr := ln.Addr().String()
	srv := &http.Server{
		Handler:           sim,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      5 * time.Minute, // delay faults may hold an answer for long
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	if cfg.Seed {
		d := sim.SeedDemo()
		cfg.Logger.Info("wechatsim: demo app seeded", "appid", d.AppID, "secret_fp", fingerprint(d.Secret), "followers", len(d.OpenIDs))
		fmt.Fprintf(cfg.Out, "WeChat simulator on http://%s\ndemo appid:  %s\ndemo secret: fingerprint %s (wechatsim.DemoSecret)\n", addr, d.AppID, fingerprint(d.Secret))
		for _, o := range d.OpenIDs {
			fmt.Fprintf(cfg.Out, "follower:    %s\n", o)
		}
	}
	cfg.Logger.Info("wechatsim: serving", "addr", addr, "latency", cfg.Latency)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if cfg.Ready != nil {
		cfg.Ready(addr)
	}
	select {
	case err := <-errc:
		return fmt.Errorf("wechatsim: serve: %w", err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("wechatsim: shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("wechatsim: serve: %w", err)
	}
	return nil
}
