// Package config loads wxhub's configuration from, in rising precedence,
// defaults, an optional YAML file, WXHUB_* environment variables and
// command-line flags, and validates it with messages that name the field.
package config

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/gateway"
)

// DefaultNATSURL is where `wxhub run` listens, and so where the client
// commands look by default.
const DefaultNATSURL = "nats://127.0.0.1:4222"

// App is one WeChat official account or app.
type App struct {
	AppID      string `yaml:"appid"`
	Secret     string `yaml:"secret,omitempty"`
	SecretFile string `yaml:"secret_file,omitempty"`
	Mode       string `yaml:"mode,omitempty"` // token (default) or stable_token
	// Vault keeps this app's users' OAuth tokens, encrypted, in wx_vault
	// (needs vault keys on the workers). Off by default.
	Vault bool `yaml:"vault,omitempty"`
	// RefreshDays is the life of the app's refresh_tokens: 0 means 30
	// (web apps); WeChat gives mobile apps 180.
	RefreshDays int `yaml:"refresh_days,omitempty"`
}

// Vault configures the user-token vault's keys.
type Vault struct {
	// KeysFile is the keyring file: lines "<id>:<base64 of 32 bytes>",
	// oldest first; the last key encrypts. WXHUB_VAULT_KEYS (the same text,
	// ';' may separate keys) takes precedence.
	KeysFile string `yaml:"keys_file"`
	// Keys is the keyring text, read by ResolveSecrets; never in a file.
	Keys string `yaml:"-"`
}

// NATS says how to reach NATS.
type NATS struct {
	URL      string `yaml:"url"`
	Creds    string `yaml:"creds"`
	NKey     string `yaml:"nkey"`
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	Token    string `yaml:"token"`
	TLSCA    string `yaml:"tls_ca"`
	TLSCert  string `yaml:"tls_cert"`
	TLSKey   string `yaml:"tls_key"`
	// ConnectTimeout bounds how long a long-running role retries its
	// first connection (a role may start before its NATS server does).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// Accounts says the NATS server uses wxhub's accounts layout
	// (deploy/nats): each role in an account of its own, reaching the
	// streams of the others through the API prefixes its account imports.
	// False (the default): every stream in the connection's own account,
	// as with `wxhub run`.
	Accounts bool `yaml:"accounts"`
}

// Conn converts to a broker.ConnConfig.
func (n NATS) Conn(name string) broker.ConnConfig {
	return broker.ConnConfig{URL: n.URL, Name: name, CredsFile: n.Creds, NKeyFile: n.NKey,
		User: n.User, Password: n.Password, Token: n.Token, TLSCA: n.TLSCA, TLSCert: n.TLSCert, TLSKey: n.TLSKey}
}

// DemoPassword is the NATS password deploy/ ships for user
// (deploy/nats/accounts.inc and nats-values.yaml hold its hash, the example
// Secret wxhub-nats the password itself), e.g. "holder-demo-password".
func DemoPassword(user string) string { return user + "-demo-password" }

// UsesDemoPassword reports whether n logs in with its user's
// DemoPassword, which anyone who read deploy/ knows.
func (n NATS) UsesDemoPassword() bool { return n.User != "" && n.Password == DemoPassword(n.User) }

// Holder tunes the token holder.
type Holder struct {
	ID            string        `yaml:"id"`
	LeaseTTL      time.Duration `yaml:"lease_ttl"`
	RefreshMargin time.Duration `yaml:"refresh_margin"`
	QuotaReserve  int           `yaml:"quota_reserve"`
	// QuotaDailyLimit is the account's daily /cgi-bin/token limit per
	// appid: 2000 unless WeChat gave the account more.
	QuotaDailyLimit int `yaml:"quota_daily_limit"`
}

// Worker tunes the job workers.
type Worker struct {
	Concurrency int           `yaml:"concurrency"`
	MaxDeliver  int           `yaml:"max_deliver"`
	AckWait     time.Duration `yaml:"ack_wait"`
}

// Log configures log/slog output.
type Log struct {
	Format string `yaml:"format"` // text or json
	Level  string `yaml:"level"`  // debug, info, warn, error
}

// Run configures the all-in-one `wxhub run`.
type Run struct {
	NATSListen string        `yaml:"nats_listen"` // embedded NATS address
	DataDir    string        `yaml:"data_dir"`    // JetStream storage
	SimListen  string        `yaml:"sim_listen"`  // simulator address when no app is configured
	SimLatency time.Duration `yaml:"sim_latency"`
}

