package weblogin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/gateway/internal/clientlimit"
	"github.com/wxhub/wxhub/wechat"
)

// Paths the Handler serves.
const (
	PathAuthorize = "/oauth/authorize"
	PathCallback  = "/oauth/callback"
)

// DefaultAuthorizeBase is WeChat's authorize host.
const DefaultAuthorizeBase = "https://open.weixin.qq.com"

// DefaultWait bounds how long the callback waits for the job's result
// before it sends the browser on with error=timeout.
const DefaultWait = 5 * time.Second

// DefaultAuthorizeRate and DefaultAuthorizeBurst bound the logins
// started (/oauth/authorize calls that store a state), all browsers
// together: at most rate × the state TTL states (30,000 in 10 minutes)
// can be in the bucket, however fast anybody asks.
const (
	DefaultAuthorizeRate  = 50.0
	DefaultAuthorizeBurst = 100
)

// OAuth scopes.
const (
	ScopeBase     = "snsapi_base"
	ScopeUserInfo = "snsapi_userinfo"
	ScopeLogin    = "snsapi_login" // website apps (/connect/qrconnect)
)

// Errors a business finds in the error parameter of return_to besides the
// job's failure kinds (events.Kind*).
const (
	ErrorAccessDenied = "access_denied"           // the user refused consent
	ErrorTimeout      = "timeout"                 // no result within the wait; wxhub_job still names the job
	ErrorUnavailable  = "temporarily_unavailable" // the job surely was not published (no wxhub_job)
)

// maxBusinessState bounds the business's state parameter.
const maxBusinessState = 512

// App is one app's web-login settings.
type App struct {
	AppID string
	// Website marks an Open Platform website app: /connect/qrconnect with
	// snsapi_login instead of /connect/oauth2/authorize.
	Website bool
	// CallbackBase is the public base URL WeChat sends the browser back to
	// (its host is the app's registered OAuth domain); the redirect_uri is
	// CallbackBase + /oauth/callback.
	CallbackBase string
	// ReturnTo is the allow-list: URLs whose origin must match exactly and
	// whose path is a prefix of return_to's.
	ReturnTo []string
}

// DefaultClientRate and DefaultClientBurst bound the logins started by
// one client (one IPv4 address, one IPv6 /64), besides the limit of all
// browsers together: one client alone cannot take the whole
// AuthorizeRate from everybody else (at the defaults it takes a tenth).
// DefaultMaxClients bounds the clients remembered.
const (
	DefaultClientRate  = 5.0
	DefaultClientBurst = 20
	DefaultMaxClients  = clientlimit.DefaultMaxClients
)

// Config configures a Handler. Apps, States and Jobs are required.
type Config struct {
	Apps []App
	// AuthorizeBase replaces https://open.weixin.qq.com (the simulator's
	// URL in tests and the demo).
	AuthorizeBase string
	States        *StateStore
	Jobs          JobRunner
	// Wait bounds the callback's wait for the result; 0 means DefaultWait.
	Wait time.Duration
	// AuthorizeRate limits the logins started per second, all browsers
	// together, with AuthorizeBurst; 0 means DefaultAuthorizeRate and
	// DefaultAuthorizeBurst. Over it /oauth/authorize answers 429 and
	// stores nothing.
	AuthorizeRate  float64
	AuthorizeBurst int
	// ClientRate and ClientBurst limit the logins started per second by
	// one client (an IPv4 address, an IPv6 /64), checked before
	// AuthorizeRate, whose budget a refused client does not spend; 0
	// means DefaultClientRate and DefaultClientBurst. Over it the same
	// 429. MaxClients bounds the clients remembered (0:
	// DefaultMaxClients): a client idle until its burst is full again is
	// forgotten, and a full table forgets the one used least recently.
	ClientRate  float64
	ClientBurst int
	MaxClients  int
	// TrustedProxies are the peers whose X-Forwarded-For names the
	// client (see clientlimit.Proxies.Addr); none by default: the client is the peer
	// (RemoteAddr), and X-Forwarded-For is ignored. Behind a proxy that
	// is not listed, every browser is that proxy's one client.
	TrustedProxies []netip.Prefix
	Logger         *slog.Logger
}

