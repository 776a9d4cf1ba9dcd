package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/internal/config"
	"github.com/wxhub/wxhub/internal/redact"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// cmdRun is the zero-setup default: embedded NATS, holder and workers in
// one process, and the simulator with a demo app when no app is configured.
func cmdRun(ctx context.Context, env *cmdEnv, args []string) error {
	var prefix string
	var accounts bool
	cfg, _, err := parseConfig(env, "run", config.CommandRun, args, func(fs *flag.FlagSet) {
		fs.StringVar(&prefix, "prefix", "", "subject `prefix`, e.g. wx.")
		fs.BoolVar(&accounts, "nats-accounts", false, "refused: the embedded NATS has no accounts (that layout is for holder, worker and gateway on deploy/nats)")
	})
	if err != nil {
		return err
	}
	if accounts || cfg.NATS.Accounts {
		return usagef("--nats-accounts (nats.accounts): `wxhub run` runs every role on its embedded NATS, which has no accounts; the accounts layout of deploy/nats is for `wxhub holder`, `wxhub worker` and `wxhub gateway`")
	}
	if prefix != "" {
		cfg.Prefix = prefix
	}
	if err := serverConfig(env, cfg, true); err != nil {
		return err
	}
	if err := checkDuplicateWindow(cfg); err != nil {
		return err
	}
	log := newLogger(env, cfg.Log)

	host, portStr, err := net.SplitHostPort(cfg.Run.NATSListen)
	if err != nil {
		return usagef("nats-listen %q: %w", cfg.Run.NATSListen, err)
	}
	if err := checkEmbeddedListen(host); err != nil {
		return err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return usagef("nats-listen %q: bad port", cfg.Run.NATSListen)
	}
	if port == 0 {
		port = -1
	}
	unlock, err := lockDataDir(cfg.Run.DataDir)
	if err != nil {
		return err
	}
	defer unlock()
	srv, err := broker.StartEmbedded(broker.EmbeddedConfig{Host: host, Port: port, StoreDir: filepath.Join(cfg.Run.DataDir, "nats"), ServerName: "wxhub-embedded"})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	cfg.NATS = config.NATS{URL: srv.ClientURL()}
	fmt.Fprintf(env.stdout, "wxhub: embedded NATS with JetStream at %s (data in %s)\n", srv.ClientURL(), filepath.Join(cfg.Run.DataDir, "nats"))

	var bg sync.WaitGroup
	defer bg.Wait()
	simCtx, stopSim := context.WithCancel(context.Background())
	defer stopSim()

	demo := len(cfg.Apps) == 0
	var demoApp wechatsim.DemoApp
	if demo {
		simReady := make(chan string, 1)
		sim := wechatsim.New(wechatsim.WithLatency(cfg.Run.SimLatency), wechatsim.WithLogger(log.With("role", "sim")))
		demoApp = sim.SeedDemo()
		simErr := make(chan error, 1)
		bg.Add(1)
		go func() {
			defer bg.Done()
			simErr <- serveHTTP(simCtx, cfg.Run.SimListen, sim, func(a string) { simReady <- a })
		}()
		select {
		case addr := <-simReady:
			cfg.WeChatBaseURL = "http://" + addr
		case err := <-simErr:
			return fmt.Errorf("simulator: %w", err)
		}
		cfg.Apps = []config.App{{AppID: demoApp.AppID, Secret: demoApp.Secret}}
		// The demo app's web login: the simulator's authorize pages, back
		// to the demo shop page on the gateway's front (see webLogin).
		cfg.WebLogin.AuthorizeBase = cfg.WeChatBaseURL
		fmt.Fprintf(env.stdout, "wxhub: no app configured, so using the WeChat simulator at %s with demo app %s (followers: %v)\n", cfg.WeChatBaseURL, demoApp.AppID, demoApp.OpenIDs)
	}

	if err := cfg.ResolveClientKeys(env.getenv); err != nil {
		return usageError{err}
	}
	demoKeyFile := ""
	if len(cfg.Gateway.Clients) == 0 {
		c, file, err := demoClient(cfg.Run.DataDir)
		if err != nil {
			return err
		}
		cfg.Gateway.Clients, demoKeyFile = []config.Client{c}, file
	}
	var gw *gateway.Gateway
	wl := &webLogin{}
	if demo {
		wl.demoApp = demoApp.AppID
	}
	err = serve(ctx, cfg, runConnName, log, func(opsAddr string) {
		printTry(env, cfg, opsAddr, demo, demoApp)
		printGatewayTry(env, cfg, gw, demoKeyFile, demo, demoApp)
		printWebLoginTry(env, gw, wl, demo, demoApp)
	}, embeddedServerRole(srv), holderRole, workerRole, gatewayRole(wl.mount, func(g *gateway.Gateway) {
		gw = g
		if err := wl.started(g); err != nil {
			log.Error("web login: cannot configure the demo app", "err", err)
		}
	}))
	// The roles are stopped (gateway and workers drained while the holder
	// still ran); the simulator and NATS go last.
	stopSim()
	return err
}

func printTry(env *cmdEnv, cfg *config.Config, opsAddr string, demo bool, d wechatsim.DemoApp) {
	w := env.stdout
	fmt.Fprintf(w, "\nwxhub is running. NATS: %s\n", redact.URL(cfg.NATS.URL))
	if opsAddr != "" {
		fmt.Fprintf(w, "Metrics: http://%s/metrics   health: http://%s/healthz   ready: http://%s/readyz\n", opsAddr, opsAddr, opsAddr)
	}
	fmt.Fprintln(w, "\nTry, in another terminal:")
	appid, openid := "<appid>", "<openid>"
	if len(cfg.Apps) > 0 {
		appid = cfg.Apps[0].AppID
	}
	if demo && len(d.OpenIDs) > 0 {
		appid, openid = d.AppID, d.OpenIDs[0]
	}
	// Client commands default to the default --nats-listen; anywhere else
	// they must be told, or they talk to whatever listens there.
	natsFlag := ""
	if cfg.NATS.URL != config.DefaultNATSURL {
		natsFlag = " --nats-url " + cfg.NATS.URL
	}
	fmt.Fprintf(w, "  ./bin/wxhub lookup%s --appid %s --openid %s\n", natsFlag, appid, openid)
	fmt.Fprintf(w, "  ./bin/wxhub token get%s --appid %s\n", natsFlag, appid)
	fmt.Fprintf(w, "  ./bin/wxhub status%s\n", natsFlag)
	if demo {
		fmt.Fprintf(w, "  code=$(curl -s -X POST %s/_sim/codes -d '{\"appid\":\"%s\",\"openid\":\"%s\",\"scope\":\"snsapi_userinfo\"}' | sed 's/.*\"code\":\"\\([^\"]*\\)\".*/\\1/')\n", cfg.WeChatBaseURL, appid, openid)
		fmt.Fprintf(w, "  ./bin/wxhub oauth%s --appid %s --code \"$code\"\n", natsFlag, appid)
	}
	fmt.Fprintln(w, "\nStop with Ctrl-C or kill -TERM: in-flight jobs finish first.")
}