// Gateway configures the WeChat-compatible relay (`wxhub gateway`).
type Gateway struct {
	Listen  string   `yaml:"listen"`   // HTTP front address
	TLSCert string   `yaml:"tls_cert"` // certificate file: HTTPS when set with tls_key
	TLSKey  string   `yaml:"tls_key"`
	Clients []Client `yaml:"clients"`
	// AnonymousRate and AnonymousBurst limit the calls without a client
	// key or handle (the /sns calls with the user's own token) per
	// second per client address (an IPv4 address, an IPv6 /64);
	// AnonymousMaxClients bounds the addresses remembered for it.
	AnonymousRate       float64 `yaml:"anonymous_rate"`
	AnonymousBurst      int     `yaml:"anonymous_burst"`
	AnonymousMaxClients int     `yaml:"anonymous_max_clients"`
	// TrustedProxies are the proxies (addresses or CIDR prefixes) in
	// front of the gateway whose X-Forwarded-For names the caller for
	// the anonymous limit; none by default (the caller is the peer's
	// address). The web login has its own (web_login.trusted_proxies).
	TrustedProxies []string `yaml:"trusted_proxies"`
	// MaxBufferedBytes bounds the request bodies the gateway holds in
	// memory at once, all calls together; 0 is gateway's default (128
	// MiB). It must hold the largest request body (20 MiB).
	MaxBufferedBytes int64 `yaml:"max_buffered_bytes"`
	// AnswerTimeout bounds the writing of a relayed answer to the
	// client, from its start; 0 is gateway's default (60 s). At least
	// MinGatewayAnswerTimeout. It is always cut to end within the
	// drain, so it never lengthens a stop.
	AnswerTimeout time.Duration `yaml:"answer_timeout"`
}

// MinGatewayAnswerTimeout is the shortest gateway.answer_timeout
// accepted (but 0, the default): shorter would cut honest downloads.
const MinGatewayAnswerTimeout = time.Second

// MaxGatewayAnonymousClients is the largest
// gateway.anonymous_max_clients accepted.
const MaxGatewayAnonymousClients = 1_000_000

// TrustedProxyPrefixes returns gateway.trusted_proxies as prefixes (an
// address is its own /32 or /128); call Validate first: entries that do
// not parse are left out.
func (g Gateway) TrustedProxyPrefixes() []netip.Prefix { return proxyPrefixes(g.TrustedProxies) }

// validate checks the anonymous limit and the trusted proxies.
func (g Gateway) validate() error {
	if g.AnonymousRate <= 0 || g.AnonymousBurst < 1 {
		return fmt.Errorf("gateway.anonymous_rate: %v, burst %d: want a rate above 0 and a burst of at least 1", g.AnonymousRate, g.AnonymousBurst)
	}
	if g.AnonymousMaxClients < 1 || g.AnonymousMaxClients > MaxGatewayAnonymousClients {
		return fmt.Errorf("gateway.anonymous_max_clients: %d, want 1 to %d", g.AnonymousMaxClients, MaxGatewayAnonymousClients)
	}
	if g.MaxBufferedBytes != 0 && g.MaxBufferedBytes < gateway.DefaultMaxRequestBody {
		return fmt.Errorf("gateway.max_buffered_bytes: %d, want 0 (the default, %d) or at least %d (the largest request body)", g.MaxBufferedBytes, gateway.DefaultMaxBufferedBytes, gateway.DefaultMaxRequestBody)
	}
	if g.AnswerTimeout != 0 && g.AnswerTimeout < MinGatewayAnswerTimeout {
		return fmt.Errorf("gateway.answer_timeout: %v, want 0 (the default, %v) or at least %v", g.AnswerTimeout, gateway.DefaultAnswerTimeout, MinGatewayAnswerTimeout)
	}
	for i, s := range g.TrustedProxies {
		if _, err := parseProxy(s); err != nil {
			return fmt.Errorf("gateway.trusted_proxies[%d]: %w", i, err)
		}
	}
	return nil
}

// Client is a business system allowed to use the gateway. Its key comes,
// in rising precedence, from key (inline), key_file or
// WXHUB_CLIENT_KEY_<NAME> (upper case, '-' and '.' as '_').
type Client struct {
	Name      string   `yaml:"name"`
	Key       string   `yaml:"key,omitempty"`
	KeyFile   string   `yaml:"key_file,omitempty"`
	AppIDs    []string `yaml:"appids"`          // "*" for every app
	Paths     []string `yaml:"paths,omitempty"` // path prefixes; none: every path
	Rate      float64  `yaml:"rate,omitempty"`  // calls per second; 0: unlimited
	Burst     int      `yaml:"burst,omitempty"`
	RealToken bool     `yaml:"real_token,omitempty"` // the real token instead of a handle
}

