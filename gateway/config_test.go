package gateway_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/worker"
)

func TestConfigErrorsNameTheField(t *testing.T) {
	t.Parallel()
	base := func() gateway.Config {
		return gateway.Config{Tokens: worker.NewTokenCache(nil), BaseURL: "http://127.0.0.1:1",
			Apps: []gateway.App{{AppID: appA}, {AppID: appB}}, Clients: clients()}
	}
	tests := []struct {
		name   string
		change func(*gateway.Config)
		want   string
	}{
		{"ok", func(*gateway.Config) {}, ""},
		{"no clients", func(c *gateway.Config) { c.Clients = nil }, "no client"},
		{"no apps", func(c *gateway.Config) { c.Apps = nil }, "no app"},
		{"bad base URL", func(c *gateway.Config) { c.BaseURL = "api.weixin.qq.com" }, "base URL"},
		{"short key", func(c *gateway.Config) { c.Clients[0].Key = "short" }, "clients[0].key"},
		{"bad name", func(c *gateway.Config) { c.Clients[1].Name = "a b" }, "clients[1].name"},
		{"twice", func(c *gateway.Config) { c.Clients[1].Name = "shop" }, "appears twice"},
		{"unknown app", func(c *gateway.Config) { c.Clients[0].AppIDs = []string{"wxnope"} }, "not a configured app"},
		{"no appids", func(c *gateway.Config) { c.Clients[0].AppIDs = nil }, "clients[0].appids"},
		{"path", func(c *gateway.Config) { c.Clients[0].Paths = []string{"cgi-bin"} }, "must start with /"},
		{"two real-token clients of an app", func(c *gateway.Config) { c.Clients[0].RealToken = true }, "at most one client per app"},
		{"tls half", func(c *gateway.Config) { c.TLSCert = "x.pem" }, "tls_cert and tls_key"},
		// The same key under another name (a copy-paste in the file)
		// would make the two clients one: the error names both, never
		// the key.
		{"same key twice", func(c *gateway.Config) { c.Clients[2].Key = keyShop }, "clients shop and tool have the same key"},
		{"same key, not adjacent", func(c *gateway.Config) {
			c.Clients = append(c.Clients, gateway.Client{Name: "late", Key: keyOther, AppIDs: []string{appA}})
		}, "gateway.clients[3].key: clients other and late have the same key"},
		{"keys that differ in case only", func(c *gateway.Config) { c.Clients[2].Key = strings.ToUpper(keyShop) }, ""},
		{"drain shorter than a relayed call", func(c *gateway.Config) { c.DrainTimeout = 30 * time.Second }, "drain timeout"},
		// The old default (a token wait and a call: 45 s) cut an upload
		// still within its bounds: its headers, its body (2 ×
		// CallTimeout), then the call.
		{"drain of a token wait and a call", func(c *gateway.Config) { c.DrainTimeout = 45 * time.Second }, "drain timeout"},
		{"drain just short of a relayed call with its body", func(c *gateway.Config) { c.DrainTimeout = 115*time.Second - 1 }, "drain timeout"},
		{"drain covering a relayed call with its body", func(c *gateway.Config) { c.DrainTimeout = 115 * time.Second }, ""},
		{"drain shorter than a mounted wait", func(c *gateway.Config) { c.MountWait, c.DrainTimeout = 2*time.Minute, 130*time.Second }, "drain timeout"},
		{"drain covering both", func(c *gateway.Config) { c.MountWait, c.DrainTimeout = 2*time.Minute, 135*time.Second }, ""},
		{"body budget below the largest body", func(c *gateway.Config) { c.MaxRequestBody, c.MaxBufferedBytes = 1<<20, 1<<20-1 }, "max buffered bytes"},
		{"body budget of one largest body", func(c *gateway.Config) { c.MaxRequestBody, c.MaxBufferedBytes = 1<<20, 1<<20 }, ""},
		{"negative anonymous rate", func(c *gateway.Config) { c.AnonymousRate = -1 }, "anonymous rate"},
		{"negative anonymous burst", func(c *gateway.Config) { c.AnonymousBurst = -1 }, "anonymous rate"},
		{"negative anonymous clients", func(c *gateway.Config) { c.MaxAnonymousClients = -1 }, "anonymous rate"},
		{"invalid trusted proxy", func(c *gateway.Config) {
			c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), {}}
		}, "trusted_proxies[1]"},
		{"body budget by default under a larger body limit", func(c *gateway.Config) { c.MaxRequestBody = 256 << 20 }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.change(&c)
			_, err := gateway.New(c)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("New: %v, want %q", err, tt.want)
			}
			if err != nil {
				for _, k := range []string{keyShop, keyOther, keyReal} {
					if strings.Contains(err.Error(), k) {
						t.Fatal("the error shows a key")
					}
				}
			}
		})
	}
}

// The default drain covers what a request may take: its headers, then
// a token wait, its body (2 × CallTimeout) and the call (CallTimeout),
// or a mounted handler's wait, whichever is longer, plus the margin.
func TestDrainForCoversTheLongestRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		tokenWait, callTimeout, mountWait time.Duration
		want                              time.Duration
	}{
		{0, 0, 0, 115 * time.Second}, // defaults: 10 s + 10 s + 60 s + 30 s + 5 s
		{0, 0, 5 * time.Second, 115 * time.Second},
		{0, 0, time.Minute, 115 * time.Second},
		{0, 0, 2 * time.Minute, 135 * time.Second},
		{time.Second, 2 * time.Second, 0, 22 * time.Second},
		{time.Second, 2 * time.Second, 10 * time.Second, 25 * time.Second},
	}
	for _, tt := range tests {
		if got := gateway.DrainFor(tt.tokenWait, tt.callTimeout, tt.mountWait); got != tt.want {
			t.Errorf("DrainFor(%v, %v, %v) = %v, want %v", tt.tokenWait, tt.callTimeout, tt.mountWait, got, tt.want)
		}
	}
}
