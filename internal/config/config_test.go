package config

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "wxhub.yaml")
	secretFile := filepath.Join(dir, "secret")
	os.WriteFile(secretFile, []byte("file-secret\n"), 0o600)
	os.WriteFile(file, []byte(`
nats: {url: nats://file:4222}
worker: {concurrency: 10, max_deliver: 7}
holder: {lease_ttl: 5s}
apps:
  - appid: wxfile
    secret_file: `+secretFile+`
    mode: stable_token
`), 0o600)
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c, err := Load(fs, FlagsNATS|FlagsServer|FlagsHolder|FlagsWorker, []string{"--config", file, "--concurrency", "32"},
		env(map[string]string{"WXHUB_NATS_URL": "nats://env:4222", "WXHUB_MAX_DELIVER": "9"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ResolveSecrets(env(nil)); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"flag beats file", c.Worker.Concurrency, 32},
		{"env beats file", c.Worker.MaxDeliver, 9},
		{"env beats file (url)", c.NATS.URL, "nats://env:4222"},
		{"file beats default", c.Holder.LeaseTTL, 5 * time.Second},
		{"default", c.Holder.RefreshMargin, 10 * time.Minute},
		{"app from file", c.Apps[0].AppID, "wxfile"},
		{"secret from file, trimmed", c.Apps[0].Secret, "file-secret"},
		{"mode", c.Apps[0].Mode, "stable_token"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if err := c.Validate(true); err != nil {
		t.Fatal(err)
	}
}

func TestAppsFromFlagsAndEnvSecret(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c, err := Load(fs, FlagsNATS|FlagsServer, []string{"--app", "appid=wxa,mode=token", "--app", "appid=wxb"}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ResolveSecrets(env(map[string]string{"WXHUB_SECRET_WXA": "sa", "WXHUB_SECRET_WXB": "sb"})); err != nil {
		t.Fatal(err)
	}
	if len(c.Apps) != 2 || c.Apps[0].Secret != "sa" || c.Apps[1].Secret != "sb" {
		t.Fatalf("apps = %+v", c.Apps)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"bad appid", func(c *Config) { c.Apps = []App{{AppID: "bad id", Secret: "s"}} }, "apps[0].appid"},
		{"duplicate appid", func(c *Config) { c.Apps = []App{{AppID: "a", Secret: "s"}, {AppID: "a", Secret: "s"}} }, "apps[1].appid"},
		{"bad mode", func(c *Config) { c.Apps = []App{{AppID: "a", Secret: "s", Mode: "x"}} }, "apps[0].mode"},
		{"missing secret", func(c *Config) { c.Apps = []App{{AppID: "a"}} }, "apps[0].secret"},
		{"concurrency", func(c *Config) { c.Worker.Concurrency = 0 }, "worker.concurrency"},
		{"max deliver", func(c *Config) { c.Worker.MaxDeliver = 0 }, "worker.max_deliver"},
		{"ack wait", func(c *Config) { c.Worker.AckWait = 0 }, "worker.ack_wait"},
		{"lease ttl", func(c *Config) { c.Holder.LeaseTTL = 0 }, "holder.lease_ttl"},
		{"margin", func(c *Config) { c.Holder.RefreshMargin = 3 * time.Hour }, "holder.refresh_margin"},
		{"reserve", func(c *Config) { c.Holder.QuotaReserve = 5000 }, "holder.quota_reserve"},
		{"reserve at the limit", func(c *Config) { c.Holder.QuotaDailyLimit, c.Holder.QuotaReserve = 100, 100 }, "holder.quota_reserve"},
		{"daily limit", func(c *Config) { c.Holder.QuotaDailyLimit = 0 }, "holder.quota_daily_limit"},
		{"daily limit too high", func(c *Config) { c.Holder.QuotaDailyLimit = 2_000_000 }, "holder.quota_daily_limit"},
		{"replicas", func(c *Config) { c.Replicas = 0 }, "replicas"},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, "log.format"},
		{"log level", func(c *Config) { c.Log.Level = "loud" }, "log.level"},
		{"prefix", func(c *Config) { c.Prefix = "wx.>" }, "prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.edit(&c)
			err := c.Validate(true)
			if err == nil || !strings.HasPrefix(err.Error(), tt.field) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tt.field)
			}
		})
	}
	if err := func() error { c := Default(); return c.Validate(true) }(); err != nil {
		t.Fatalf("defaults must be valid: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	unknown := filepath.Join(dir, "unknown.yaml")
	os.WriteFile(unknown, []byte("workers: {concurrency: 3}\n"), 0o600)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown key in file", []string{"--config", unknown}, nil, "workers"},
		{"missing file", []string{"--config=" + filepath.Join(dir, "nope.yaml")}, nil, "config file"},
		{"bad env value", nil, map[string]string{"WXHUB_CONCURRENCY": "lots"}, "WXHUB_CONCURRENCY"},
		{"bad app flag", []string{"--app", "wxa"}, nil, "key=value"},
		{"secret never echoed", []string{"--app", "appid=a,secret=TOPSECRET,bogus=1"}, nil, "bogus"},
		{"empty nats-url", []string{"--nats-url", ""}, nil, "nats-url: empty"},
		{"blank NATS_URL-style env", nil, map[string]string{"WXHUB_NATS_URL": " "}, "nats-url: empty"},
		{"negative connect timeout", []string{"--nats-connect-timeout", "-1s"}, nil, "nats-connect-timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			_, err := Load(fs, FlagsNATS|FlagsServer|FlagsWorker, tt.args, env(tt.env))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load() = %v, want error containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "TOPSECRET") {
				t.Fatalf("error leaks the secret: %v", err)
			}
		})
	}
}