// ClientKeyEnv is the environment variable holding a client's key.
func ClientKeyEnv(name string) string {
	return "WXHUB_CLIENT_KEY_" + strings.NewReplacer("-", "_", ".", "_").Replace(strings.ToUpper(name))
}

// ResolveClientKeys fills each client's Key from its environment variable
// or key_file.
func (c *Config) ResolveClientKeys(getenv func(string) string) error {
	for i := range c.Gateway.Clients {
		cl := &c.Gateway.Clients[i]
		key, err := credential(getenv, ClientKeyEnv(cl.Name), cl.KeyFile, cl.Key, fmt.Sprintf("gateway.clients[%d].key_file", i))
		if err != nil {
			return err
		}
		if IsPlaceholder(key) {
			return fmt.Errorf("gateway.clients[%d].key: the key of client %s is still a %s... placeholder of deploy/kubernetes/secret.yaml: create the real Secret (deploy/README.md), or set %s", i, cl.Name, PlaceholderPrefix, ClientKeyEnv(cl.Name))
		}
		cl.Key = key
	}
	return nil
}

// PlaceholderPrefix begins every value the deploy examples ship in place
// of a secret (deploy/kubernetes/secret.yaml: REPLACE-WITH-THE-APPSECRET,
// REPLACE-WITH-THE-SHOP-CLIENT-KEY). An AppSecret or gateway client key
// that still begins with it was never replaced, so it is refused: a
// placeholder client key is public and would open the gateway to anyone
// who read the example.
const PlaceholderPrefix = "REPLACE-WITH-"

// IsPlaceholder reports whether v is one of the deploy examples'
// placeholders (it begins with PlaceholderPrefix).
func IsPlaceholder(v string) bool { return strings.HasPrefix(v, PlaceholderPrefix) }

// credential is a secret from the environment variable env, else the
// trimmed content of file (an error naming field when it cannot be read
// or is empty), else inline. It never puts the secret in an error.
func credential(getenv func(string) string, env, file, inline, field string) (string, error) {
	if v := getenv(env); v != "" {
		return v, nil
	}
	if file == "" {
		return inline, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	v := strings.TrimSpace(string(b))
	clear(b)
	if v == "" {
		return "", fmt.Errorf("%s: %s is empty", field, file)
	}
	return v, nil
}

// ParseClient parses the --client flag form
// "name=N,key_file=F,appids=A|B,paths=/cgi-bin/|/sns/,rate=R,burst=B,real_token=true"
// (also key=K).
func ParseClient(s string) (Client, error) {
	var c Client
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return c, fmt.Errorf("client %q: want key=value pairs (name=..., key_file=..., appids=...)", redactClient(s))
		}
		var err error
		switch k {
		case "name":
			c.Name = v
		case "key":
			c.Key = v
		case "key_file":
			c.KeyFile = v
		case "appids":
			c.AppIDs = splitList(v)
		case "paths":
			c.Paths = splitList(v)
		case "rate":
			c.Rate, err = strconv.ParseFloat(v, 64)
		case "burst":
			c.Burst, err = strconv.Atoi(v)
		case "real_token":
			c.RealToken, err = strconv.ParseBool(v)
		default:
			return c, fmt.Errorf("client %q: unknown key %q (want name, key, key_file, appids, paths, rate, burst, real_token)", redactClient(s), k)
		}
		if err != nil {
			return c, fmt.Errorf("client %q: %s: %w", redactClient(s), k, err)
		}
	}
	return c, nil
}