func (c *Config) setDefaults() {
	if c.AuthorizeBase == "" {
		c.AuthorizeBase = DefaultAuthorizeBase
	}
	if c.Wait <= 0 {
		c.Wait = DefaultWait
	}
	if c.AuthorizeRate == 0 {
		c.AuthorizeRate = DefaultAuthorizeRate
	}
	if c.AuthorizeBurst == 0 {
		c.AuthorizeBurst = DefaultAuthorizeBurst
	}
	if c.ClientRate == 0 {
		c.ClientRate = DefaultClientRate
	}
	if c.ClientBurst == 0 {
		c.ClientBurst = DefaultClientBurst
	}
	if c.MaxClients == 0 {
		c.MaxClients = DefaultMaxClients
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports the first thing wrong with c (after the defaults).
func (c Config) Validate() error {
	if c.States == nil || c.Jobs == nil {
		return errors.New("weblogin: States and Jobs are required")
	}
	if _, err := url.Parse(c.AuthorizeBase); err != nil {
		return fmt.Errorf("weblogin: authorize base: %w", err)
	}
	if c.AuthorizeRate < 0 || c.AuthorizeBurst < 0 {
		return errors.New("weblogin: AuthorizeRate and AuthorizeBurst must not be negative")
	}
	if c.ClientRate < 0 || c.ClientBurst < 0 || c.MaxClients < 0 {
		return errors.New("weblogin: ClientRate, ClientBurst and MaxClients must not be negative")
	}
	for _, p := range c.TrustedProxies {
		if !p.IsValid() {
			return fmt.Errorf("weblogin: trusted proxy %v is not a valid prefix", p)
		}
	}
	return nil
}

type app struct {
	App
	redirectURI  string
	callbackPath string // the redirect_uri's path: the login cookie's path over http
	secure       bool   // the callback is https: Secure, __Host- cookie
	allowed      []allowed
}

// Handler serves GET /oauth/authorize and GET /oauth/callback.
type Handler struct {
	apps          map[string]*app
	authorizeBase string
	states        *StateStore
	jobs          JobRunner
	wait          time.Duration
	starts        *rate.Limiter      // logins started (AuthorizeRate)
	clients       *clientlimit.Table // logins started per client (ClientRate)
	trusted       clientlimit.Proxies
	warnedXFF     atomic.Bool // an ignored X-Forwarded-For was logged
	log           *slog.Logger
	mux           *http.ServeMux
}

// New checks cfg and returns the Handler.
func New(cfg Config) (*Handler, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Handler{
		apps: make(map[string]*app), authorizeBase: strings.TrimSuffix(cfg.AuthorizeBase, "/"),
		states: cfg.States, jobs: cfg.Jobs, wait: cfg.Wait, log: cfg.Logger,
		starts:  rate.NewLimiter(rate.Limit(cfg.AuthorizeRate), cfg.AuthorizeBurst),
		clients: clientlimit.New(cfg.ClientRate, cfg.ClientBurst, cfg.MaxClients),
		trusted: clientlimit.Trust(cfg.TrustedProxies),
	}
	for _, a := range cfg.Apps {
		if err := h.addApp(a); err != nil {
			return nil, err
		}
	}
	h.mux = http.NewServeMux()
	h.mux.HandleFunc("GET "+PathAuthorize, h.authorize)
	h.mux.HandleFunc("GET "+PathCallback, h.callback)
	return h, nil
}

func (h *Handler) addApp(a App) error {
	if a.AppID == "" {
		return errors.New("weblogin: an app has no appid")
	}
	if _, dup := h.apps[a.AppID]; dup {
		return fmt.Errorf("weblogin: app %s configured twice", a.AppID)
	}
	cb, err := url.Parse(a.CallbackBase)
	if err != nil || checkURL(cb) != nil || cb.RawQuery != "" || cb.Fragment != "" {
		return fmt.Errorf("weblogin: app %s: callback base %q must be an absolute http(s) URL without query", a.AppID, a.CallbackBase)
	}
	if len(a.ReturnTo) == 0 {
		return fmt.Errorf("weblogin: app %s: the return_to allow-list is empty", a.AppID)
	}
	x := &app{App: a, redirectURI: strings.TrimSuffix(a.CallbackBase, "/") + PathCallback, secure: cb.Scheme == "https"}
	x.callbackPath = strings.TrimSuffix(cb.EscapedPath(), "/") + PathCallback
	for _, s := range a.ReturnTo {
		al, err := parseAllowed(s)
		if err != nil {
			return fmt.Errorf("weblogin: app %s: %w", a.AppID, err)
		}
		x.allowed = append(x.allowed, al)
	}
	h.apps[a.AppID] = x
	return nil
}

// ServeHTTP serves the two paths; anything else is 404, a wrong method 405.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	h.mux.ServeHTTP(w, r)
}

// authorize serves GET /oauth/authorize.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	appid := q.Get("appid")
	a := h.apps[appid]
	if a == nil {
		if appid == "" {
			badRequest(w, "appid is required")
		} else {
			badRequest(w, fmt.Sprintf("unknown app %q: it is not configured for web login", appid))
		}
		return
	}
	scope := q.Get("scope")
	switch {
	case a.Website && scope == "":
		scope = ScopeLogin
	case a.Website && scope != ScopeLogin:
		badRequest(w, fmt.Sprintf("bad scope %q: website app %s takes %s", scope, appid, ScopeLogin))
		return
	case !a.Website && scope != ScopeBase && scope != ScopeUserInfo:
		badRequest(w, fmt.Sprintf("bad scope %q: use %s or %s", scope, ScopeBase, ScopeUserInfo))
		return
	}
	rt, err := checkReturnTo(q.Get("return_to"), a.allowed)
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	bstate := q.Get("state")
	if len(bstate) > maxBusinessState {
		badRequest(w, fmt.Sprintf("state is longer than %d bytes", maxBusinessState))
		return
	}
	// Checked last, so that bad links still say what is wrong; what is
	// limited is what costs: a stored state. The client's own budget
	// first: a client over it spends nothing of everybody's.
	client := h.client(r)
	if !h.clients.Allow(client, time.Now()) {
		h.log.Debug("weblogin: over the rate of logins started by one client", "appid", appid, "client", client)
		tooManyLogins(w)
		return
	}
	if !h.starts.Allow() {
		h.log.Debug("weblogin: over the rate of logins started", "appid", appid)
		tooManyLogins(w)
		return
	}
	secret, jobID := newBrowserSecret(), newJobID()
	nonce, err := h.states.Put(r.Context(), State{AppID: appid, Scope: scope, ReturnTo: rt.String(), State: bstate, Browser: hashSecret(secret), JobID: jobID})
	if err != nil {
		h.log.Error("weblogin: cannot store a login state", "appid", appid, "err", err)
		plainError(w, http.StatusServiceUnavailable, "web login is unavailable right now; try again")
		return
	}
	http.SetCookie(w, h.loginCookie(a, nonce, secret, int(h.states.TTL().Seconds())))
	http.Redirect(w, r, h.authorizeURL(a, scope, nonce), http.StatusFound)
}

