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

func TestWebLoginFromFileEnvAndFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "wxhub.yaml")
	os.WriteFile(file, []byte(`
web_login:
  wait: 3s
  apps:
    - appid: wxfile
      callback_base: https://login.example.com
      return_to: [https://shop.example.com/account/]
`), 0o600)
	load := func(args []string, e map[string]string) *Config {
		t.Helper()
		c, err := Load(flag.NewFlagSet("t", flag.ContinueOnError), FlagsServer|FlagsWebLogin, append([]string{"--config", file}, args...), env(e))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(false); err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := load(nil, nil)
	want := []WebLoginApp{{AppID: "wxfile", CallbackBase: "https://login.example.com", ReturnTo: []string{"https://shop.example.com/account/"}}}
	if !reflect.DeepEqual(c.WebLogin.Apps, want) || c.WebLogin.Wait != 3*time.Second || c.WebLogin.AuthorizeBase != "https://open.weixin.qq.com" {
		t.Fatalf("from the file: %+v", c.WebLogin)
	}
	c = load([]string{"--web-login", "appid=wxflag,callback_base=http://127.0.0.1:8092,return_to=http://127.0.0.1:8092/demo/|http://localhost:8092/demo/,website=true"},
		map[string]string{"WXHUB_OAUTH_AUTHORIZE_BASE": "http://127.0.0.1:8091", "WXHUB_OAUTH_WAIT": "2s"})
	want = []WebLoginApp{{AppID: "wxflag", Website: true, CallbackBase: "http://127.0.0.1:8092", ReturnTo: []string{"http://127.0.0.1:8092/demo/", "http://localhost:8092/demo/"}}}
	if !reflect.DeepEqual(c.WebLogin.Apps, want) || c.WebLogin.Wait != 2*time.Second || c.WebLogin.AuthorizeBase != "http://127.0.0.1:8091" {
		t.Fatalf("from flags and env: %+v", c.WebLogin)
	}
	c = load(nil, map[string]string{"WXHUB_WEB_LOGIN": "appid=wxa,callback_base=https://a.example.com,return_to=https://a.example.com/;appid=wxb,callback_base=https://b.example.com,return_to=https://b.example.com/x"})
	if len(c.WebLogin.Apps) != 2 || c.WebLogin.Apps[1].AppID != "wxb" {
		t.Fatalf("from WXHUB_WEB_LOGIN: %+v", c.WebLogin.Apps)
	}
}

func TestWebLoginValidateNamesTheField(t *testing.T) {
	ok := WebLoginApp{AppID: "wxa", CallbackBase: "https://login.example.com", ReturnTo: []string{"https://shop.example.com/"}}
	cases := []struct {
		name string
		edit func(*WebLogin)
		want string
	}{
		{"bad authorize base", func(w *WebLogin) { w.AuthorizeBase = "open.weixin.qq.com" }, "web_login.authorize_base"},
		{"wait too short", func(w *WebLogin) { w.Wait = time.Millisecond }, "web_login.wait"},
		{"no authorize rate", func(w *WebLogin) { w.AuthorizeRate = 0 }, "web_login.authorize_rate"},
		{"no authorize burst", func(w *WebLogin) { w.AuthorizeBurst = 0 }, "web_login.authorize_rate"},
		{"no client rate", func(w *WebLogin) { w.ClientRate = 0 }, "web_login.client_rate"},
		{"no client burst", func(w *WebLogin) { w.ClientBurst = 0 }, "web_login.client_rate"},
		{"no clients remembered", func(w *WebLogin) { w.MaxClients = 0 }, "web_login.max_clients"},
		{"too many clients remembered", func(w *WebLogin) { w.MaxClients = MaxWebLoginClients + 1 }, "web_login.max_clients"},
		{"bad trusted proxy", func(w *WebLogin) { w.TrustedProxies = []string{"10.0.0.0/8", "proxy.example.com"} }, "web_login.trusted_proxies[1]"},
		{"trusted proxy with a zone", func(w *WebLogin) { w.TrustedProxies = []string{"fe80::1%eth0"} }, "web_login.trusted_proxies[0]"},
		{"bad appid", func(w *WebLogin) { w.Apps[0].AppID = "a b" }, "web_login.apps[0].appid"},
		{"twice", func(w *WebLogin) { w.Apps = append(w.Apps, ok) }, "appears twice"},
		{"no callback base", func(w *WebLogin) { w.Apps[0].CallbackBase = "" }, "web_login.apps[0].callback_base"},
		{"no return_to", func(w *WebLogin) { w.Apps[0].ReturnTo = nil }, "web_login.apps[0].return_to"},
		{"relative return_to", func(w *WebLogin) { w.Apps[0].ReturnTo = []string{"/shop/"} }, "web_login.apps[0].return_to[0]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := DefaultWebLogin()
			w.Apps = []WebLoginApp{ok}
			c.edit(&w)
			if err := w.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate: %v, want it to name %s", err, c.want)
			}
		})
	}
	if _, err := ParseWebLoginApp("appid=wxa,colour=blue"); err == nil || !strings.Contains(err.Error(), "unknown key") {
		t.Fatalf("unknown key: %v", err)
	}
}

