package config

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The gateway's anonymous limit and its trusted proxies: defaults (none
// trusted), the file, WXHUB_* and the flags, which replace the file's
// list.
func TestGatewayAnonymousLimitAndTrustedProxies(t *testing.T) {
	file := filepath.Join(t.TempDir(), "wxhub.yaml")
	os.WriteFile(file, []byte(`
gateway:
  anonymous_rate: 20
  anonymous_burst: 40
  anonymous_max_clients: 500
  trusted_proxies: [127.0.0.1, "10.0.0.0/8"]
`), 0o600)
	load := func(args []string, e map[string]string) Gateway {
		t.Helper()
		c, err := Load(flag.NewFlagSet("t", flag.ContinueOnError), FlagsServer|FlagsGateway, args, env(e))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(false); err != nil {
			t.Fatal(err)
		}
		return c.Gateway
	}
	g := load(nil, nil)
	if g.AnonymousRate != 100 || g.AnonymousBurst != 200 || g.AnonymousMaxClients != 10000 || len(g.TrustedProxies) != 0 || g.TrustedProxyPrefixes() != nil {
		t.Fatalf("defaults: %+v", g)
	}
	g = load([]string{"--config", file}, nil)
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}
	if g.AnonymousRate != 20 || g.AnonymousBurst != 40 || g.AnonymousMaxClients != 500 || !reflect.DeepEqual(g.TrustedProxyPrefixes(), want) {
		t.Fatalf("from the file: %+v, proxies %v", g, g.TrustedProxyPrefixes())
	}
	g = load([]string{"--config", file, "--gateway-anonymous-rate", "1", "--gateway-trusted-proxies", "192.0.2.1, 2001:db8::/32", "--gateway-trusted-proxies", "::1"},
		map[string]string{"WXHUB_GATEWAY_ANONYMOUS_BURST": "3", "WXHUB_GATEWAY_ANONYMOUS_MAX_CLIENTS": "7"})
	want = []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("::1/128")}
	if g.AnonymousRate != 1 || g.AnonymousBurst != 3 || g.AnonymousMaxClients != 7 || !reflect.DeepEqual(g.TrustedProxyPrefixes(), want) {
		t.Fatalf("from flags and env: %+v, proxies %v", g, g.TrustedProxyPrefixes())
	}
	g = load(nil, map[string]string{"WXHUB_GATEWAY_TRUSTED_PROXIES": "172.16.0.0/12"})
	if !reflect.DeepEqual(g.TrustedProxyPrefixes(), []netip.Prefix{netip.MustParsePrefix("172.16.0.0/12")}) {
		t.Fatalf("from WXHUB_GATEWAY_TRUSTED_PROXIES: %v", g.TrustedProxies)
	}
}

func TestGatewayAnonymousLimitValidateNamesTheField(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Gateway)
		want string
	}{
		{"defaults", func(*Gateway) {}, ""},
		{"no anonymous rate", func(g *Gateway) { g.AnonymousRate = 0 }, "gateway.anonymous_rate"},
		{"no anonymous burst", func(g *Gateway) { g.AnonymousBurst = 0 }, "gateway.anonymous_rate"},
		{"no clients remembered", func(g *Gateway) { g.AnonymousMaxClients = 0 }, "gateway.anonymous_max_clients"},
		{"too many clients remembered", func(g *Gateway) { g.AnonymousMaxClients = MaxGatewayAnonymousClients + 1 }, "gateway.anonymous_max_clients"},
		{"bad trusted proxy", func(g *Gateway) { g.TrustedProxies = []string{"10.0.0.0/8", "proxy.example.com"} }, "gateway.trusted_proxies[1]"},
		{"trusted proxy with a zone", func(g *Gateway) { g.TrustedProxies = []string{"fe80::1%eth0"} }, "gateway.trusted_proxies[0]"},
		{"body budget below the largest body", func(g *Gateway) { g.MaxBufferedBytes = 1 << 20 }, "gateway.max_buffered_bytes"},
		{"negative body budget", func(g *Gateway) { g.MaxBufferedBytes = -1 }, "gateway.max_buffered_bytes"},
		{"body budget of the largest body", func(g *Gateway) { g.MaxBufferedBytes = 20 << 20 }, ""},
		{"answer timeout below a second", func(g *Gateway) { g.AnswerTimeout = 500 * time.Millisecond }, "gateway.answer_timeout"},
		{"negative answer timeout", func(g *Gateway) { g.AnswerTimeout = -time.Second }, "gateway.answer_timeout"},
		{"answer timeout of a second", func(g *Gateway) { g.AnswerTimeout = time.Second }, ""},
		{"long answer timeout", func(g *Gateway) { g.AnswerTimeout = 10 * time.Minute }, ""},
	}
	for _, c := range cases {
		cfg := Default()
		c.edit(&cfg.Gateway)
		err := cfg.Validate(false)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error naming %s", c.name, err, c.want)
		}
	}
}

// gateway.answer_timeout: 0 (the gateway's default) unless the file,
// WXHUB_GATEWAY_ANSWER_TIMEOUT or --gateway-answer-timeout sets it, in
// rising precedence.
func TestGatewayAnswerTimeout(t *testing.T) {
	file := filepath.Join(t.TempDir(), "wxhub.yaml")
	os.WriteFile(file, []byte("gateway:\n  answer_timeout: 2m\n"), 0o600)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want time.Duration
	}{
		{"default", nil, nil, 0},
		{"file", []string{"--config", file}, nil, 2 * time.Minute},
		{"environment over the file", []string{"--config", file}, map[string]string{"WXHUB_GATEWAY_ANSWER_TIMEOUT": "90s"}, 90 * time.Second},
		{"flag over both", []string{"--config", file, "--gateway-answer-timeout", "30s"}, map[string]string{"WXHUB_GATEWAY_ANSWER_TIMEOUT": "90s"}, 30 * time.Second},
	}
	for _, tt := range tests {
		c, err := Load(flag.NewFlagSet("t", flag.ContinueOnError), FlagsServer|FlagsGateway, tt.args, env(tt.env))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if err := c.Validate(false); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if c.Gateway.AnswerTimeout != tt.want {
			t.Errorf("%s: answer timeout %v, want %v", tt.name, c.Gateway.AnswerTimeout, tt.want)
		}
	}
}
