package main

import (
	"context"
	"strings"
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
			var logs wxhubtest.Buffer
			env := &cmdEnv{stdout: &logs, stderr: &logs, getenv: func(k string) string {
				return map[string]string{"WXHUB_CLIENT_KEY_SHOP": "budget-client-key-0123", "WXHUB_GATEWAY_MAX_BUFFERED_BYTES": tc.env}[k]
			}}
			args := append([]string{"--nats-url", nats.URL, "--http-listen", "", "--gateway-listen", "127.0.0.1:0",
				"--app", "appid=wxbudget", "--client", "name=shop,appids=wxbudget"}, tc.args...)
			cfg, err := gatewayConfig(env, args)
			if tc.refused {
				if err == nil || !strings.Contains(err.Error(), "gateway.max_buffered_bytes") {
					t.Fatalf("a budget of 1 MiB: %v, want an error naming gateway.max_buffered_bytes", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			budget := make(chan int64, 1)
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			served := make(chan error, 1)
			go func() {
				served <- serve(ctx, cfg, "wxhub-gateway", newLogger(env, cfg.Log), nil,
					gatewayRole(nil, func(gw *gateway.Gateway) { budget <- gw.MaxBufferedBytes() }))
			}()
			select {
			case got := <-budget:
				if got != tc.want {
					t.Errorf("the gateway's body budget is %d, want %d", got, tc.want)
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
			var logs wxhubtest.Buffer
			env := &cmdEnv{stdout: &logs, stderr: &logs, getenv: func(k string) string {
				return map[string]string{"WXHUB_CLIENT_KEY_SHOP": "answer-client-key-0123", "WXHUB_GATEWAY_ANSWER_TIMEOUT": tc.env}[k]
			}}
			args := append([]string{"--nats-url", nats.URL, "--http-listen", "", "--gateway-listen", "127.0.0.1:0",
				"--app", "appid=wxanswer", "--client", "name=shop,appids=wxanswer"}, tc.args...)
			cfg, err := gatewayConfig(env, args)
			if tc.refused {
				if err == nil || !strings.Contains(err.Error(), "gateway.answer_timeout") {
					t.Fatalf("an answer timeout of 100ms: %v, want an error naming gateway.answer_timeout", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			bound := make(chan time.Duration, 1)
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			served := make(chan error, 1)
			go func() {
				served <- serve(ctx, cfg, "wxhub-gateway", newLogger(env, cfg.Log), nil,
					gatewayRole(nil, func(gw *gateway.Gateway) { bound <- gw.AnswerTimeout() }))
			}()
			select {
			case got := <-bound:
				if got != tc.want {
					t.Errorf("the gateway's answer timeout is %v, want %v", got, tc.want)
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
