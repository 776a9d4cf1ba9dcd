package main

import (
	"context"
	"testing"
	"time"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

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
			var logs wxhubtest.Buffer
			env := &cmdEnv{stdout: &logs, stderr: &logs, getenv: func(k string) string {
				return map[string]string{"WXHUB_CLIENT_KEY_SHOP": "drain-client-key-0123"}[k]
			}}
			args := append([]string{"--nats-url", nats.URL, "--http-listen", "", "--gateway-listen", "127.0.0.1:0",
				"--app", "appid=wxdrain", "--client", "name=shop,appids=wxdrain"}, tc.args...)
			cfg, err := gatewayConfig(env, args)
			if err != nil {
				t.Fatal(err)
			}
			drain := make(chan time.Duration, 1)
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			served := make(chan error, 1)
			go func() {
				served <- serve(ctx, cfg, "wxhub-gateway", newLogger(env, cfg.Log), nil,
					gatewayRole((&webLogin{}).mount, func(gw *gateway.Gateway) { drain <- gw.DrainTimeout() }))
			}()
			select {
			case got := <-drain:
				if got != tc.want || got != cfg.GatewayDrain() {
					t.Errorf("the gateway drains for %v, want %v (config.GatewayDrain: %v)", got, tc.want, cfg.GatewayDrain())
				}
			case err := <-served:
				t.Fatalf("the gateway role ended before it listened: %v\n%s", err, logs.String())
			case <-time.After(30 * time.Second):
				t.Fatalf("the gateway role did not listen within 30 s\n%s", logs.String())
			}
			stop()
			if err := <-served; err != nil {
				t.Fatalf("the gateway role stopped with %v\n%s", err, logs.String())
			}
		})
	}
}
