package wechatsim

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Browser pages of open.weixin.qq.com the simulator serves.
const (
	PathConnectAuthorize = "/connect/oauth2/authorize"
	PathConnectQRConnect = "/connect/qrconnect"
	// PathConnectReply receives the consent page's form (allow or refuse).
	PathConnectReply = "/connect/oauth2/authorize_reply"
)

// ScopeLogin is the scope of website apps (/connect/qrconnect).
const ScopeLogin = "snsapi_login"

// Cookies that choose the logged-in user in one browser (they win over
// LogIn).
const (
	CookieOpenID      = "wxsim_openid"
	CookieSnapshot    = "wxsim_snapshot"     // "1": a snapshot-page visitor
	CookieFromAccount = "wxsim_from_account" // "1": opened from the account's menu or chat
)

const (
	websiteCodeLifetime = 10 * time.Minute
	ticketLifetime      = 10 * time.Minute
)

// LoggedInUser is who the simulated WeChat client is logged in as.
// Snapshot marks a visitor of a Moments snapshot page (朋友圈快照页): the
// app gets a virtual openid (VirtualOpenID) and is_snapshotuser=1.
// FromAccount says the user opened the link from the account's menu or
// chat: a subscribed follower is then not asked for snsapi_userinfo.
type LoggedInUser struct {
	OpenID      string `json:"openid"`
	Snapshot    bool   `json:"is_snapshotuser,omitempty"`
	FromAccount bool   `json:"from_account,omitempty"`
}

// connectState is the browser side: logged-in users and consent pages
// waiting for an answer.
type connectState struct {
	mu       sync.Mutex
	loggedIn map[string]LoggedInUser // by appid; "" for every app
	pending  map[string]*pendingAuth // by ticket
}

// pendingAuth is a consent page shown and not yet answered.
type pendingAuth struct {
	app         *app
	user        LoggedInUser
	scope       string
	redirectURI string
	state       string
	expires     time.Time
}

// oauthSettings are an app's web authorization settings.
type oauthSettings struct {
	domains []string // registered OAuth domains (hosts)
	website bool
}

// SetOAuthDomains registers the domains appid may redirect to after
// authorization (WeChat's "网页授权域名": a full host name such as
// login.example.com, or host:port). Unknown appids are ignored.
func (s *Sim) SetOAuthDomains(appid string, domains ...string) {
	if a := s.app(appid); a != nil {
		a.mu.Lock()
		a.oauth.domains = append([]string(nil), domains...)
		a.mu.Unlock()
	}
}

// SetWebsiteApp marks appid as an Open Platform website app: it logs in
// through /connect/qrconnect with snsapi_login, not /connect/oauth2/authorize.
func (s *Sim) SetWebsiteApp(appid string, website bool) {
	if a := s.app(appid); a != nil {
		a.mu.Lock()
		a.oauth.website = website
		a.mu.Unlock()
	}
}

// LogIn makes u the logged-in user for appid's authorize pages ("" for
// every app without its own). A browser's cookies override it.
func (s *Sim) LogIn(appid string, u LoggedInUser) error {
	if u.OpenID == "" {
		return fmt.Errorf("%w: openid is required", ErrBadInput)
	}
	if appid != "" && s.app(appid) == nil {
		return fmt.Errorf("%w %q", ErrUnknownApp, appid)
	}
	s.connect.mu.Lock()
	if s.connect.loggedIn == nil {
		s.connect.loggedIn = make(map[string]LoggedInUser)
	}
	s.connect.loggedIn[appid] = u
	s.connect.mu.Unlock()
	return nil
}

// LogOut forgets the logged-in user set with LogIn for appid.
func (s *Sim) LogOut(appid string) {
	s.connect.mu.Lock()
	delete(s.connect.loggedIn, appid)
	s.connect.mu.Unlock()
}

// VirtualOpenID is the openid appid sees for a snapshot-page visitor
// whose real openid is openid: stable, and never the real one.
func VirtualOpenID(appid, openid string) string {
	h := sha256.Sum256([]byte("snapshot:" + appid + ":" + openid))
	return "oVirt_" + base64.RawURLEncoding.EncodeToString(h[:16])
}

func (s *Sim) loggedInUser(r *http.Request, appid string) (LoggedInUser, bool) {
	if c, err := r.Cookie(CookieOpenID); err == nil && c.Value != "" {
		u := LoggedInUser{OpenID: c.Value}
		if sc, err := r.Cookie(CookieSnapshot); err == nil && sc.Value == "1" {
			u.Snapshot = true
		}
		if fc, err := r.Cookie(CookieFromAccount); err == nil && fc.Value == "1" {
			u.FromAccount = true
		}
		return u, true
	}
	s.connect.mu.Lock()
	defer s.connect.mu.Unlock()
	if u, ok := s.connect.loggedIn[appid]; ok {
		return u, true
	}
	u, ok := s.connect.loggedIn[""]
	return u, ok
}

// connectError is what WeChat's authorize page shows for bad parameters.
type connectError struct {
	code int
	msg  string
}

func (e *connectError) Error() string { return fmt.Sprintf("%d %s", e.code, e.msg) }