// tooManyLogins is the answer over either limit of logins started.
func tooManyLogins(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	plainError(w, http.StatusTooManyRequests, "too many logins are being started right now; try again in a moment")
}

// client is the budget r's login counts against (clientlimit's Addr and
// Key).
// An X-Forwarded-For from a peer that is not a trusted proxy is ignored,
// and said once in the log: behind a proxy not listed in TrustedProxies
// every browser shares the proxy's budget.
func (h *Handler) client(r *http.Request) netip.Prefix {
	a, ignored := h.trusted.Addr(r)
	if ignored && h.warnedXFF.CompareAndSwap(false, true) {
		h.log.Warn("weblogin: X-Forwarded-For from a peer that is not a trusted proxy is ignored: every browser behind it counts as one client against the per-client limit of logins started (set the web login's trusted proxies)", "peer", a)
	}
	return clientlimit.Key(a)
}

// authorizeURL builds WeChat's URL with its parameters in WeChat's order
// and the #wechat_redirect fragment.
func (h *Handler) authorizeURL(a *app, scope, nonce string) string {
	path := "/connect/oauth2/authorize"
	if a.Website {
		path = "/connect/qrconnect"
	}
	return h.authorizeBase + path +
		"?appid=" + url.QueryEscape(a.AppID) +
		"&redirect_uri=" + url.QueryEscape(a.redirectURI) +
		"&response_type=code" +
		"&scope=" + scope +
		"&state=" + nonce +
		"#wechat_redirect"
}

