package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/internal/config"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// gatewayRoleConfig parses a gateway role's configuration the way
// `wxhub gateway` does: app appid, a client "shop" keyed by
// WXHUB_CLIENT_KEY_SHOP, extra environment variables and args.
func gatewayRoleConfig(natsURL, appid string, extraEnv map[string]string, args []string) (*config.Config, *cmdEnv, *wxhubtest.Buffer, error) {
	logs := &wxhubtest.Buffer{}
	vars := map[string]string{"WXHUB_CLIENT_KEY_SHOP": appid + "-client-key-0123"}
	for k, v := range extraEnv {
		vars[k] = v
	}
	env := &cmdEnv{stdout: logs, stderr: logs, getenv: func(k string) string { return vars[k] }}
	args = append([]string{"--nats-url", natsURL, "--http-listen", "", "--gateway-listen", "127.0.0.1:0",
		"--app", "appid=" + appid, "--client", "name=shop,appids=" + appid}, args...)
	cfg, err := gatewayConfig(env, args)
	return cfg, env, logs, err
}

// runGatewayRole serves the gateway role of cfg (with mount, if any)
// until its gateway listens, stops it, and returns that gateway; a role
// that fails to start or to stop fails the test.
func runGatewayRole(t *testing.T, cfg *config.Config, env *cmdEnv, logs *wxhubtest.Buffer, mount mounter) *gateway.Gateway {
	t.Helper()
	started := make(chan *gateway.Gateway, 1)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served := make(chan error, 1)
	go func() {
		served <- serve(ctx, cfg, "wxhub-gateway", newLogger(env, cfg.Log), nil,
			gatewayRole(mount, func(gw *gateway.Gateway) { started <- gw }))
	}()
	var gw *gateway.Gateway
	select {
	case gw = <-started:
	case err := <-served:
		t.Fatalf("the gateway role ended before it listened: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("the gateway role did not listen within 30 s\n%s", logs.String())
	}
	stop()
	if err := <-served; err != nil {
		t.Fatalf("the gateway role stopped with %v\n%s", err, logs.String())
	}
	return gw
}

// The gateway role drains on SIGTERM for as long as its flags make the
// longest request: its headers (10 s), then a relayed call's token wait,
// its body (twice the call timeout) and the call (their defaults: 100 s),
// or the web login's --oauth-wait when it is mounted and longer (never:
// at most 1m), plus 5 s. That is config.GatewayDrain, the figure the
// deploy files' stop timeouts are checked against.
func TestGatewayRoleDrainsForItsLongestRequest(t *testing.T) {
	t.Parallel()
	nats := brokertest.Start(t)
	const login = "appid=wxdrain,callback_base=https://shop.example,return_to=https://shop.example/"
	for _, tc := range []struct {
		name string
		args []string
		want time.Duration
	}{
		{"no web login", nil, 115 * time.Second},
		{"web login waiting a little", []string{"--web-login", login, "--oauth-wait", "3s"}, 115 * time.Second},
		{"web login waiting the longest accepted", []string{"--web-login", login, "--oauth-wait", "1m"}, 115 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, env, logs, err := gatewayRoleConfig(nats.URL, "wxdrain", nil, tc.args)
			if err != nil {
				t.Fatal(err)
			}
			gw := runGatewayRole(t, cfg, env, logs, (&webLogin{}).mount)
			if got := gw.DrainTimeout(); got != tc.want || got != cfg.GatewayDrain() {
				t.Errorf("the gateway drains for %v, want %v (config.GatewayDrain: %v)", got, tc.want, cfg.GatewayDrain())
			}
		})
	}
}

// --gateway-max-buffered-bytes (WXHUB_GATEWAY_MAX_BUFFERED_BYTES,
// gateway.max_buffered_bytes) reaches the gateway's body budget; 0 is
// its default, and a budget that cannot hold the largest request body is
// refused at start, naming the setting.
func TestGatewayRoleTakesItsBodyBudget(t *testing.T) {
	t.Parallel()
	nats := brokertest.Start(t)
	for _, tc := range []struct {
		name    string
		args    []string
		env     string
		want    int64
		refused bool
	}{
		{"default", nil, "", gateway.DefaultMaxBufferedBytes, false},
		{"flag", []string{"--gateway-max-buffered-bytes", "67108864"}, "", 64 << 20, false},
		{"environment", nil, "33554432", 32 << 20, false},
		{"smaller than the largest body", []string{"--gateway-max-buffered-bytes", "1048576"}, "", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, env, logs, err := gatewayRoleConfig(nats.URL, "wxbudget", map[string]string{"WXHUB_GATEWAY_MAX_BUFFERED_BYTES": tc.env}, tc.args)
			if tc.refused {
				if err == nil || !strings.Contains(err.Error(), "gateway.max_buffered_bytes") {
					t.Fatalf("a budget of 1 MiB: %v, want an error naming gateway.max_buffered_bytes", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := runGatewayRole(t, cfg, env, logs, nil).MaxBufferedBytes(); got != tc.want {
				t.Errorf("the gateway's body budget is %d, want %d", got, tc.want)
			}
		})
	}
}

// --gateway-answer-timeout (WXHUB_GATEWAY_ANSWER_TIMEOUT,
// gateway.answer_timeout) reaches the gateway's bound on writing an
// answer; 0 is its default, and less than a second is refused at start,
// naming the setting.
func TestGatewayRoleTakesItsAnswerTimeout(t *testing.T) {
	t.Parallel()
	nats := brokertest.Start(t)
	for _, tc := range []struct {
		name    string
		args    []string
		env     string
		want    time.Duration
		refused bool
	}{
		{"default", nil, "", gateway.DefaultAnswerTimeout, false},
		{"flag", []string{"--gateway-answer-timeout", "2m"}, "", 2 * time.Minute, false},
		{"environment", nil, "45s", 45 * time.Second, false},
		{"below a second", []string{"--gateway-answer-timeout", "100ms"}, "", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, env, logs, err := gatewayRoleConfig(nats.URL, "wxanswer", map[string]string{"WXHUB_GATEWAY_ANSWER_TIMEOUT": tc.env}, tc.args)
			if tc.refused {
				if err == nil || !strings.Contains(err.Error(), "gateway.answer_timeout") {
					t.Fatalf("an answer timeout of 100ms: %v, want an error naming gateway.answer_timeout", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := runGatewayRole(t, cfg, env, logs, nil).AnswerTimeout(); got != tc.want {
				t.Errorf("the gateway's answer timeout is %v, want %v", got, tc.want)
			}
		})
	}
}
