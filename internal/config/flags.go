package config

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/internal/redact"
)

// Roles select which flags a subcommand takes.
type Roles uint16

// Flag groups.
const (
	FlagsNATS     Roles = 1 << iota // --nats-* and --prefix
	FlagsServer                     // --http-listen, --log-*, --wechat-base-url, --app
	FlagsHolder                     // --holder-id, --lease-ttl, ...
	FlagsWorker                     // --concurrency, --max-deliver, --ack-wait, --vault-keys-file
	FlagsRun                        // --nats-listen, --data-dir, --sim-*
	FlagsWebLogin                   // --web-login, --oauth-*
	FlagsGateway                    // --gateway-listen, --gateway-tls-*, --client
	FlagsVault                      // --vault-keys-file (also with FlagsWorker)
	// FlagsProvision: what provisioning creates, for the commands that
	// create streams (`wxhub provision`, `wxhub run`): --replicas, the
	// consumers' --max-deliver and --ack-wait (also with FlagsWorker),
	// and --duplicate-window (also with FlagsWorker: the workers check
	// their ack wait against it). Holders, workers and gateways only bind
	// to what exists, so they take no --replicas, and holders and
	// gateways, which never read the window, no --duplicate-window.
	FlagsProvision
)

// The flag groups of the commands a deployment runs: cmd/wxhub parses
// each with its own, and the deploy tests load the shipped files with the
// same.
const (
	CommandHolder    = FlagsNATS | FlagsServer | FlagsHolder
	CommandWorker    = FlagsNATS | FlagsServer | FlagsWorker
	CommandGateway   = FlagsNATS | FlagsServer | FlagsGateway | FlagsWebLogin
	CommandProvision = FlagsNATS | FlagsProvision // and ProvisionOptions' flags
	CommandRun       = FlagsServer | FlagsProvision | FlagsHolder | FlagsWorker | FlagsRun | FlagsGateway | FlagsWebLogin
)

// ProvisionOptions are `wxhub provision`'s own flags, which the file does
// not hold. The zero value is filled by AddFlags' defaults.
type ProvisionOptions struct {
	MaxAckPending int           // jobs in flight across all workers per job subject
	Timeout       time.Duration // give up after this long
}

// AddFlags registers --max-ack-pending and --timeout on fs.
func (o *ProvisionOptions) AddFlags(fs *flag.FlagSet) {
	fs.IntVar(&o.MaxAckPending, "max-ack-pending", broker.DefaultMaxAckPending, "jobs in flight across all workers per job subject")
	fs.DurationVar(&o.Timeout, "timeout", 60*time.Second, "give up after this long (a new cluster may still be electing leaders)")
}

// secretFlag is a string flag that never shows its value: -help prints
// no default for it, even when the file or the environment set one.
type secretFlag struct{ p *string }

func (f secretFlag) String() string     { return "" }
func (f secretFlag) Set(v string) error { *f.p = v; return nil }

// urlFlag is a string flag holding URLs whose -help default shows them
// with their passwords and tokens masked (redact.URL): a --nats-url from
// the file or the environment may carry user:password@.
type urlFlag struct{ p *string }

func (f urlFlag) String() string {
	if f.p == nil {
		return ""
	}
	return redact.URL(*f.p)
}
func (f urlFlag) Set(v string) error { *f.p = v; return nil }

// listFlag collects the values of a repeatable flag whose value may hold
// several items separated by ';' (--app, --client, --web-login): the first
// use replaces the list from the file. It keeps a parse error to itself,
// because the flag package would quote the value (and a secret in it);
// Load reports it.
type listFlag[T any] struct {
	name  string
	items *[]T
	parse func(string) (T, error)
	sep   string // between items in one value; "" means ";"
	set   bool
	err   error
}

func (f *listFlag[T]) String() string { return "" }
func (f *listFlag[T]) Set(v string) error {
	if !f.set {
		*f.items = nil
		f.set = true
	}
	sep := f.sep
	if sep == "" {
		sep = ";"
	}
	for _, one := range strings.Split(v, sep) {
		if strings.TrimSpace(one) == "" {
			continue
		}
		x, err := f.parse(one)
		if err != nil {
			if f.err == nil {
				f.err = fmt.Errorf("--%s: %w", f.name, err)
			}
			return nil
		}
		*f.items = append(*f.items, x)
	}
	return nil
}

