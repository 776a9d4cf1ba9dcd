package wechatsim

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// OAuth scopes.
const (
	ScopeBase     = "snsapi_base"
	ScopeUserInfo = "snsapi_userinfo"
)

const (
	defaultNickname   = "微信用户"
	defaultHeadImgURL = "https://thirdwx.qlogo.cn/mmopen/vi_32/POgEwh4mIHO4nibH0KlMECNjjGxQUq24ZEaGT4poC6icRiccVGKSyXwibcPq4BWmiaIGuG1icwxaQX6grC9VemZoJ8rg/132"
)

// code is an OAuth authorization code. used changes under Sim.userMu.
type code struct {
	app      *app
	openid   string
	scope    string
	snapshot bool
	issuedAt time.Time
	lifetime time.Duration // 5 minutes; 10 for website apps (snsapi_login)
	used     bool
}

// userToken is a user's OAuth access_token.
type userToken struct {
	value     string
	app       *app
	openid    string
	scope     string
	expiresAt atomic.Int64 // unix nanoseconds
	revoked   atomic.Int32 // errcode once the grant was revoked (RevokeGrant)
}

// refreshToken is a user's OAuth refresh_token; user changes under
// Sim.userMu.
type refreshToken struct {
	value     string
	app       *app
	expiresAt time.Time
	snapshot  bool
	user      *userToken
	revoked   int // errcode once the grant was revoked (RevokeGrant)
}

// CodeRequest describes an authorization code to issue: the user openid
// authorized appid with scope (snsapi_base or snsapi_userinfo).
// SnapshotUser marks a "snapshot page" visitor (is_snapshotuser=1).
type CodeRequest struct {
	AppID        string `json:"appid"`
	OpenID       string `json:"openid"`
	Scope        string `json:"scope"`
	SnapshotUser bool   `json:"is_snapshotuser,omitempty"`
}

// IssueCode issues a code as if openid had just authorized appid with
// scope. The openid need not be a follower. The code is single-use and
// expires 5 minutes (by the sim clock) after issue.
func (s *Sim) IssueCode(appid, openid, scope string) (string, error) {
	return s.IssueCodeWith(CodeRequest{AppID: appid, OpenID: openid, Scope: scope})
}

// IssueCodeWith is IssueCode with every option.
func (s *Sim) IssueCodeWith(req CodeRequest) (string, error) {
	a := s.app(req.AppID)
	if a == nil {
		return "", fmt.Errorf("%w %q", ErrUnknownApp, req.AppID)
	}
	if req.OpenID == "" {
		return "", fmt.Errorf("%w: openid is required", ErrBadInput)
	}
	lifetime := codeLifetime
	switch req.Scope {
	case ScopeBase, ScopeUserInfo:
	case ScopeLogin:
		lifetime = websiteCodeLifetime
	default:
		return "", fmt.Errorf("%w: scope must be %s, %s or %s", ErrBadInput, ScopeBase, ScopeUserInfo, ScopeLogin)
	}
	now := s.clock.Now()
	v := randomToken("0", 31)
	s.userMu.Lock()
	if len(s.codes) > 10000 {
		for k, c := range s.codes {
			if now.Sub(c.issuedAt) > time.Hour {
				delete(s.codes, k)
			}
		}
	}
	s.codes[v] = &code{app: a, openid: req.OpenID, scope: req.Scope, snapshot: req.SnapshotUser, issuedAt: now, lifetime: lifetime}
	s.userMu.Unlock()
	return v, nil
}

type oauthAnswer struct {
	AccessToken    string `json:"access_token"`
	ExpiresIn      int64  `json:"expires_in"`
	RefreshToken   string `json:"refresh_token"`
	OpenID         string `json:"openid"`
	Scope          string `json:"scope"`
	IsSnapshotUser int    `json:"is_snapshotuser,omitempty"`
	UnionID        string `json:"unionid,omitempty"`
}

func (s *Sim) oauthAnswer(rt *refreshToken, ut *userToken, now time.Time) oauthAnswer {
	ans := oauthAnswer{
		AccessToken: ut.value, ExpiresIn: (ut.expiresAt.Load() - now.UnixNano()) / int64(time.Second),
		RefreshToken: rt.value, OpenID: ut.openid, Scope: ut.scope,
	}
	if rt.snapshot {
		ans.IsSnapshotUser = 1
	}
	if profileScope(ut.scope) && ut.app.bound.Load() {
		if p := ut.app.person(ut.openid); p != nil {
			ans.UnionID = p.f.UnionID
		}
	}
	return ans
}

func (s *Sim) newUserToken(a *app, openid, scope string, now time.Time) *userToken {
	ut := &userToken{value: randomToken("86_", 104), app: a, openid: openid, scope: scope}
	ut.expiresAt.Store(now.Add(tokenLifetime).UnixNano())
	s.userToks[ut.value] = ut
	return ut
}

// handleOAuthToken serves GET /sns/oauth2/access_token.
func (s *Sim) handleOAuthToken(w http.ResponseWriter, r *http.Request, now time.Time) (*app, int) {
	q := r.URL.RawQuery
	a := s.app(param(q, "appid"))
	if a == nil {
		return nil, codeInvalidAppID
	}
	a.mu.RLock()
	ok := a.secret == param(q, "secret")
	a.mu.RUnlock()
	if !ok {
		return a, codeInvalidSecret
	}
	if param(q, "grant_type") != "authorization_code" {
		return a, codeInvalidGrant
	}
	cv := param(q, "code")
	if cv == "" {
		return a, codeMissingCode
	}
	s.userMu.Lock()
	c := s.codes[cv]
	switch {
	case c == nil || c.app != a:
		s.userMu.Unlock()
		return a, codeInvalidCode
	case c.used:
		s.userMu.Unlock()
		return a, codeCodeUsed
	case !now.Before(c.issuedAt.Add(c.lifetime)):
		s.userMu.Unlock()
		return a, codeInvalidCode
	}
	c.used = true
	ut := s.newUserToken(a, c.openid, c.scope, now)
	rt := &refreshToken{value: randomToken("86_", 104), app: a, expiresAt: now.Add(a.refreshTTL()), snapshot: c.snapshot, user: ut}
	s.refresh[rt.value] = rt
	s.userMu.Unlock()
	writeJSON(w, s.oauthAnswer(rt, ut, now))
	return a, 0
}

