package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/wxhub/wxhub/gateway/internal/clientlimit"
)

// Gateway is the WeChat-compatible front. Make one with New, then either
// Start and Run it (its own listener) or mount Handler elsewhere and call
// Follow to keep its handles current.
type Gateway struct {
	cfg     Config
	base    *url.URL
	log     *slog.Logger
	apps    map[string]App
	clients []*client
	handles *handleTable
	relay   http.Handler
	paths   pathLabels
	anon    *clientlimit.Table  // calls without a client, per address (AnonymousRate)
	trusted clientlimit.Proxies // whose X-Forwarded-For names the address
	// warnedXFF: an ignored X-Forwarded-For was logged.
	warnedXFF atomic.Bool
	bodies    *semaphore.Weighted // MaxBufferedBytes: request bodies held
	held      atomic.Int64        // bytes taken from bodies (tests read it)
	handler   http.Handler

	ln       net.Listener
	srv      *http.Server
	started  atomic.Bool
	stopping atomic.Bool
}

// New checks cfg and returns a Gateway; nothing is served until Run.
func New(cfg Config) (*Gateway, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base, _ := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	g := &Gateway{
		cfg: cfg, base: base, log: cfg.Logger,
		apps: map[string]App{}, handles: newHandleTable(),
		anon:    clientlimit.New(cfg.AnonymousRate, cfg.AnonymousBurst, cfg.MaxAnonymousClients),
		trusted: clientlimit.Trust(cfg.TrustedProxies),
		bodies:  semaphore.NewWeighted(cfg.MaxBufferedBytes),
	}
	for _, a := range cfg.Apps {
		g.apps[a.AppID] = a
	}
	for _, c := range cfg.Clients {
		g.clients = append(g.clients, newClient(c))
	}
	g.relay = g.newRelay()
	mux := http.NewServeMux()
	mux.HandleFunc("/cgi-bin/token", g.serveToken)
	mux.HandleFunc("/cgi-bin/stable_token", g.serveStableToken)
	mux.HandleFunc("/sns/oauth2/access_token", g.serveOAuthExchange)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", g.serveReadyz)
	mux.HandleFunc("/", g.serveRelay)
	for pattern, h := range cfg.Mount {
		mux.Handle(pattern, h)
	}
	g.handler = g.front(mux)
	return g, nil
}

// front is what every request meets first. It refuses, before any
// routing, a request whose path is not plain (see notPlain) with 48001:
// the relay forwards the path as the client escaped it, while the
// client's path list is checked on the decoded path, and a front that
// decodes %2F and resolves "..", as WeChat's may, would serve another
// path than the one allowed. WeChat's API paths never need any of it.
// So is a query that the gateway and WeChat could read differently
// (queryNotPlain): a ';', an escaped parameter name, or a parameter the
// gateway reads given more than once.
// It bounds the time to receive a request's body (bodyDeadline).
func (g *Gateway) front(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if why := notPlain(r.URL); why != "" {
			start := time.Now()
			g.writeError(w, errUnauthorized, "path not plain: "+why)
			g.record(clientUnknown, r, errUnauthorized, start, 1)
			return
		}
		if why := queryNotPlain(r.URL.RawQuery); why != "" {
			start := time.Now()
			g.writeError(w, errUnauthorized, "query not plain: "+why)
			g.record(clientUnknown, r, errUnauthorized, start, 1)
			return
		}
		if r.ContentLength != 0 { // a body, announced or chunked
			g.bodyDeadline(w)
		}
		next.ServeHTTP(w, r)
	})
}