// EnvName returns the environment variable for a flag: WXHUB_ and the name
// in upper snake case (--nats-url → WXHUB_NATS_URL).
func EnvName(flagName string) string {
	return "WXHUB_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Load builds the configuration for a subcommand: defaults, then the YAML
// file named by --config or WXHUB_CONFIG, then WXHUB_* variables, then the
// flags in args. fs receives the flags (add subcommand-specific ones
// before calling Load). It returns fs.Args() after parsing.
func Load(fs *flag.FlagSet, roles Roles, args []string, getenv func(string) string) (*Config, error) {
	c := Default()
	path := getenv("WXHUB_CONFIG")
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			path = v
		} else if v, ok := strings.CutPrefix(a, "-config="); ok {
			path = v
		} else if (a == "--config" || a == "-config") && i+1 < len(args) {
			path = args[i+1]
		}
	}
	if path != "" {
		if err := c.LoadFile(path); err != nil {
			return nil, err
		}
	}
	apps := &listFlag[App]{name: "app", items: &c.Apps, parse: ParseApp}
	clients := &listFlag[Client]{name: "client", items: &c.Gateway.Clients, parse: ParseClient}
	webLogins := &listFlag[WebLoginApp]{name: "web-login", items: &c.WebLogin.Apps, parse: ParseWebLoginApp}
	var configPath string
	fs.StringVar(&configPath, "config", path, "YAML configuration `file` (env WXHUB_CONFIG)")
	if roles&FlagsNATS != 0 {
		fs.Var(urlFlag{&c.NATS.URL}, "nats-url", "NATS server `URL`s, comma-separated")
		fs.StringVar(&c.NATS.Creds, "nats-creds", c.NATS.Creds, "NATS credentials `file`")
		fs.StringVar(&c.NATS.NKey, "nats-nkey", c.NATS.NKey, "NATS nkey seed `file`")
		fs.StringVar(&c.NATS.User, "nats-user", c.NATS.User, "NATS user")
		fs.Var(secretFlag{&c.NATS.Password}, "nats-password", "NATS `password` (prefer WXHUB_NATS_PASSWORD)")
		fs.Var(secretFlag{&c.NATS.Token}, "nats-token", "NATS `token` (prefer WXHUB_NATS_TOKEN)")
		fs.StringVar(&c.NATS.TLSCA, "nats-tls-ca", c.NATS.TLSCA, "CA `file` to verify NATS servers")
		fs.StringVar(&c.NATS.TLSCert, "nats-tls-cert", c.NATS.TLSCert, "client certificate `file` for NATS mutual TLS")
		fs.StringVar(&c.NATS.TLSKey, "nats-tls-key", c.NATS.TLSKey, "client key `file` for NATS mutual TLS")
		fs.StringVar(&c.Prefix, "prefix", c.Prefix, "subject `prefix`, e.g. wx.")
		fs.BoolVar(&c.NATS.Accounts, "nats-accounts", c.NATS.Accounts, "the NATS server uses wxhub's accounts layout (deploy/nats): reach other roles' streams through their imports")
	}
	if roles&FlagsNATS != 0 && roles&FlagsServer != 0 {
		fs.DurationVar(&c.NATS.ConnectTimeout, "nats-connect-timeout", c.NATS.ConnectTimeout, "keep retrying the first NATS connection this long (0: try once)")
	}
	if roles&FlagsProvision != 0 {
		fs.IntVar(&c.Replicas, "replicas", c.Replicas, "JetStream replicas for streams and buckets (3 on a cluster)")
	}
	if roles&(FlagsWorker|FlagsProvision) != 0 {
		fs.DurationVar(&c.DuplicateWindow, "duplicate-window", c.DuplicateWindow, "duplicate window of the job and result streams (longer than --ack-wait)")
	}
	if roles&FlagsServer != 0 {
		fs.StringVar(&c.WeChatBaseURL, "wechat-base-url", c.WeChatBaseURL, "WeChat API base `URL`")
		fs.StringVar(&c.HTTPListen, "http-listen", c.HTTPListen, "`address` for /metrics, /healthz and /readyz (empty: off)")
		fs.StringVar(&c.Log.Format, "log-format", c.Log.Format, "log format: text or json")
		fs.StringVar(&c.Log.Level, "log-level", c.Log.Level, "log level: debug, info, warn or error")
		fs.Var(apps, "app", "an app as `appid=ID,secret_file=FILE,mode=token|stable_token,vault=on,refresh_days=30` (repeatable; ';' separates several)")
	}
	if roles&FlagsHolder != 0 {
		fs.StringVar(&c.Holder.ID, "holder-id", c.Holder.ID, "holder `id` (default: hostname-pid)")
		fs.DurationVar(&c.Holder.LeaseTTL, "lease-ttl", c.Holder.LeaseTTL, "leadership lease TTL per appid")
		fs.DurationVar(&c.Holder.RefreshMargin, "refresh-margin", c.Holder.RefreshMargin, "refresh this long before a token expires")
		fs.IntVar(&c.Holder.QuotaReserve, "quota-reserve", c.Holder.QuotaReserve, "daily fetches kept for scheduled refreshes")
		fs.IntVar(&c.Holder.QuotaDailyLimit, "quota-daily-limit", c.Holder.QuotaDailyLimit, "the account's daily /cgi-bin/token limit per appid (WeChat's 2000 unless raised)")
	}
	if roles&FlagsWorker != 0 {
		fs.IntVar(&c.Worker.Concurrency, "concurrency", c.Worker.Concurrency, "jobs in flight per worker process")
	}
	if roles&(FlagsWorker|FlagsProvision) != 0 {
		fs.IntVar(&c.Worker.MaxDeliver, "max-deliver", c.Worker.MaxDeliver, "deliveries of a job before it fails as retryable")
		fs.DurationVar(&c.Worker.AckWait, "ack-wait", c.Worker.AckWait, "redeliver a job not acked within this time")
	}
	if roles&(FlagsWorker|FlagsVault) != 0 {
		fs.StringVar(&c.Vault.KeysFile, "vault-keys-file", c.Vault.KeysFile, "user-token vault keyring `file` (lines id:base64key, newest last; env WXHUB_VAULT_KEYS holds the text itself)")
	}
	if roles&FlagsRun != 0 {
		fs.StringVar(&c.Run.NATSListen, "nats-listen", c.Run.NATSListen, "embedded NATS `address`")
		fs.StringVar(&c.Run.DataDir, "data-dir", c.Run.DataDir, "embedded NATS JetStream data `folder`")
		fs.StringVar(&c.Run.SimListen, "sim-listen", c.Run.SimListen, "simulator `address` (when no app is configured)")
		fs.DurationVar(&c.Run.SimLatency, "sim-latency", c.Run.SimLatency, "simulated WeChat round trip")
	}
	if roles&FlagsWebLogin != 0 {
		c.WebLogin.addFlags(fs, webLogins)
	}
	if roles&FlagsGateway != 0 {
		fs.StringVar(&c.Gateway.Listen, "gateway-listen", c.Gateway.Listen, "`address` of the WeChat-compatible gateway")
		fs.StringVar(&c.Gateway.TLSCert, "gateway-tls-cert", c.Gateway.TLSCert, "certificate `file`: the gateway serves HTTPS")
		fs.StringVar(&c.Gateway.TLSKey, "gateway-tls-key", c.Gateway.TLSKey, "private key `file` of --gateway-tls-cert")
		fs.Float64Var(&c.Gateway.AnonymousRate, "gateway-anonymous-rate", c.Gateway.AnonymousRate, "calls per second without a client key or handle (/sns calls with the user's own token) per client address (an IPv4 address, an IPv6 /64)")
		fs.IntVar(&c.Gateway.AnonymousBurst, "gateway-anonymous-burst", c.Gateway.AnonymousBurst, "burst of calls by one client address above --gateway-anonymous-rate")
		fs.IntVar(&c.Gateway.AnonymousMaxClients, "gateway-anonymous-max-clients", c.Gateway.AnonymousMaxClients, "client addresses remembered for --gateway-anonymous-rate (the least recently used is forgotten beyond)")
		fs.Int64Var(&c.Gateway.MaxBufferedBytes, "gateway-max-buffered-bytes", c.Gateway.MaxBufferedBytes, "request body `bytes` the gateway holds in memory at once, all calls together (0: 128 MiB; at least 20 MiB); past it a call is answered -1 busy")
		fs.DurationVar(&c.Gateway.AnswerTimeout, "gateway-answer-timeout", c.Gateway.AnswerTimeout, "a relayed answer must be written to the client within this long from its start, else the connection is cut (0: 60s; at least 1s; always cut to end within the drain)")
		// Checked by Validate, which names the entry.
		gwProxies := &listFlag[string]{name: "gateway-trusted-proxies", items: &c.Gateway.TrustedProxies, sep: ",",
			parse: func(s string) (string, error) { return strings.TrimSpace(s), nil }}
		fs.Var(gwProxies, "gateway-trusted-proxies", "proxies in front of the gateway whose X-Forwarded-For names the caller for --gateway-anonymous-rate: `addresses or CIDRs`, comma-separated (default none)")
		fs.Var(clients, "client", "a gateway client as `name=N,key_file=F,appids=A|B,paths=/cgi-bin/|/sns/,rate=R,burst=B,real_token=false` (repeatable; ';' separates several; key from WXHUB_CLIENT_KEY_<NAME>)")
	}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" || envErr != nil {
			return
		}
		name := EnvName(f.Name)
		if f.Name == "app" {
			name = "WXHUB_APPS"
		}
		if f.Name == "client" {
			name = "WXHUB_CLIENTS"
		}
		v := getenv(name)
		if v == "" && f.Name == "nats-url" && c.NATS.URL == DefaultNATSURL {
			// The nats CLI's convention, below WXHUB_NATS_URL and the file.
			v = getenv("NATS_URL")
		}
		if v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s: %w", name, err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if apps.err != nil {
		return nil, apps.err
	}
	if clients.err != nil {
		return nil, clients.err
	}
	if webLogins.err != nil {
		return nil, webLogins.err
	}
	if roles&FlagsNATS != 0 && strings.TrimSpace(c.NATS.URL) == "" {
		return nil, errors.New("nats-url: empty (give nats://host:port, comma-separated for a cluster)")
	}
	if c.NATS.ConnectTimeout < 0 {
		return nil, errors.New("nats-connect-timeout: must not be negative")
	}
	return &c, nil
}