// consumeCode marks the request's code used, as WeChat does even when the
// exchange answers an error.
func (s *Sim) consumeCode(r *http.Request, now time.Time) {
	q := r.URL.RawQuery
	a := s.app(param(q, "appid"))
	s.userMu.Lock()
	if c := s.codes[param(q, "code")]; c != nil && c.app == a && now.Before(c.issuedAt.Add(c.lifetime)) {
		c.used = true
	}
	s.userMu.Unlock()
}

// handleOAuthRefresh serves GET /sns/oauth2/refresh_token.
func (s *Sim) handleOAuthRefresh(w http.ResponseWriter, r *http.Request, now time.Time) (*app, int) {
	q := r.URL.RawQuery
	a := s.app(param(q, "appid"))
	if a == nil {
		return nil, codeInvalidAppID
	}
	if param(q, "grant_type") != "refresh_token" {
		return a, codeInvalidGrant
	}
	s.userMu.Lock()
	rt := s.refresh[param(q, "refresh_token")]
	if rt == nil || rt.app != a {
		s.userMu.Unlock()
		return a, codeInvalidRefresh
	}
	if rt.revoked != 0 {
		s.userMu.Unlock()
		return a, rt.revoked
	}
	if !now.Before(rt.expiresAt) {
		s.userMu.Unlock()
		return a, codeRefreshExpired
	}
	ut := rt.user
	if now.UnixNano() >= ut.expiresAt.Load() {
		ut = s.newUserToken(a, ut.openid, ut.scope, now)
		rt.user = ut
	} else {
		ut.expiresAt.Store(now.Add(tokenLifetime).UnixNano())
	}
	s.userMu.Unlock()
	writeJSON(w, s.oauthAnswer(rt, ut, now))
	return a, 0
}

// userAuth checks a user access_token and the openid it must belong to.
func (s *Sim) userAuth(r *http.Request, now time.Time) (*userToken, int) {
	q := r.URL.RawQuery
	tok := param(q, "access_token")
	if tok == "" {
		return nil, codeTokenMissing
	}
	if !wellFormed(tok) {
		return nil, codeInvalidToken
	}
	s.userMu.RLock()
	ut := s.userToks[tok]
	s.userMu.RUnlock()
	if ut == nil {
		return nil, codeInvalidCred
	}
	if c := ut.revoked.Load(); c != 0 {
		return ut, int(c)
	}
	if now.UnixNano() >= ut.expiresAt.Load() {
		return ut, codeTokenExpired
	}
	if param(q, "openid") != ut.openid {
		return ut, codeInvalidOpenID
	}
	return ut, 0
}

// snsUserInfo is the /sns/userinfo answer. Sex is always 0 and the region
// fields always "": WeChat stopped returning them in late 2021.
type snsUserInfo struct {
	OpenID     string   `json:"openid"`
	Nickname   string   `json:"nickname"`
	Sex        int      `json:"sex"`
	Province   string   `json:"province"`
	City       string   `json:"city"`
	Country    string   `json:"country"`
	HeadImgURL string   `json:"headimgurl"`
	Privilege  []string `json:"privilege"`
	UnionID    string   `json:"unionid,omitempty"`
}

// handleSNSUserInfo serves GET /sns/userinfo.
func (s *Sim) handleSNSUserInfo(w http.ResponseWriter, r *http.Request, now time.Time) (*app, int) {
	ut, c := s.userAuth(r, now)
	if ut == nil {
		return nil, c
	}
	a := ut.app
	if c == 0 && !profileScope(ut.scope) {
		c = codeUnauthorized
	}
	if c != 0 {
		return a, c
	}
	ans := snsUserInfo{OpenID: ut.openid, Nickname: defaultNickname, HeadImgURL: defaultHeadImgURL, Privilege: []string{}}
	if p := a.person(ut.openid); p != nil {
		f := p.f
		if f.Nickname != "" {
			ans.Nickname = f.Nickname
		}
		if f.HeadImgURL != "" {
			ans.HeadImgURL = f.HeadImgURL
		}
		if f.Privilege != nil {
			ans.Privilege = f.Privilege
		}
		if a.bound.Load() {
			ans.UnionID = f.UnionID
		}
	}
	writeJSON(w, ans)
	return a, 0
}

// handleSNSAuth serves GET /sns/auth.
func (s *Sim) handleSNSAuth(w http.ResponseWriter, r *http.Request, now time.Time) (*app, int) {
	ut, c := s.userAuth(r, now)
	var a *app
	if ut != nil {
		a = ut.app
	}
	if c != 0 {
		return a, c
	}
	writeJSONBytes(w, okBody)
	return a, 0
}

// profileScope reports whether a user token's scope grants /sns/userinfo:
// snsapi_userinfo, or snsapi_login (website apps).
func profileScope(scope string) bool {
	return strings.Contains(scope, ScopeUserInfo) || strings.Contains(scope, ScopeLogin)
}
