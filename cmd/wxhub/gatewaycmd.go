package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/internal/config"
	"github.com/wxhub/wxhub/internal/runner"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

// cmdGateway runs the WeChat-compatible gateway against an existing NATS.
func cmdGateway(ctx context.Context, env *cmdEnv, args []string) error {
	cfg, err := gatewayConfig(env, args)
	if err != nil {
		return err
	}
	log := newLogger(env, cfg.Log) // the role's logger adds "role"
	wl := &webLogin{}
	return serve(ctx, cfg, "wxhub-gateway", log, nil, gatewayRole(wl.mount, nil))
}

// gatewayConfig is `wxhub gateway`'s configuration from its flags and
// environment, checked.
func gatewayConfig(env *cmdEnv, args []string) (*config.Config, error) {
	cfg, _, err := parseConfig(env, "gateway", config.CommandGateway, args, nil)
	if err != nil {
		return nil, err
	}
	if err := serverConfig(env, cfg, false); err != nil {
		return nil, err
	}
	if err := cfg.ResolveClientKeys(env.getenv); err != nil {
		return nil, usageError{err}
	}
	if len(cfg.Apps) == 0 {
		return nil, usagef("apps: none configured (use --app appid=... ; a secret is needed only for /sns/oauth2/access_token)")
	}
	return cfg, nil
}

// mounter returns handlers to serve on the gateway's front, by ServeMux
// pattern (e.g. "/oauth/" for the web login); nil adds none.
type mounter func(p *process) (map[string]http.Handler, error)

// gatewayRole builds the gateway role. mount adds handlers on its front;
// started, if set, receives the gateway once it listens.
func gatewayRole(mount mounter, started func(*gateway.Gateway)) roleBuilder {
	return func(p *process) (runner.Role, error) {
		cfg := p.cfg
		var mounted map[string]http.Handler
		if mount != nil {
			var err error
			if mounted, err = mount(p); err != nil {
				return runner.Role{}, err
			}
		}
		// The web login's callback waits up to WebLogin.Wait for its
		// job's result: the drain on SIGTERM lets it (config.GatewayDrain).
		var mountWait time.Duration
		if len(mounted) > 0 {
			mountWait = cfg.WebLogin.Wait
		}
		log := p.roleLogger("gateway")
		streams, err := p.streamsOf(grants.Gateway)
		if err != nil {
			return runner.Role{}, err
		}
		tokens := worker.NewTokenCache(log)
		id := "gateway-" + hostnameID()
		followed := gatewayAppIDs(cfg)
		refreshed := events.NewSubjects(cfg.Prefix).TokenRefreshed
		gw, err := gateway.New(gateway.Config{
			Tokens:      tokens,
			Invalidator: worker.NewInvalidator(p.js, cfg.Prefix, id, 0),
			BaseURL:     cfg.WeChatBaseURL,
			Apps:        cfg.GatewayApps(), Clients: cfg.GatewayClients(),
			Listen: cfg.Gateway.Listen, TLSCert: cfg.Gateway.TLSCert, TLSKey: cfg.Gateway.TLSKey,
			Mount: mounted, MountWait: mountWait,
			AnonymousRate: cfg.Gateway.AnonymousRate, AnonymousBurst: cfg.Gateway.AnonymousBurst,
			MaxAnonymousClients: cfg.Gateway.AnonymousMaxClients, TrustedProxies: cfg.Gateway.TrustedProxyPrefixes(),
			MaxBufferedBytes: cfg.Gateway.MaxBufferedBytes, AnswerTimeout: cfg.Gateway.AnswerTimeout,
			Logger: log,
		})
		if err != nil {
			return runner.Role{}, usageError{err}
		}
		return runner.Role{
			Name: "gateway",
			Start: func(ctx context.Context) error {
				if err := bindStart(streams, bindWait(cfg))(ctx); err != nil {
					return err
				}
				if err := gw.Start(ctx); err != nil {
					return usageError{err}
				}
				if started != nil {
					started(gw)
				}
				return nil
			},
			// The token feed outlives the HTTP front: calls draining on
			// SIGTERM may still wait for a newer token. The tokens are
			// read from wx_tokens in the holders' account (never
			// watched: see worker.TokenCache).
			Run: func(ctx context.Context) error {
				fctx, stopFeed := context.WithCancel(context.Background())
				fed := make(chan struct{})
				go func() {
					defer close(fed)
					tokens.FollowBucket(fctx, streams.Bucket(events.BucketTokens), p.nc, refreshed, followed, 0)
				}()
				err := gw.Run(ctx)
				stopFeed()
				<-fed
				return err
			},
			Ready:  gw.Ready,
			Status: func() any { return processStatus{Role: "gateway", ID: id} },
		}, nil
	}
}

