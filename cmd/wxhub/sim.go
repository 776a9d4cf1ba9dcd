package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

func cmdSim(ctx context.Context, env *cmdEnv, args []string) error {
	var listen string
	var latency time.Duration
	var seed bool
	var secretFile string
	cfg, _, err := parseConfig(env, "sim", 0, args, func(fs *flag.FlagSet) {
		fs.StringVar(&listen, "listen", "127.0.0.1:8091", "`address` to serve the simulated WeChat API on")
		fs.DurationVar(&latency, "latency", 0, "added to every API call, to model WeChat's round trip (also POST /_sim/latency)")
		fs.BoolVar(&seed, "seed", true, "create a demo app with a few followers and print them")
		fs.StringVar(&secretFile, "demo-secret-file", filepath.Join(".wxhub", "sim-demo-app.secret"),
			"with --seed, write the demo app's AppSecret to this `file` (mode 0600; it is never printed), for --app appid=...,secret_file=...")
	})
	if err != nil {
		return err
	}
	log := newLogger(env, cfg.Log).With("role", "sim")
	sim := wechatsim.New(wechatsim.WithLatency(latency), wechatsim.WithLogger(log))
	var demo wechatsim.DemoApp
	if seed {
		demo = sim.SeedDemo()
		if secretFile, err = writeSecretFile(secretFile, demo.Secret); err != nil {
			return fmt.Errorf("demo app: %w (--demo-secret-file)", err)
		}
	}
	return serveHTTP(ctx, listen, sim, func(addr string) {
		fmt.Fprintf(env.stdout, "wxhub sim: WeChat API simulator on http://%s (latency %v; admin API under /_sim/)\n", addr, latency)
		if seed {
			fmt.Fprintf(env.stdout, "demo app: appid=%s secret fingerprint %s (the secret is in %s)\nfollowers: %v\n",
				demo.AppID, wechat.Fingerprint(demo.Secret), secretFile, demo.OpenIDs)
			fmt.Fprintf(env.stdout, "To serve the demo app with wxhub (no other wxhub run on the same ports and --data-dir):\n  ./bin/wxhub run --app %s --wechat-base-url http://%s\n",
				shellQuote("appid="+demo.AppID+",secret_file="+secretFile), addr)
		}
	})
}

// writeSecretFile writes secret to file (mode 0600, its folder made 0700
// if missing) and returns the file's absolute path, for a command to read
// it from instead of its value being printed.
func writeSecretFile(file, secret string) (string, error) {
	file, err := filepath.Abs(file)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return "", err
	}
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		return "", err
	}
	// WriteFile keeps an existing file's mode.
	if err := os.Chmod(file, 0o600); err != nil {
		return "", err
	}
	return file, nil
}

// serveHTTP serves h on addr until ctx ends, then shuts down gracefully.
// ready, if set, is called with the bound address.
func serveHTTP(ctx context.Context, addr string, h http.Handler, ready func(addr string)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return usagef("listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	if ready != nil {
		ready(ln.Addr().String())
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