// newJobID is a login's oauth.code.received job_id: "weblogin-" and 32
// hex digits from crypto/rand, chosen at /oauth/authorize and kept in the
// State, so nobody can compute it from the nonce WeChat carries.
func newJobID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return "weblogin-" + hex.EncodeToString(b[:])
}

// newBrowserSecret is the login cookie's value: 32 bytes from crypto/rand.
func newBrowserSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// hashSecret is what the State keeps of the cookie's secret.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// LoginCookiePrefix starts the name of the cookie that binds a login to
// the browser that started it; over https the name has the __Host-
// prefix in front.
const LoginCookiePrefix = "wxhub_login_"

// loginCookieName is the login cookie's name for nonce: one cookie per
// login (a user may start two logins in two tabs), named by a digest of
// the nonce rather than the nonce itself.
func loginCookieName(a *app, nonce string) string {
	sum := sha256.Sum256([]byte("wxhub-weblogin-cookie:" + nonce))
	name := LoginCookiePrefix + hex.EncodeToString(sum[:8])
	if a.secure {
		name = "__Host-" + name
	}
	return name
}

// loginCookie is the cookie that binds the login under nonce to this
// browser (maxAge < 0 clears it). HttpOnly; SameSite=Lax, which a
// top-level GET from WeChat to the callback carries. Over https:
// Secure and the __Host- prefix, which requires Path=/ (so no sibling
// subdomain can plant one); over http (the local demo): no Secure, Path
// the callback's path.
func (h *Handler) loginCookie(a *app, nonce, secret string, maxAge int) *http.Cookie {
	c := &http.Cookie{
		Name: loginCookieName(a, nonce), Value: secret, Path: a.callbackPath,
		MaxAge: maxAge, HttpOnly: true, SameSite: http.SameSiteLaxMode,
	}
	if a.secure {
		c.Secure, c.Path = true, "/"
	}
	return c
}

// errOtherBrowser: the callback came without the login cookie of the
// browser that started the login (or with another value).
var errOtherBrowser = errors.New("weblogin: the login was started in another browser")

// CorrelationID is the Wx-Correlation-Id of the job of a login whose
// business state is state: the hex SHA-256 of state ("" when the business
// gave none; the job's id is used then). The result carries it back, so a
// business checks that the result it is about to trust has
// CorrelationID(the state in this user's session): a wxhub_job taken from
// someone else's finished login does not. The state itself never enters
// NATS.
func CorrelationID(state string) string {
	if state == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(state))
	return hex.EncodeToString(sum[:])
}