// notPlain says why u's path is not plain, or "" when it is: plain is
// "/" then segments of characters that need no escape beyond the default
// one (RawPath empty), with no backslash, no empty segment (a trailing
// "/" is fine) and no "." or ".." segment.
func notPlain(u *url.URL) string {
	p := u.Path
	switch {
	case u.RawPath != "":
		return "escaped characters such as %2F; send the path unescaped"
	case !strings.HasPrefix(p, "/"):
		return "it must start with /"
	case strings.Contains(p, `\`):
		return "a backslash"
	}
	// Segment by segment without a slice of them: this runs on every
	// request.
	for rest, more := p[1:], true; more; {
		var s string
		s, rest, more = strings.Cut(rest, "/")
		switch {
		case s == "" && more:
			return "an empty segment (//)"
		case s == "." || s == "..":
			return "a . or .. segment"
		}
	}
	return ""
}

// Handler is the gateway's HTTP front: WeChat's paths, /healthz, /readyz
// and the mounted handlers.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Addr is the address Start bound ("" before).
func (g *Gateway) Addr() string {
	if g.ln == nil {
		return ""
	}
	return g.ln.Addr().String()
}

// URL is the base URL to give SDKs (after Start).
func (g *Gateway) URL() string {
	scheme := "http"
	if g.cfg.TLSCert != "" {
		scheme = "https"
	}
	return scheme + "://" + g.Addr()
}

// DrainTimeout is how long Run lets the requests in flight finish once
// its context ends (Config.DrainTimeout, by default DrainFor(TokenWait,
// CallTimeout, MountWait)).
func (g *Gateway) DrainTimeout() time.Duration { return g.cfg.DrainTimeout }

// MaxBufferedBytes returns the budget of request bodies held in memory at
// once (Config.MaxBufferedBytes, its default applied).
func (g *Gateway) MaxBufferedBytes() int64 { return g.cfg.MaxBufferedBytes }

// AnswerTimeout returns the bound on writing a relayed answer
// (Config.AnswerTimeout, its default applied).
func (g *Gateway) AnswerTimeout() time.Duration { return g.cfg.AnswerTimeout }

// Start binds the listener (and loads the TLS certificate), so that a bad
// address or certificate fails before anything runs. The certificate is
// read again once its files change (certFiles).
func (g *Gateway) Start(context.Context) error {
	if g.ln != nil {
		return errors.New("gateway: Start called twice")
	}
	ln, err := net.Listen("tcp", g.cfg.Listen)
	if err != nil {
		return fmt.Errorf("gateway: listen %s: %w", g.cfg.Listen, err)
	}
	if g.cfg.TLSCert != "" {
		certs, err := loadCertFiles(g.cfg.TLSCert, g.cfg.TLSKey, g.log)
		if err != nil {
			ln.Close()
			return err
		}
		ln = tls.NewListener(ln, &tls.Config{GetCertificate: certs.get, MinVersion: tls.VersionTLS12})
	}
	g.ln = ln
	return nil
}

// Follow keeps the handle table current for every app until ctx ends. Run
// calls it; call it yourself only when serving Handler without Run.
func (g *Gateway) Follow(ctx context.Context) {
	var wg sync.WaitGroup
	for id := range g.apps {
		wg.Add(1)
		go func() { defer wg.Done(); g.follow(ctx, id) }()
	}
	wg.Wait()
}

// Run serves until ctx ends, then stops accepting calls and lets the ones
// in flight finish (up to DrainTimeout) before returning nil. Start must
// have been called (Run calls it if not).
func (g *Gateway) Run(ctx context.Context) error {
	if !g.started.CompareAndSwap(false, true) {
		return errors.New("gateway: Run called twice")
	}
	if g.ln == nil {
		if err := g.Start(ctx); err != nil {
			return err
		}
	}
	if ctx.Err() != nil { // the runner releases what Start took
		g.ln.Close()
		return nil
	}
	fctx, stopFollow := context.WithCancel(context.Background())
	followed := make(chan struct{})
	go func() { defer close(followed); g.Follow(fctx) }()
	defer func() { stopFollow(); <-followed }()

	g.srv = &http.Server{
		Handler:           g.handler,
		ReadHeaderTimeout: HeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- g.srv.Serve(g.ln) }()
	g.log.Info("gateway serving", "url", g.URL(), "apps", len(g.apps), "clients", len(g.clients), "wechat", g.base.Host)
	select {
	case err := <-served:
		return fmt.Errorf("gateway: %w", err)
	case <-ctx.Done():
	}
	g.stopping.Store(true)
	g.log.Info("gateway draining in-flight calls")
	sctx, cancel := context.WithTimeout(context.Background(), g.cfg.DrainTimeout)
	defer cancel()
	err := g.srv.Shutdown(sctx)
	<-served
	if err != nil {
		return fmt.Errorf("gateway: drain: %w", err)
	}
	g.log.Info("gateway stopped")
	return nil
}

// Ready returns nil when the gateway holds an unexpired token for every
// configured app, else which it lacks.
func (g *Gateway) Ready() error {
	if g.stopping.Load() {
		return errors.New("stopping")
	}
	now := g.cfg.Now()
	var missing []string
	for _, a := range g.cfg.Apps {
		if rec, ok := g.cfg.Tokens.Current(a.AppID); !ok || !rec.Fresh(now, 0) {
			missing = append(missing, a.AppID)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("no unexpired token for %s", strings.Join(missing, ", "))
	}
	return nil
}

func (g *Gateway) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	if err := g.Ready(); err != nil {
		http.Error(w, "gateway: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "gateway: ok")
}