var validState = regexp.MustCompile(`^[a-zA-Z0-9]{0,128}$`)

// authorizeOrder is the parameter order WeChat checks.
var authorizeOrder = []string{"appid", "redirect_uri", "response_type", "scope", "state"}

// authRequest is a checked authorize request.
type authRequest struct {
	app         *app
	redirectURI string
	scope       string
	state       string
}

// checkAuthorize checks an authorize request the way WeChat does. The
// #wechat_redirect fragment never reaches a server, so it is not checked.
func (s *Sim) checkAuthorize(r *http.Request, qrconnect bool) (authRequest, *connectError) {
	raw := r.URL.RawQuery
	// Order: the known parameters must come in WeChat's order.
	next := 0
	for kv := range strings.SplitSeq(raw, "&") {
		k, _, _ := strings.Cut(kv, "=")
		for i, want := range authorizeOrder {
			if k == want {
				if i < next {
					return authRequest{}, &connectError{10001, "参数错误 (parameter " + k + " out of order: appid, redirect_uri, response_type, scope, state)"}
				}
				next = i + 1
			}
		}
	}
	q := r.URL.Query()
	appid := q.Get("appid")
	if appid == "" {
		return authRequest{}, &connectError{10012, "appid 不能为空 (appid is missing)"}
	}
	a := s.app(appid)
	if a == nil {
		return authRequest{}, &connectError{codeInvalidAppID, "invalid appid"}
	}
	a.mu.RLock()
	settings := a.oauth
	a.mu.RUnlock()
	redirect := q.Get("redirect_uri")
	if redirect == "" {
		return authRequest{}, &connectError{10011, "redirect_uri 不能为空 (redirect_uri is missing)"}
	}
	ru, err := url.Parse(redirect)
	if err != nil || (ru.Scheme != "http" && ru.Scheme != "https") || ru.Host == "" || !domainRegistered(ru, settings.domains) {
		return authRequest{}, &connectError{10003, "redirect_uri 域名与后台配置不一致 (redirect_uri's domain is not registered for this app)"}
	}
	if q.Get("response_type") != "code" {
		return authRequest{}, &connectError{10001, "参数错误 (response_type must be code)"}
	}
	scope := q.Get("scope")
	switch {
	case scope == "":
		return authRequest{}, &connectError{10010, "scope 不能为空 (scope is missing)"}
	case qrconnect && (scope != ScopeLogin || !settings.website):
		return authRequest{}, &connectError{10005, "Scope 参数错误或没有 Scope 权限 (qrconnect takes snsapi_login for a website app)"}
	case !qrconnect && (settings.website || (scope != ScopeBase && scope != ScopeUserInfo)):
		return authRequest{}, &connectError{10005, "此公众号并没有这些 scope 的权限 (snsapi_base or snsapi_userinfo for an official account)"}
	}
	state := q.Get("state")
	if !validState.MatchString(state) {
		return authRequest{}, &connectError{10013, "state 参数错误 (state is [a-zA-Z0-9]{0,128})"}
	}
	return authRequest{app: a, redirectURI: redirect, scope: scope, state: state}, nil
}

func domainRegistered(u *url.URL, domains []string) bool {
	for _, d := range domains {
		d = strings.ToLower(d)
		if strings.Contains(d, ":") {
			if strings.ToLower(u.Host) == d {
				return true
			}
		} else if strings.ToLower(u.Hostname()) == d {
			return true
		}
	}
	return false
}

