package holder

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/wechat"
)

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.setDefaults()
	tests := []struct {
		name      string
		got, want any
	}{
		{"LeaseTTL", c.LeaseTTL, 10 * time.Second},
		{"RefreshMargin", c.RefreshMargin, 10 * time.Minute},
		{"Jitter", c.Jitter, 2 * time.Minute},
		{"MinForceInterval", c.MinForceInterval, 30 * time.Second},
		{"ConflictWindow", c.ConflictWindow, 10 * time.Minute},
		{"QuotaDailyLimit", c.QuotaDailyLimit, 2000},
		{"QuotaReserve", c.QuotaReserve, 200},
		{"CheckInterval", c.CheckInterval, time.Second},
		{"ConfigRetryInterval", c.ConfigRetryInterval, 5 * time.Minute},
		{"ID set", c.ID != "", true},
		{"Now set", c.Now != nil, true},
		{"Logger set", c.Logger != nil, true},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	var d Config
	d.setDefaults()
	if c.ID == d.ID {
		t.Errorf("two default IDs are equal: %q", c.ID)
	}
	neg := Config{Jitter: -1, QuotaReserve: -1}
	neg.setDefaults()
	if neg.Jitter != 0 || neg.QuotaReserve != 0 {
		t.Errorf("negative Jitter/QuotaReserve: got %v/%d, want none", neg.Jitter, neg.QuotaReserve)
	}
}

func TestConfigValidate(t *testing.T) {
	wc, err := wechat.NewClient(wechat.Config{})
	if err != nil {
		t.Fatal(err)
	}
	nc := &nats.Conn{} // never dialled: Validate only checks presence
	app := App{AppID: "wx1", Secret: "s"}
	base := func(mut func(*Config)) Config {
		c := Config{Conn: nc, WeChat: wc, Apps: []App{app}}
		if mut != nil {
			mut(&c)
		}
		return c
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"valid", base(nil), ""},
		{"stable mode", base(func(c *Config) { c.Apps[0].Mode = events.ModeStableToken }), ""},
		{"no conn", base(func(c *Config) { c.Conn = nil }), "Conn"},
		{"no wechat", base(func(c *Config) { c.WeChat = nil }), "WeChat"},
		{"no apps", base(func(c *Config) { c.Apps = nil }), "app"},
		{"duplicate app", base(func(c *Config) { c.Apps = []App{app, app} }), "twice"},
		{"no appid", base(func(c *Config) { c.Apps = []App{{Secret: "s"}} }), "appid"},
		{"bad appid", base(func(c *Config) { c.Apps = []App{{AppID: "wx.1", Secret: "s"}} }), "appid"},
		{"no secret", base(func(c *Config) { c.Apps = []App{{AppID: "wx1"}} }), "secret"},
		{"both secrets", base(func(c *Config) { c.Apps = []App{{AppID: "wx1", Secret: "s", SecretFile: "f"}} }), "not both"},
		{"bad mode", base(func(c *Config) { c.Apps = []App{{AppID: "wx1", Secret: "s", Mode: "x"}} }), "mode"},
		{"short lease", base(func(c *Config) { c.LeaseTTL = 500 * time.Millisecond }), "LeaseTTL"},
		{"reserve >= limit", base(func(c *Config) { c.QuotaDailyLimit = 100; c.QuotaReserve = 100 }), "QuotaReserve"},
		{"negative margin", base(func(c *Config) { c.RefreshMargin = -time.Second }), "RefreshMargin"},
		{"retry bounds", base(func(c *Config) { c.RetryInitial = time.Minute; c.RetryMax = time.Second }), "RetryInitial"},
		{"id with space", base(func(c *Config) { c.ID = "a b" }), "ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate() = %v, want an error naming %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), `"s"`) {
				t.Errorf("error quotes the secret: %v", err)
			}
		})
	}
}

func TestLoadSecret(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte("  fromfile-s3cr3t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		app     App
		want    string
		wantErr bool
	}{
		{"inline", App{AppID: "wx1", Secret: "inline"}, "inline", false},
		{"file, trimmed", App{AppID: "wx1", SecretFile: file}, "fromfile-s3cr3t", false},
		{"missing file", App{AppID: "wx1", SecretFile: filepath.Join(dir, "nope")}, "", true},
		{"empty file", App{AppID: "wx1", SecretFile: empty}, "", true},
		{"none", App{AppID: "wx1"}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.app.LoadSecret()
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("LoadSecret() = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	// Neither String nor LogValue shows the secret.
	a := App{AppID: "wx1", Secret: "inline-s3cr3t"}
	if s := a.String() + a.LogValue().String(); strings.Contains(s, "inline-s3cr3t") {
		t.Errorf("App formats its secret: %s", s)
	}
}
