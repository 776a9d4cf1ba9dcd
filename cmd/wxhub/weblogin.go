package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/gateway/weblogin"
	"github.com/wxhub/wxhub/gateway/weblogin/demo"
	"github.com/wxhub/wxhub/internal/config"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// demoPagePath is where `wxhub run` serves the demo business page.
const demoPagePath = "/demo/"

// webLogin mounts the web login (/oauth/authorize, /oauth/callback) on
// the gateway's front. With demoApp set (the zero-config `wxhub run`) it
// also mounts the demo business page at /demo/ and configures demoApp's
// web login to call back to the gateway's own address once it is bound
// (port 0 included): its handler is installed by started.
type webLogin struct {
	demoApp string

	p       *process
	states  *weblogin.StateStore
	jobs    *weblogin.NATSJobs
	handler atomic.Pointer[http.Handler]
}

// mount is the gateway's mounter.
func (wl *webLogin) mount(p *process) (map[string]http.Handler, error) {
	if wl.demoApp == "" && len(p.cfg.WebLogin.Apps) == 0 {
		return nil, nil
	}
	wl.p = p
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := p.js.KeyValue(ctx, events.BucketLoginState)
	if err != nil {
		return nil, fmt.Errorf("web login: bucket %s: %w", events.BucketLoginState, err)
	}
	wl.states = weblogin.NewStateStore(kv, 0, nil)
	if wl.jobs, err = weblogin.NewNATSJobs(p.nc, p.cfg.Prefix); err != nil {
		return nil, err
	}
	m := map[string]http.Handler{"/oauth/": http.HandlerFunc(wl.serve)}
	if wl.demoApp != "" {
		page, err := demo.New(p.nc, demo.Config{AppID: wl.demoApp, Prefix: p.cfg.Prefix})
		if err != nil {
			return nil, err
		}
		m[demoPagePath] = page
		return m, nil // the handler comes once the front's address is known
	}
	if err := wl.install(); err != nil {
		return nil, usageError{err}
	}
	return m, nil
}

// started completes the demo's configuration with the bound address.
func (wl *webLogin) started(gw *gateway.Gateway) error {
	if wl.p == nil || wl.demoApp == "" {
		return nil
	}
	base := gw.URL()
	returnTo := []string{base + demoPagePath}
	if u, err := url.Parse(base); err == nil && u.Hostname() == "127.0.0.1" {
		returnTo = append(returnTo, u.Scheme+"://localhost:"+u.Port()+demoPagePath)
	}
	wl.p.cfg.WebLogin.Apps = []config.WebLoginApp{{AppID: wl.demoApp, CallbackBase: base, ReturnTo: returnTo}}
	return wl.install()
}

// install builds the handler from the configuration.
func (wl *webLogin) install() error {
	c := wl.p.cfg.WebLogin
	apps := make([]weblogin.App, len(c.Apps))
	for i, a := range c.Apps {
		apps[i] = weblogin.App{AppID: a.AppID, Website: a.Website, CallbackBase: a.CallbackBase, ReturnTo: a.ReturnTo}
	}
	h, err := weblogin.New(weblogin.Config{
		Apps: apps, AuthorizeBase: c.AuthorizeBase, Wait: c.Wait,
		AuthorizeRate: c.AuthorizeRate, AuthorizeBurst: c.AuthorizeBurst,
		ClientRate: c.ClientRate, ClientBurst: c.ClientBurst, MaxClients: c.MaxClients, TrustedProxies: c.TrustedProxyPrefixes(),
		States: wl.states, Jobs: wl.jobs, Logger: wl.p.roleLogger("weblogin"),
	})
	if err != nil {
		return err
	}
	var hh http.Handler = h
	wl.handler.Store(&hh)
	return nil
}

func (wl *webLogin) serve(w http.ResponseWriter, r *http.Request) {
	h := wl.handler.Load()
	if h == nil {
		http.Error(w, "web login is starting", http.StatusServiceUnavailable)
		return
	}
	(*h).ServeHTTP(w, r)
}

// on reports whether the web login is mounted and configured.
func (wl *webLogin) on() bool { return wl.handler.Load() != nil }

// printWebLoginTry prints the URL a person opens to walk the web login.
func printWebLoginTry(env *cmdEnv, gw *gateway.Gateway, wl *webLogin, demo bool, d wechatsim.DemoApp) {
	if gw == nil || !wl.on() {
		return
	}
	w := env.stdout
	if demo && len(d.OpenIDs) > 0 {
		fmt.Fprintf(w, "\nWeb login: open %s%s in a browser and log in with (simulated) WeChat;\n", gw.URL(), demoPagePath)
		fmt.Fprintf(w, "  the page ends showing the profile it received on user.profile (simulated user: %s).\n", d.OpenIDs[0])
		return
	}
	fmt.Fprintf(w, "\nWeb login: business pages link to %s/oauth/authorize?appid=...&scope=...&return_to=...&state=...\n", gw.URL())
}
