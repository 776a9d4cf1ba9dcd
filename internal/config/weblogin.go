package config

import (
	"flag"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// WebLogin configures the web-login front door (/oauth/authorize and
// /oauth/callback, package gateway/weblogin), served on the gateway's
// HTTP front (--gateway-listen).
type WebLogin struct {
	// AuthorizeBase is WeChat's authorize host: https://open.weixin.qq.com,
	// or the simulator's URL.
	AuthorizeBase string `yaml:"authorize_base"`
	// Wait bounds how long the callback waits for the code job's result.
	Wait time.Duration `yaml:"wait"`
	// AuthorizeRate and AuthorizeBurst limit the logins started per
	// second (/oauth/authorize calls that store a state), all browsers
	// together.
	AuthorizeRate  float64 `yaml:"authorize_rate"`
	AuthorizeBurst int     `yaml:"authorize_burst"`
	// ClientRate and ClientBurst limit the logins started per second by
	// one client (an IPv4 address, an IPv6 /64); MaxClients bounds the
	// clients remembered for it.
	ClientRate  float64 `yaml:"client_rate"`
	ClientBurst int     `yaml:"client_burst"`
	MaxClients  int     `yaml:"max_clients"`
	// TrustedProxies are the proxies (addresses or CIDR prefixes) in
	// front of the gateway whose X-Forwarded-For names the browser; none
	// by default (the client is the peer's address).
	TrustedProxies []string      `yaml:"trusted_proxies"`
	Apps           []WebLoginApp `yaml:"apps"`
}

// WebLoginApp is one app's web-login settings.
type WebLoginApp struct {
	AppID string `yaml:"appid"`
	// Website: an Open Platform website app (/connect/qrconnect,
	// snsapi_login).
	Website bool `yaml:"website,omitempty"`
	// CallbackBase is the public base URL of the front door; WeChat is
	// given CallbackBase + /oauth/callback, so its host must be the app's
	// registered OAuth domain.
	CallbackBase string `yaml:"callback_base"`
	// ReturnTo lists the pages the browser may be sent back to: exact
	// origin, path prefix.
	ReturnTo []string `yaml:"return_to"`
}

// MaxWebLoginWait is the longest web_login.wait (--oauth-wait) accepted.
const MaxWebLoginWait = time.Minute

// DefaultWebLogin are the web-login defaults.
func DefaultWebLogin() WebLogin {
	return WebLogin{AuthorizeBase: "https://open.weixin.qq.com", Wait: 5 * time.Second, AuthorizeRate: 50, AuthorizeBurst: 100,
		ClientRate: 5, ClientBurst: 20, MaxClients: 10000}
}

// MaxWebLoginClients is the largest web_login.max_clients accepted.
const MaxWebLoginClients = 1_000_000

// TrustedProxyPrefixes returns web_login.trusted_proxies as prefixes (an
// address is its own /32 or /128); call Validate first: entries that do
// not parse are left out.
func (w WebLogin) TrustedProxyPrefixes() []netip.Prefix { return proxyPrefixes(w.TrustedProxies) }

// proxyPrefixes are the trusted proxies that parse, as prefixes.
func proxyPrefixes(proxies []string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range proxies {
		if p, err := parseProxy(s); err == nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// parseProxy reads a trusted proxy: a CIDR prefix or one address.
func parseProxy(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q, want an IP address or a CIDR prefix", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParseWebLoginApp parses the --web-login flag form
// "appid=A,callback_base=URL,return_to=URL|URL[,website=true]".
func ParseWebLoginApp(s string) (WebLoginApp, error) {
	var a WebLoginApp
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return a, fmt.Errorf("web login %q: want key=value pairs (appid=..., callback_base=..., return_to=URL|URL, website=true)", s)
		}
		switch k {
		case "appid":
			a.AppID = v
		case "callback_base":
			a.CallbackBase = v
		case "return_to":
			for u := range strings.SplitSeq(v, "|") {
				if u = strings.TrimSpace(u); u != "" {
					a.ReturnTo = append(a.ReturnTo, u)
				}
			}
		case "website":
			switch v {
			case "true", "1", "yes":
				a.Website = true
			case "false", "0", "no":
				a.Website = false
			default:
				return a, fmt.Errorf("web login %q: website=%q, want true or false", s, v)
			}
		default:
			return a, fmt.Errorf("web login %q: unknown key %q (want appid, callback_base, return_to, website)", s, k)
		}
	}
	return a, nil
}

func (w *WebLogin) addFlags(fs *flag.FlagSet, apps flag.Value) {
	fs.StringVar(&w.AuthorizeBase, "oauth-authorize-base", w.AuthorizeBase, "WeChat authorize `URL` base (the simulator's URL for tests)")
	fs.DurationVar(&w.Wait, "oauth-wait", w.Wait, "how long the OAuth callback waits for the code job's result")
	fs.Float64Var(&w.AuthorizeRate, "oauth-authorize-rate", w.AuthorizeRate, "logins started per second (/oauth/authorize), all browsers together")
	fs.IntVar(&w.AuthorizeBurst, "oauth-authorize-burst", w.AuthorizeBurst, "burst of logins started above --oauth-authorize-rate")
	fs.Float64Var(&w.ClientRate, "oauth-client-rate", w.ClientRate, "logins started per second by one client (an IPv4 address, an IPv6 /64)")
	fs.IntVar(&w.ClientBurst, "oauth-client-burst", w.ClientBurst, "burst of logins started by one client above --oauth-client-rate")
	fs.IntVar(&w.MaxClients, "oauth-max-clients", w.MaxClients, "clients remembered for --oauth-client-rate (the least recently used is forgotten beyond)")
	// Checked by Validate, which names the entry.
	proxies := &listFlag[string]{name: "oauth-trusted-proxies", items: &w.TrustedProxies, sep: ",",
		parse: func(s string) (string, error) { return strings.TrimSpace(s), nil }}
	fs.Var(proxies, "oauth-trusted-proxies", "proxies in front of the gateway whose X-Forwarded-For names the browser: `addresses or CIDRs`, comma-separated (default none)")
	fs.Var(apps, "web-login", "web login for an app: `appid=ID,callback_base=URL,return_to=URL|URL[,website=true]` (repeatable; ';' separates several)")
}

// Validate checks the web-login settings, naming the first bad field.
func (w WebLogin) Validate() error {
	if u, err := url.Parse(w.AuthorizeBase); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("web_login.authorize_base: %q, want an http(s) URL", w.AuthorizeBase)
	}
	if w.Wait < 100*time.Millisecond || w.Wait > MaxWebLoginWait {
		return fmt.Errorf("web_login.wait: %v, want 100ms to %v", w.Wait, MaxWebLoginWait)
	}
	if w.AuthorizeRate <= 0 || w.AuthorizeBurst < 1 {
		return fmt.Errorf("web_login.authorize_rate: %v, burst %d: want a rate above 0 and a burst of at least 1", w.AuthorizeRate, w.AuthorizeBurst)
	}
	if w.ClientRate <= 0 || w.ClientBurst < 1 {
		return fmt.Errorf("web_login.client_rate: %v, burst %d: want a rate above 0 and a burst of at least 1", w.ClientRate, w.ClientBurst)
	}
	if w.MaxClients < 1 || w.MaxClients > MaxWebLoginClients {
		return fmt.Errorf("web_login.max_clients: %d, want 1 to %d", w.MaxClients, MaxWebLoginClients)
	}
	for i, s := range w.TrustedProxies {
		if _, err := parseProxy(s); err != nil {
			return fmt.Errorf("web_login.trusted_proxies[%d]: %w", i, err)
		}
	}
	seen := map[string]bool{}
	for i, a := range w.Apps {
		if !appIDRe.MatchString(a.AppID) {
			return fmt.Errorf("web_login.apps[%d].appid: %q, want 1-64 letters, digits, _ or -", i, a.AppID)
		}
		if seen[a.AppID] {
			return fmt.Errorf("web_login.apps[%d].appid: %s appears twice", i, a.AppID)
		}
		seen[a.AppID] = true
		if u, err := url.Parse(a.CallbackBase); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
			return fmt.Errorf("web_login.apps[%d].callback_base: %q, want an http(s) URL without query", i, a.CallbackBase)
		}
		if len(a.ReturnTo) == 0 {
			return fmt.Errorf("web_login.apps[%d].return_to: empty, want at least one allowed URL prefix", i)
		}
		for j, r := range a.ReturnTo {
			if u, err := url.Parse(r); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
				return fmt.Errorf("web_login.apps[%d].return_to[%d]: %q, want an http(s) origin and path prefix", i, j, r)
			}
		}
	}
	return nil
}