func splitList(v string) []string {
	var out []string
	for _, x := range strings.Split(v, "|") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// redactClient shows a --client flag for error messages with only the
// values of its known, non-secret keys (see redactPairs).
func redactClient(s string) string {
	return redactPairs(s, "name", "key_file", "appids", "paths", "rate", "burst", "real_token")
}

// Config is the whole configuration.
type Config struct {
	NATS     NATS   `yaml:"nats"`
	Prefix   string `yaml:"prefix"`
	Replicas int    `yaml:"replicas"`
	// DuplicateWindow of the job and result streams (see
	// broker.Topology.DuplicateWindow); it must exceed worker.ack_wait.
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	WeChatBaseURL   string        `yaml:"wechat_base_url"`
	HTTPListen      string        `yaml:"http_listen"`
	Log             Log           `yaml:"log"`
	Holder          Holder        `yaml:"holder"`
	Worker          Worker        `yaml:"worker"`
	Run             Run           `yaml:"run"`
	Gateway         Gateway       `yaml:"gateway"`
	Vault           Vault         `yaml:"vault"`
	Apps            []App         `yaml:"apps"`
	WebLogin        WebLogin      `yaml:"web_login"`
}

// Default returns the built-in defaults.
func Default() Config {
	return Config{
		NATS:            NATS{URL: DefaultNATSURL, ConnectTimeout: time.Minute},
		Replicas:        1,
		DuplicateWindow: 10 * time.Minute,
		WeChatBaseURL:   "https://api.weixin.qq.com",
		HTTPListen:      "127.0.0.1:8090",
		Log:             Log{Format: "text", Level: "info"},
		Holder:          Holder{LeaseTTL: 10 * time.Second, RefreshMargin: 10 * time.Minute, QuotaReserve: 200, QuotaDailyLimit: 2000},
		Worker:          Worker{Concurrency: 64, MaxDeliver: 5, AckWait: 60 * time.Second},
		Run:             Run{NATSListen: "127.0.0.1:4222", DataDir: ".wxhub", SimListen: "127.0.0.1:8091"},
		WebLogin:        DefaultWebLogin(),
		Gateway: Gateway{Listen: "127.0.0.1:8092",
			AnonymousRate: gateway.DefaultAnonymousRate, AnonymousBurst: 2 * gateway.DefaultAnonymousRate, AnonymousMaxClients: gateway.DefaultMaxAnonymousClients},
	}
}

// LoadFile merges a YAML file into c. Unknown keys are errors, so a typo
// does not silently fall back to a default.
func (c *Config) LoadFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// maxQuotaDailyLimit bounds holder.quota_daily_limit: far above any
// limit WeChat grants, low enough that a typo (an extra digit or three)
// is caught.
const maxQuotaDailyLimit = 100_000

var appIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ParseApp parses the --app flag form "appid=X,secret_file=F,mode=M"
// (also secret=S).
func ParseApp(s string) (App, error) {
	var a App
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return a, fmt.Errorf("app %q: want key=value pairs (appid=..., secret_file=..., mode=...)", redactApp(s))
		}
		switch k {
		case "appid":
			a.AppID = v
		case "secret":
			a.Secret = v
		case "secret_file":
			a.SecretFile = v
		case "mode":
			a.Mode = v
		case "vault":
			switch v {
			case "on", "true":
				a.Vault = true
			case "off", "false":
				a.Vault = false
			default:
				return a, fmt.Errorf("app %q: vault=%q, want on or off", redactApp(s), v)
			}
		case "refresh_days":
			n, err := strconv.Atoi(v)
			if err != nil {
				return a, fmt.Errorf("app %q: refresh_days=%q, want a number of days", redactApp(s), v)
			}
			a.RefreshDays = n
		default:
			return a, fmt.Errorf("app %q: unknown key %q (want appid, secret, secret_file, mode, vault, refresh_days)", redactApp(s), k)
		}
	}
	return a, nil
}

// redactApp shows an --app flag for error messages with only the values
// of its known, non-secret keys (see redactPairs).
func redactApp(s string) string {
	return redactPairs(s, "appid", "secret_file", "mode", "vault", "refresh_days")
}

// redactPairs shows a key=value list with the values of the keys in shown
// only. Every other value, a secret's, a misspelt key's (Secret=...,
// app_secret=...) or a part without '=', is [redacted]: whatever was
// typed there may be the secret.
func redactPairs(s string, shown ...string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		k, _, ok := strings.Cut(strings.TrimSpace(p), "=")
		switch {
		case !ok:
			parts[i] = "[redacted]"
		case !slices.Contains(shown, k):
			parts[i] = k + "=[redacted]"
		}
	}
	return strings.Join(parts, ",")
}