// callback serves GET /oauth/callback.
func (h *Handler) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	nonce := q.Get("state")
	if nonce == "" {
		badRequest(w, "state is missing: this page is only reached from WeChat's authorize page")
		return
	}
	var a *app
	st, err := h.states.TakeIf(r.Context(), nonce, func(st State) error {
		if a = h.apps[st.AppID]; a == nil {
			return fmt.Errorf("weblogin: app %s is no longer configured", st.AppID)
		}
		c, err := r.Cookie(loginCookieName(a, nonce))
		if err != nil || st.Browser == "" || subtle.ConstantTimeCompare([]byte(hashSecret(c.Value)), []byte(st.Browser)) != 1 {
			return errOtherBrowser
		}
		return nil
	})
	switch {
	case errors.Is(err, errOtherBrowser):
		// Not consumed: the browser that started the login can still
		// finish it, and this request's code is never exchanged.
		h.log.Info("weblogin: callback from a browser that did not start the login", "appid", a.AppID)
		plainError(w, http.StatusForbidden, "this login was not started in this browser (or its login cookie is gone): start the login again from this page")
		return
	case errors.Is(err, ErrBadNonce), errors.Is(err, ErrStateUnknown):
		h.log.Info("weblogin: callback with an unknown or used state", "err", err)
		badRequest(w, "this login link is unknown, expired or already used: start the login again")
		return
	case errors.Is(err, ErrStateExpired):
		badRequest(w, "this login took longer than "+h.states.TTL().String()+": start the login again")
		return
	case err != nil:
		h.log.Error("weblogin: cannot read a login state", "err", err)
		plainError(w, http.StatusServiceUnavailable, "web login is unavailable right now; try again")
		return
	}
	code := q.Get("code")
	if code == "" { // WeChat's answer when the user refused consent
		http.SetCookie(w, h.loginCookie(a, nonce, "", -1)) // used: cleared
		h.finish(w, r, st, "", ErrorAccessDenied)
		return
	}
	jobID := st.JobID
	job := events.OAuthCodeReceived{JobID: jobID, AppID: st.AppID, Code: code, State: nonce}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), h.wait)
	defer cancel()
	o, err := h.jobs.RunOAuthJob(ctx, job, CorrelationID(st.State))
	// The job id is a reference to the user's profile: logs get a
	// fingerprint of it only.
	fp := wechat.Fingerprint(jobID)
	if errors.Is(err, ErrNotPublished) && h.keepForReload(r, nonce, st, fp, err) {
		// Nothing was done with the code: the same browser reloads
		// this URL (its cookie kept) and the login goes on.
		w.Header().Set("Retry-After", "5")
		plainErrorWithLink(w, http.StatusServiceUnavailable,
			"Your login could not be passed on just now, and nothing was done with it. Reload this page in a moment to finish logging in.",
			h.finishURL(st, "", ErrorUnavailable), "Back to the site")
		return
	}
	http.SetCookie(w, h.loginCookie(a, nonce, "", -1)) // used: cleared
	switch {
	case errors.Is(err, ErrNotPublished): // surely not published, and the state could not be put back
		h.finish(w, r, st, "", ErrorUnavailable)
	case errors.Is(err, ErrNotAcknowledged): // may be buffered or in flight: the job may run
		h.log.Warn("weblogin: the code job's publish was not acknowledged within the wait; it may still run", "appid", st.AppID, "job_fp", fp, "wait", h.wait, "err", err)
		h.finish(w, r, st, jobID, ErrorTimeout)
	case errors.Is(err, context.DeadlineExceeded):
		h.log.Warn("weblogin: no result within the wait", "appid", st.AppID, "job_fp", fp, "wait", h.wait)
		h.finish(w, r, st, jobID, ErrorTimeout)
	case err != nil:
		h.log.Error("weblogin: cannot run the code job", "appid", st.AppID, "job_fp", fp, "err", err)
		h.finish(w, r, st, "", ErrorUnavailable)
	default:
		h.log.Info("weblogin: login done", "appid", st.AppID, "job_fp", fp, "failed", o.Kind)
		h.finish(w, r, st, jobID, o.Kind)
	}
}

// restoreTimeout bounds putting a state back (keepForReload), after the
// wait: within the gateway's drain margin.
const restoreTimeout = 2 * time.Second