func TestWebLoginFlagErrorNamesTheFlag(t *testing.T) {
	_, err := Load(flag.NewFlagSet("t", flag.ContinueOnError), FlagsWebLogin, []string{"--web-login", "appid=wxa,colour=blue"}, env(nil))
	if err == nil || !strings.Contains(err.Error(), "--web-login") || !strings.Contains(err.Error(), `unknown key "colour"`) {
		t.Fatalf("Load: %v", err)
	}
}

// The per-client limit and the trusted proxies: defaults (none trusted),
// the file, WXHUB_* and the flags, which replace the file's list.
func TestWebLoginClientLimitsAndTrustedProxies(t *testing.T) {
	file := filepath.Join(t.TempDir(), "wxhub.yaml")
	os.WriteFile(file, []byte(`
web_login:
  client_rate: 2
  client_burst: 8
  max_clients: 500
  trusted_proxies: [127.0.0.1, "10.0.0.0/8"]
`), 0o600)
	load := func(args []string, e map[string]string) WebLogin {
		t.Helper()
		c, err := Load(flag.NewFlagSet("t", flag.ContinueOnError), FlagsServer|FlagsWebLogin, args, env(e))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(false); err != nil {
			t.Fatal(err)
		}
		return c.WebLogin
	}
	w := load(nil, nil)
	if w.ClientRate != 5 || w.ClientBurst != 20 || w.MaxClients != 10000 || len(w.TrustedProxies) != 0 || w.TrustedProxyPrefixes() != nil {
		t.Fatalf("defaults: %+v", w)
	}
	w = load([]string{"--config", file}, nil)
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}
	if w.ClientRate != 2 || w.ClientBurst != 8 || w.MaxClients != 500 || !reflect.DeepEqual(w.TrustedProxyPrefixes(), want) {
		t.Fatalf("from the file: %+v, proxies %v", w, w.TrustedProxyPrefixes())
	}
	w = load([]string{"--config", file, "--oauth-client-rate", "1", "--oauth-trusted-proxies", "192.0.2.1, 2001:db8::/32", "--oauth-trusted-proxies", "::1"},
		map[string]string{"WXHUB_OAUTH_CLIENT_BURST": "3", "WXHUB_OAUTH_MAX_CLIENTS": "7"})
	want = []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("::1/128")}
	if w.ClientRate != 1 || w.ClientBurst != 3 || w.MaxClients != 7 || !reflect.DeepEqual(w.TrustedProxyPrefixes(), want) {
		t.Fatalf("from flags and env: %+v, proxies %v", w, w.TrustedProxyPrefixes())
	}
	w = load(nil, map[string]string{"WXHUB_OAUTH_TRUSTED_PROXIES": "172.16.0.0/12"})
	if !reflect.DeepEqual(w.TrustedProxyPrefixes(), []netip.Prefix{netip.MustParsePrefix("172.16.0.0/12")}) {
		t.Fatalf("from WXHUB_OAUTH_TRUSTED_PROXIES: %v", w.TrustedProxies)
	}
}