// ResolveSecrets fills each app's Secret from WXHUB_SECRET_<APPID> (upper
// case) or its secret_file, in that order of precedence over an inline
// secret. getenv is os.Getenv in production.
func (c *Config) ResolveSecrets(getenv func(string) string) error {
	if v := getenv("WXHUB_VAULT_KEYS"); v != "" {
		c.Vault.Keys = v
	} else if c.Vault.KeysFile != "" {
		b, err := os.ReadFile(c.Vault.KeysFile)
		if err != nil {
			return fmt.Errorf("vault.keys_file: %w", err)
		}
		c.Vault.Keys = string(b)
		clear(b)
	}
	for i := range c.Apps {
		a := &c.Apps[i]
		secret, err := credential(getenv, "WXHUB_SECRET_"+strings.ToUpper(a.AppID), a.SecretFile, a.Secret, fmt.Sprintf("apps[%d].secret_file", i))
		if err != nil {
			return err
		}
		if IsPlaceholder(secret) {
			return fmt.Errorf("apps[%d].secret: the AppSecret of %s is still a %s... placeholder of deploy/kubernetes/secret.yaml: create the real Secret (deploy/README.md), or set WXHUB_SECRET_%s", i, a.AppID, PlaceholderPrefix, strings.ToUpper(a.AppID))
		}
		a.Secret = secret
	}
	return nil
}

// Validate checks the configuration, naming the first bad field.
// needSecrets is true for roles that call WeChat with the AppSecret.
func (c Config) Validate(needSecrets bool) error {
	if c.DuplicateWindow < time.Second {
		return fmt.Errorf("duplicate_window: %v, want at least 1s", c.DuplicateWindow)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("replicas: %d, want 1 to 5", c.Replicas)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format: %q, want text or json", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q, want debug, info, warn or error", c.Log.Level)
	}
	if c.Holder.LeaseTTL < time.Second {
		return fmt.Errorf("holder.lease_ttl: %v, want at least 1s", c.Holder.LeaseTTL)
	}
	if c.Holder.RefreshMargin < time.Minute || c.Holder.RefreshMargin > time.Hour {
		return fmt.Errorf("holder.refresh_margin: %v, want 1m to 1h", c.Holder.RefreshMargin)
	}
	if c.Holder.QuotaDailyLimit < 1 || c.Holder.QuotaDailyLimit > maxQuotaDailyLimit {
		return fmt.Errorf("holder.quota_daily_limit: %d, want 1 to %d", c.Holder.QuotaDailyLimit, maxQuotaDailyLimit)
	}
	if c.Holder.QuotaReserve < 0 || c.Holder.QuotaReserve >= c.Holder.QuotaDailyLimit {
		return fmt.Errorf("holder.quota_reserve: %d, want 0 to %d (below holder.quota_daily_limit %d)", c.Holder.QuotaReserve, c.Holder.QuotaDailyLimit-1, c.Holder.QuotaDailyLimit)
	}
	if c.Worker.Concurrency < 1 || c.Worker.Concurrency > 4096 {
		return fmt.Errorf("worker.concurrency: %d, want 1 to 4096", c.Worker.Concurrency)
	}
	if c.Worker.MaxDeliver < 1 {
		return fmt.Errorf("worker.max_deliver: %d, want at least 1", c.Worker.MaxDeliver)
	}
	if c.Worker.AckWait < time.Second {
		return fmt.Errorf("worker.ack_wait: %v, want at least 1s", c.Worker.AckWait)
	}
	if c.Prefix != "" && strings.ContainsAny(c.Prefix, " *>") {
		return fmt.Errorf("prefix: %q must not contain spaces or wildcards", c.Prefix)
	}
	if err := c.WebLogin.Validate(); err != nil {
		return err
	}
	if err := c.Gateway.validate(); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, a := range c.Apps {
		if !appIDRe.MatchString(a.AppID) {
			return fmt.Errorf("apps[%d].appid: %q, want 1-64 letters, digits, _ or -", i, a.AppID)
		}
		if seen[a.AppID] {
			return fmt.Errorf("apps[%d].appid: %s appears twice", i, a.AppID)
		}
		seen[a.AppID] = true
		switch a.Mode {
		case "", events.ModeToken, events.ModeStableToken:
		default:
			return fmt.Errorf("apps[%d].mode: %q, want token or stable_token", i, a.Mode)
		}
		if a.RefreshDays < 0 || a.RefreshDays > 365 {
			return fmt.Errorf("apps[%d].refresh_days: %d, want 1 to 365 (0: 30)", i, a.RefreshDays)
		}
		if needSecrets && a.Secret == "" {
			return fmt.Errorf("apps[%d].secret: missing for %s (set secret_file, or WXHUB_SECRET_%s)", i, a.AppID, strings.ToUpper(a.AppID))
		}
	}
	return nil
}