// serveConnect serves the browser pages under /connect/.
func (s *Sim) serveConnect(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	switch r.URL.Path {
	case PathConnectAuthorize, PathConnectQRConnect:
		if r.Method != http.MethodGet {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		s.connectAuthorize(w, r, r.URL.Path == PathConnectQRConnect)
	case PathConnectReply:
		if r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		s.connectReply(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (s *Sim) connectAuthorize(w http.ResponseWriter, r *http.Request, qrconnect bool) {
	req, cerr := s.checkAuthorize(r, qrconnect)
	if cerr != nil {
		connectErrorPage(w, cerr)
		return
	}
	u, ok := s.loggedInUser(r, req.app.id)
	if !ok {
		connectErrorPage(w, &connectError{10000, "no WeChat user is logged in (simulator: POST /_sim/oauth/user or the " + CookieOpenID + " cookie)"})
		return
	}
	// snsapi_base is silent; so is snsapi_userinfo for a subscribed
	// follower who came from the account's menu or chat; a snapshot-page
	// visitor gets a virtual identity silently whatever the scope (WeChat
	// shows no consent there).
	if req.scope == ScopeBase || u.Snapshot || (req.scope == ScopeUserInfo && u.FromAccount && req.app.subscribed(u.OpenID)) {
		s.redirectWithCode(w, r, req, u)
		return
	}
	now := s.clock.Now()
	ticket := randomToken("", 32)
	s.connect.mu.Lock()
	if s.connect.pending == nil {
		s.connect.pending = make(map[string]*pendingAuth)
	}
	for k, p := range s.connect.pending {
		if now.After(p.expires) {
			delete(s.connect.pending, k)
		}
	}
	s.connect.pending[ticket] = &pendingAuth{app: req.app, user: u, scope: req.scope, redirectURI: req.redirectURI, state: req.state, expires: now.Add(ticketLifetime)}
	s.connect.mu.Unlock()

	nick := defaultNickname
	if p := req.app.person(u.OpenID); p != nil && p.f.Nickname != "" {
		nick = p.f.Nickname
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = consentPage.Execute(w, struct {
		AppID, Nickname, Scope, Ticket, Action string
		QR                                     bool
	}{req.app.id, nick, req.scope, ticket, PathConnectReply, qrconnect})
}

func (s *Sim) connectReply(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		connectErrorPage(w, &connectError{10001, "参数错误 (bad form)"})
		return
	}
	ticket := r.PostForm.Get("ticket")
	s.connect.mu.Lock()
	p := s.connect.pending[ticket]
	delete(s.connect.pending, ticket)
	s.connect.mu.Unlock()
	if p == nil || s.clock.Now().After(p.expires) {
		connectErrorPage(w, &connectError{10001, "this authorization page is no longer valid: open the link again"})
		return
	}
	req := authRequest{app: p.app, redirectURI: p.redirectURI, scope: p.scope, state: p.state}
	switch r.PostForm.Get("action") {
	case "allow":
		s.redirectWithCode(w, r, req, p.user)
	case "refuse":
		http.Redirect(w, r, withQuery(p.redirectURI, "state="+p.state), http.StatusFound)
	default:
		connectErrorPage(w, &connectError{10001, "参数错误 (action must be allow or refuse)"})
	}
}

func (s *Sim) redirectWithCode(w http.ResponseWriter, r *http.Request, req authRequest, u LoggedInUser) {
	cr := CodeRequest{AppID: req.app.id, OpenID: u.OpenID, Scope: req.scope, SnapshotUser: u.Snapshot}
	if u.Snapshot {
		cr.OpenID, cr.Scope = VirtualOpenID(req.app.id, u.OpenID), ScopeBase
	}
	code, err := s.IssueCodeWith(cr)
	if err != nil {
		connectErrorPage(w, &connectError{-1, "system error"})
		return
	}
	http.Redirect(w, r, withQuery(req.redirectURI, "code="+code+"&state="+req.state), http.StatusFound)
}

// withQuery appends q to u's query as WeChat does: ?q, or &q when u has
// a query already.
func withQuery(u, q string) string {
	if strings.Contains(u, "?") {
		return u + "&" + q
	}
	return u + "?" + q
}

var consentPage = template.Must(template.New("consent").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>微信登录 (simulated)</title></head>
<body>
<h1>{{if .QR}}微信扫码登录{{else}}网页授权{{end}} (simulated WeChat)</h1>
<p>App <b id="appid">{{.AppID}}</b> asks for your public profile (nickname, avatar): scope <code>{{.Scope}}</code>.</p>
<p>Logged in as <b id="nickname">{{.Nickname}}</b>.</p>
<form method="post" action="{{.Action}}">
<input type="hidden" name="ticket" value="{{.Ticket}}">
<button id="allow" type="submit" name="action" value="allow">允许 Allow</button>
<button id="refuse" type="submit" name="action" value="refuse">拒绝 Refuse</button>
</form>
</body></html>
`))

var connectErrorTemplate = template.Must(template.New("connect-error").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>微信 (simulated): {{.Code}}</title></head>
<body><h1>Oops! Something went wrong:(</h1><p id="errcode">{{.Code}}</p><p id="errmsg">{{.Msg}}</p></body></html>
`))

// connectErrorPage answers 400 with WeChat's error page: its code and
// message.
func connectErrorPage(w http.ResponseWriter, e *connectError) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusBadRequest)
	_ = connectErrorTemplate.Execute(w, struct {
		Code int
		Msg  string
	}{e.code, e.msg})
}

type oauthAppBody struct {
	AppID   string   `json:"appid"`
	Domains []string `json:"domains"`
	Website bool     `json:"website"`
}

// adminOAuthApp serves POST /_sim/oauth/apps: an app's OAuth domains and
// kind.
func (s *Sim) adminOAuthApp(w http.ResponseWriter, r *http.Request) {
	var b oauthAppBody
	if err := decode(r, &b); err != nil {
		badRequest(w, err)
		return
	}
	if s.app(b.AppID) == nil {
		badRequest(w, fmt.Errorf("%w %q", ErrUnknownApp, b.AppID))
		return
	}
	s.SetOAuthDomains(b.AppID, b.Domains...)
	s.SetWebsiteApp(b.AppID, b.Website)
	adminJSON(w, http.StatusOK, b)
}

type logInBody struct {
	AppID string `json:"appid"`
	LoggedInUser
}

// adminLogIn serves POST /_sim/oauth/user: who is logged in.
func (s *Sim) adminLogIn(w http.ResponseWriter, r *http.Request) {
	var b logInBody
	if err := decode(r, &b); err != nil {
		badRequest(w, err)
		return
	}
	if err := s.LogIn(b.AppID, b.LoggedInUser); err != nil {
		badRequest(w, err)
		return
	}
	adminJSON(w, http.StatusOK, b)
}