// keepForReload puts the login's state back after a job that surely was
// not published (pubErr): the code was not exchanged, so the browser
// that reloads the callback (with its login cookie, which is kept) can
// still finish the login, within the state's TTL and WeChat's 5 minutes
// for the code. It reports whether the state is back; if not, the login
// ends as before (error=temporarily_unavailable).
func (h *Handler) keepForReload(r *http.Request, nonce string, st State, fp string, pubErr error) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), restoreTimeout)
	defer cancel()
	if err := h.states.Restore(ctx, nonce, st); err != nil {
		h.log.Error("weblogin: cannot publish the code job, nor keep the login for a reload", "appid", st.AppID, "job_fp", fp, "err", pubErr, "restore_err", err)
		return false
	}
	h.log.Warn("weblogin: cannot publish the code job; the login is kept for a reload of the callback", "appid", st.AppID, "job_fp", fp, "err", pubErr)
	return true
}

// finish sends the browser to return_to with wxhub_job, the business's
// state and error (each only when set).
func (h *Handler) finish(w http.ResponseWriter, r *http.Request, st State, jobID, errKind string) {
	u := h.finishURL(st, jobID, errKind)
	if u == "" { // stored by us after a check: cannot happen
		plainError(w, http.StatusInternalServerError, "bad stored return_to")
		return
	}
	http.Redirect(w, r, u, http.StatusFound)
}

// finishURL is return_to with wxhub_job, the business's state and error
// (each only when set); "" if the stored return_to does not parse.
func (h *Handler) finishURL(st State, jobID, errKind string) string {
	u, err := url.Parse(st.ReturnTo)
	if err != nil {
		return ""
	}
	var add []string
	for _, kv := range [][2]string{{"wxhub_job", jobID}, {"state", st.State}, {"error", errKind}} {
		if kv[1] != "" {
			add = append(add, kv[0]+"="+url.QueryEscape(kv[1]))
		}
	}
	u.RawQuery = strings.Join(append(withoutOurParams(u.RawQuery), add...), "&")
	u.ForceQuery = false
	return u.String()
}

// ourParams are the parameters finish sets on return_to.
var ourParams = map[string]bool{"wxhub_job": true, "state": true, "error": true}

// withoutOurParams splits return_to's raw query at '&' and drops the
// parameters named like ours, keeping every other one byte for byte, in
// its order (a flag without '=', ';' inside a pair, its own escaping).
// Within a pair, ';'-separated parts named like ours are dropped too, for
// servers that split at ';'.
func withoutOurParams(raw string) []string {
	if raw == "" {
		return nil
	}
	var keep []string
	for _, pair := range strings.Split(raw, "&") {
		parts := strings.Split(pair, ";")
		kept := parts[:0]
		for _, p := range parts {
			if !ourParams[paramName(p)] {
				kept = append(kept, p)
			}
		}
		if len(kept) == len(parts) {
			keep = append(keep, pair)
		} else if len(kept) > 0 {
			keep = append(keep, strings.Join(kept, ";"))
		}
	}
	return keep
}

// paramName is the unescaped name of one key=value pair.
func paramName(p string) string {
	k, _, _ := strings.Cut(p, "=")
	if u, err := url.QueryUnescape(k); err == nil {
		return u
	}
	return k
}

var errorPage = template.Must(template.New("error").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Login: {{.Status}}</title></head>
<body><h1>{{.Status}}</h1><p id="error">{{.Msg}}</p>{{if .Link}}
<p><a id="back" href="{{.Link}}">{{.LinkText}}</a></p>{{end}}</body></html>
`))

func badRequest(w http.ResponseWriter, msg string) { plainError(w, http.StatusBadRequest, msg) }

// plainError writes a small HTML page saying msg.
func plainError(w http.ResponseWriter, status int, msg string) {
	plainErrorWithLink(w, status, msg, "", "")
}

// plainErrorWithLink is plainError with a link (when link is set).
func plainErrorWithLink(w http.ResponseWriter, status int, msg, link, linkText string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// The page has no script, style or image and is never framed.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.WriteHeader(status)
	_ = errorPage.Execute(w, struct {
		Status, Msg    string
		Link, LinkText string
	}{fmt.Sprintf("%d %s", status, http.StatusText(status)), msg, link, linkText})
}