// gatewayAppIDs are the apps whose tokens the gateway follows: the
// configured apps and every app a client names (a token.refreshed event
// adds any other).
func gatewayAppIDs(cfg *config.Config) []string {
	var ids []string
	for _, a := range cfg.Apps {
		ids = append(ids, a.AppID)
	}
	for _, c := range cfg.Gateway.Clients {
		for _, a := range c.AppIDs {
			if a != "*" {
				ids = append(ids, a)
			}
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// bindWait is how long the gateway waits for provisioning at start: as
// long as for NATS itself (--nats-connect-timeout), at most 30 s like the
// holder, at least one second.
func bindWait(cfg *config.Config) time.Duration {
	return min(max(cfg.NATS.ConnectTimeout, time.Second), 30*time.Second)
}

// demoClient is the client `wxhub run` configures when none is: every
// app, every path, its key kept in the data folder (mode 0600) so that it
// survives restarts and is never printed.
func demoClient(dataDir string) (config.Client, string, error) {
	file, err := filepath.Abs(filepath.Join(dataDir, "gateway-demo-client.key"))
	if err != nil {
		return config.Client{}, "", err
	}
	key, err := os.ReadFile(file)
	if err != nil || len(strings.TrimSpace(string(key))) < 16 {
		var b [24]byte
		if _, err := rand.Read(b[:]); err != nil {
			return config.Client{}, "", err
		}
		key = []byte(hex.EncodeToString(b[:]))
		if _, err := writeSecretFile(file, string(key)); err != nil {
			return config.Client{}, "", fmt.Errorf("demo client key: %w", err)
		}
	}
	return config.Client{Name: "demo", Key: strings.TrimSpace(string(key)), AppIDs: []string{"*"}}, file, nil
}

// printGatewayTry says how to point an SDK at the gateway, with curl
// commands that work when pasted (tested).
func printGatewayTry(env *cmdEnv, cfg *config.Config, gw *gateway.Gateway, keyFile string, demo bool, d wechatsim.DemoApp) {
	if gw == nil {
		return
	}
	w := env.stdout
	appid, openid := "<appid>", "<openid>"
	if len(cfg.Apps) > 0 {
		appid = cfg.Apps[0].AppID
	}
	if demo && len(d.OpenIDs) > 0 {
		openid = d.OpenIDs[0]
	}
	fmt.Fprintf(w, "\nGateway for existing WeChat SDKs: %s\n", gw.URL())
	fmt.Fprintln(w, "  Set your SDK's API base URL to it and give it the client key as the AppSecret.")
	secret := "<client key>"
	if keyFile != "" {
		fmt.Fprintf(w, "  Demo client \"demo\": its key is in %s\n", keyFile)
		secret = "$(cat " + shellQuote(keyFile) + ")"
	}
	fmt.Fprintf(w, "  token=$(curl -s \"%s/cgi-bin/token?grant_type=client_credential&appid=%s&secret=%s\" | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/')\n", gw.URL(), appid, secret)
	fmt.Fprintf(w, "  curl -s \"%s/cgi-bin/user/info?access_token=$token&openid=%s&lang=zh_CN\"\n", gw.URL(), openid)
}

// shellQuote quotes s for sh inside double quotes' $(...).
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