// TestNATSURLFallback: NATS_URL (the nats CLI's variable) is used only when
// neither --nats-url, WXHUB_NATS_URL nor the config file sets the URL.
func TestNATSURLFallback(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "wxhub.yaml")
	if err := os.WriteFile(file, []byte("nats: {url: \"nats://file:4222\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"default", nil, nil, DefaultNATSURL},
		{"NATS_URL alone", nil, map[string]string{"NATS_URL": "nats://cli:4222"}, "nats://cli:4222"},
		{"WXHUB_NATS_URL wins", nil, map[string]string{"NATS_URL": "nats://cli:4222", "WXHUB_NATS_URL": "nats://wx:4222"}, "nats://wx:4222"},
		{"flag wins", []string{"--nats-url", "nats://flag:4222"}, map[string]string{"NATS_URL": "nats://cli:4222"}, "nats://flag:4222"},
		{"file wins over NATS_URL", []string{"--config", file}, map[string]string{"NATS_URL": "nats://cli:4222"}, "nats://file:4222"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			c, err := Load(fs, FlagsNATS, tt.args, env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if c.NATS.URL != tt.want {
				t.Fatalf("nats url = %q, want %q", c.NATS.URL, tt.want)
			}
		})
	}
}

func TestParseClientAndKeys(t *testing.T) {
	c, err := ParseClient("name=shop,key_file=/k,appids=wxa|wxb,paths=/cgi-bin/|/sns/,rate=2.5,burst=5,real_token=true")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "shop" || c.KeyFile != "/k" || len(c.AppIDs) != 2 || c.AppIDs[1] != "wxb" || len(c.Paths) != 2 || c.Rate != 2.5 || c.Burst != 5 || !c.RealToken {
		t.Fatalf("parsed %+v", c)
	}
	for _, bad := range []string{"name=a,key=SECRETKEY123,bogus=1", "name=a,key=SECRETKEY123,rate=fast", "name=a,key=SECRETKEY123,oops"} {
		_, err := ParseClient(bad)
		if err == nil || strings.Contains(err.Error(), "SECRETKEY123") {
			t.Errorf("ParseClient(%q) = %v: want an error without the key", "…", err)
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "k")
	if err := os.WriteFile(file, []byte("from-file-key-0123456\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Default()
	cfg.Gateway.Clients = []Client{{Name: "shop-1", KeyFile: file}, {Name: "b.c", Key: "inline"}, {Name: "d", KeyFile: file}}
	env := map[string]string{"WXHUB_CLIENT_KEY_B_C": "from-env", "WXHUB_CLIENT_KEY_D": "env-wins"}
	if err := cfg.ResolveClientKeys(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if got := []string{cfg.Gateway.Clients[0].Key, cfg.Gateway.Clients[1].Key, cfg.Gateway.Clients[2].Key}; got[0] != "from-file-key-0123456" || got[1] != "from-env" || got[2] != "env-wins" {
		t.Fatalf("keys %q", got)
	}
}

// TestHelpShowsNoSecret: -help prints every flag's default, and a NATS
// password or token from the file or the environment is a default then.
func TestHelpShowsNoSecret(t *testing.T) {
	file := filepath.Join(t.TempDir(), "wxhub.yaml")
	os.WriteFile(file, []byte("nats: {url: 'nats://u:url-password@file:4222', user: u, password: file-password, token: file-token}\n"), 0o600)
	for _, src := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"file", []string{"--config", file, "-help"}, nil},
		{"env", []string{"-help"}, map[string]string{"WXHUB_NATS_USER": "u", "WXHUB_NATS_PASSWORD": "env-password", "WXHUB_NATS_TOKEN": "env-token", "WXHUB_NATS_URL": "nats://env-url-token@h:4222"}},
	} {
		t.Run(src.name, func(t *testing.T) {
			var out strings.Builder
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(&out)
			_, _ = Load(fs, FlagsNATS|FlagsServer, src.args, env(src.env))
			if !strings.Contains(out.String(), "nats-password") {
				t.Fatalf("no help printed:\n%s", out.String())
			}
			for _, secret := range []string{"file-password", "file-token", "env-password", "env-token", "url-password", "env-url-token"} {
				if strings.Contains(out.String(), secret) {
					t.Errorf("-help shows %q:\n%s", secret, out.String())
				}
			}
		})
	}
}

// TestReplicasOnlyWhereStreamsAreCreated: --replicas is offered only by
// the commands that create streams (wxhub provision, wxhub run); the
// roles that only bind refuse it instead of ignoring it, while the file's
// replicas key (shared with provision) stays valid for them. Likewise
// --duplicate-window, which the worker also takes (it checks its ack wait
// against it) and holder and gateway, which never read it, refuse.
func TestReplicasOnlyWhereStreamsAreCreated(t *testing.T) {
	file := filepath.Join(t.TempDir(), "wxhub.yaml")
	if err := os.WriteFile(file, []byte("replicas: 3\nduplicate_window: 20m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		roles    Roles
		replicas bool
		window   bool // --duplicate-window: where streams are made, and the worker that checks its ack wait against it
	}{
		{"holder", CommandHolder, false, false},
		{"worker", CommandWorker, false, true},
		{"gateway", CommandGateway, false, false},
		{"provision", CommandProvision, true, true},
		{"run", CommandRun, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			c, err := Load(fs, tt.roles, []string{"--config", file}, env(nil))
			if err != nil {
				t.Fatal(err)
			}
			if c.Replicas != 3 || c.DuplicateWindow != 20*time.Minute {
				t.Errorf("from the file: replicas %d, duplicate window %v", c.Replicas, c.DuplicateWindow)
			}
			if got := fs.Lookup("replicas") != nil; got != tt.replicas {
				t.Errorf("--replicas offered %v, want %v", got, tt.replicas)
			}
			if got := fs.Lookup("duplicate-window") != nil; got != tt.window {
				t.Errorf("--duplicate-window offered %v, want %v", got, tt.window)
			}
			if tt.name == "provision" {
				// The consumers' settings, not the worker process's.
				for _, name := range []string{"max-deliver", "ack-wait"} {
					if fs.Lookup(name) == nil {
						t.Errorf("--%s not offered", name)
					}
				}
				for _, name := range []string{"concurrency", "vault-keys-file", "http-listen", "app"} {
					if fs.Lookup(name) != nil {
						t.Errorf("--%s offered, and would do nothing", name)
					}
				}
			}
			quiet := flag.NewFlagSet("t", flag.ContinueOnError)
			quiet.SetOutput(io.Discard)
			_, err = Load(quiet, tt.roles, []string{"--replicas", "5"}, env(nil))
			if tt.replicas != (err == nil) {
				t.Errorf("--replicas 5: %v", err)
			}
			c, err = Load(flag.NewFlagSet("t", flag.ContinueOnError), tt.roles, nil, env(map[string]string{"WXHUB_REPLICAS": "5"}))
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{true: 5, false: 1}[tt.replicas]; c.Replicas != want {
				t.Errorf("WXHUB_REPLICAS=5: replicas %d, want %d", c.Replicas, want)
			}
		})
	}
}

// The gateway gets every field of each app and client, as `wxhub
// gateway` and the deploy tests both build it from here.
func TestGatewayAppsAndClients(t *testing.T) {
	cfg := Config{
		Apps: []App{{AppID: "wx0123456789abcdef", Secret: "s1", SecretFile: "/ignored", Mode: "token"}},
		Gateway: Gateway{Clients: []Client{{Name: "shop", Key: "k", KeyFile: "/ignored", AppIDs: []string{"*"},
			Paths: []string{"/cgi-bin/user/"}, Rate: 5, Burst: 10, RealToken: true}}},
	}
	apps := cfg.GatewayApps()
	if len(apps) != 1 || apps[0].AppID != "wx0123456789abcdef" || apps[0].Secret != "s1" {
		t.Fatalf("apps = %+v", apps)
	}
	cl := cfg.GatewayClients()
	if len(cl) != 1 {
		t.Fatalf("clients = %+v", cl)
	}
	c := cl[0]
	if c.Name != "shop" || c.Key != "k" || len(c.AppIDs) != 1 || c.AppIDs[0] != "*" || len(c.Paths) != 1 ||
		c.Rate != 5 || c.Burst != 10 || !c.RealToken {
		t.Fatalf("client = %+v", c)
	}
}

// TestPlaceholdersRefused: an AppSecret or client key still set to one of
// deploy/kubernetes/secret.yaml's placeholders is refused, wherever it
// comes from, with an error naming the field and the way out.
func TestPlaceholdersRefused(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "placeholder")
	if err := os.WriteFile(file, []byte("REPLACE-WITH-THE-SHOP-CLIENT-KEY\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(dir, "real")
	if err := os.WriteFile(real, []byte("a-real-key-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		app     App
		client  Client
		env     map[string]string
		wantErr string // "" for none
	}{
		{name: "app secret inline", app: App{AppID: "wxa", Secret: "REPLACE-WITH-THE-APPSECRET"}, wantErr: "apps[0].secret: the AppSecret of wxa is still a REPLACE-WITH-... placeholder"},
		{name: "app secret file", app: App{AppID: "wxa", SecretFile: file}, wantErr: "or set WXHUB_SECRET_WXA"},
		{name: "app secret env", app: App{AppID: "wxa", Secret: "real"}, env: map[string]string{"WXHUB_SECRET_WXA": "REPLACE-WITH-THE-APPSECRET"}, wantErr: "apps[0].secret"},
		{name: "app secret real env over placeholder file", app: App{AppID: "wxa", SecretFile: file}, env: map[string]string{"WXHUB_SECRET_WXA": "the-real-one"}},
		{name: "client key file", client: Client{Name: "shop", KeyFile: file}, wantErr: "gateway.clients[0].key: the key of client shop is still a REPLACE-WITH-... placeholder"},
		{name: "client key env", client: Client{Name: "shop", KeyFile: real}, env: map[string]string{"WXHUB_CLIENT_KEY_SHOP": "REPLACE-WITH-IT-PLEASE"}, wantErr: "or set WXHUB_CLIENT_KEY_SHOP"},
		{name: "client key inline", client: Client{Name: "shop", Key: "REPLACE-WITH-THE-SHOP-CLIENT-KEY"}, wantErr: "gateway.clients[0].key"},
		{name: "client key real", client: Client{Name: "shop", KeyFile: real}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			var err error
			if tt.app.AppID != "" {
				c.Apps = []App{tt.app}
				err = c.ResolveSecrets(env(tt.env))
			} else {
				c.Gateway.Clients = []Client{tt.client}
				err = c.ResolveClientKeys(env(tt.env))
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("err = %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// A malformed --app or --client never echoes what may be its secret: a
// misspelt key's value, or a part without '=', is redacted too.
func TestParseErrorsShowNoSecret(t *testing.T) {
	tests := []struct {
		name, in string
		parse    func(string) error
		want     string // in the error
	}{
		{"app: Secret", "appid=wx1,Secret=TOPSECRET123", func(s string) error { _, err := ParseApp(s); return err }, `unknown key "Secret"`},
		{"app: app_secret", "appid=wx1,app_secret=TOPSECRET123", func(s string) error { _, err := ParseApp(s); return err }, `appid=wx1,app_secret=[redacted]`},
		{"app: space before =", "appid=wx1, secret =TOPSECRET123", func(s string) error { _, err := ParseApp(s); return err }, `unknown key`},
		{"app: no =", "appid=wx1,TOPSECRET123", func(s string) error { _, err := ParseApp(s); return err }, `appid=wx1,[redacted]`},
		{"app: bad mode keeps the secret out", "appid=wx1,secret=TOPSECRET123,mode=x,bogus=1", func(s string) error { _, err := ParseApp(s); return err }, `secret=[redacted]`},
		{"client: Key", "name=a,Key=TOPSECRET123", func(s string) error { _, err := ParseClient(s); return err }, `unknown key "Key"`},
		{"client: no =", "name=a,TOPSECRET123", func(s string) error { _, err := ParseClient(s); return err }, `name=a,[redacted]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.parse(tt.in)
			if err == nil || strings.Contains(err.Error(), "TOPSECRET123") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q and no secret", err, tt.want)
			}
		})
	}
}
