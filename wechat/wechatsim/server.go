package wechatsim

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"
)

// API endpoint paths the simulator answers.
const (
	PathToken         = "/cgi-bin/token"
	PathStableToken   = "/cgi-bin/stable_token"
	PathUserInfo      = "/cgi-bin/user/info"
	PathUserInfoBatch = "/cgi-bin/user/info/batchget"
	PathCallbackIP    = "/cgi-bin/getcallbackip"
	PathAPIDomainIP   = "/cgi-bin/get_api_domain_ip"
	PathOAuthToken    = "/sns/oauth2/access_token"
	PathOAuthRefresh  = "/sns/oauth2/refresh_token"
	PathSNSUserInfo   = "/sns/userinfo"
	PathSNSAuth       = "/sns/auth"
	PathClearQuota    = "/cgi-bin/clear_quota"
	PathQuotaGet      = "/cgi-bin/openapi/quota/get"
)

// handlerFunc answers one API call on success and returns the app it
// concerned (nil if unknown) and 0, or the errcode the dispatcher answers.
type handlerFunc func(s *Sim, w http.ResponseWriter, r *http.Request, now time.Time) (*app, int)

type endpoint struct {
	path     string
	postOnly bool
	handle   handlerFunc
}

// Endpoint indices, in the order of endpoints.
const (
	epToken = iota
	epStableToken
	epUserInfo
	epUserInfoBatch
	epCallbackIP
	epAPIDomainIP
	epOAuthToken
	epOAuthRefresh
	epSNSUserInfo
	epSNSAuth
	epClearQuota
	epQuotaGet
	numEndpoints
)

var endpoints = [numEndpoints]endpoint{
	epToken:         {PathToken, false, (*Sim).handleToken},
	epStableToken:   {PathStableToken, true, (*Sim).handleStableToken},
	epUserInfo:      {PathUserInfo, false, (*Sim).handleUserInfo},
	epUserInfoBatch: {PathUserInfoBatch, true, (*Sim).handleBatchGet},
	epCallbackIP:    {PathCallbackIP, false, ipListHandler(epCallbackIP, callbackIPs)},
	epAPIDomainIP:   {PathAPIDomainIP, false, ipListHandler(epAPIDomainIP, apiDomainIPs)},
	epOAuthToken:    {PathOAuthToken, false, (*Sim).handleOAuthToken},
	epOAuthRefresh:  {PathOAuthRefresh, false, (*Sim).handleOAuthRefresh},
	epSNSUserInfo:   {PathSNSUserInfo, false, (*Sim).handleSNSUserInfo},
	epSNSAuth:       {PathSNSAuth, false, (*Sim).handleSNSAuth},
	epClearQuota:    {PathClearQuota, true, (*Sim).handleClearQuota},
	epQuotaGet:      {PathQuotaGet, true, (*Sim).handleQuotaGet},
}

func endpointIndex(path string) int {
	for i := range endpoints {
		if endpoints[i].path == path {
			return i
		}
	}
	return -1
}

// ServeHTTP answers WeChat API calls and, under /_sim/, the admin API.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if strings.HasPrefix(path, "/_sim/") {
		s.serveAdmin(w, r)
		return
	}
	if strings.HasPrefix(path, "/connect/") {
		s.serveConnect(w, r)
		return
	}
	i := endpointIndex(path)
	if i < 0 {
		http.NotFound(w, r)
		return
	}
	ep := &endpoints[i]
	delay := time.Duration(s.latency.Load())
	var f *Fault
	if s.nFaults.Load() > 0 {
		f = s.pickFault(path)
		if f != nil {
			delay += time.Duration(f.DelayMS) * time.Millisecond
		}
	}
	if delay > 0 && !sleep(r.Context(), delay) {
		return // the client went away
	}
	now := s.clock.Now()
	if f != nil && (f.ErrCode != 0 || f.HTTPStatus != 0) {
		s.countCall(i, s.appOf(r))
		if i == epOAuthToken {
			s.consumeCode(r, now)
		}
		if f.HTTPStatus != 0 {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(f.HTTPStatus)
			_, _ = w.Write([]byte("<html><body><h1>" + http.StatusText(f.HTTPStatus) + "</h1>simulated fault</body></html>\n"))
			return
		}
		s.answerError(w, r, f.ErrCode, now)
		return
	}
	var a *app
	code := 0
	if ep.postOnly && r.Method != http.MethodPost {
		code = codeRequirePOST
	} else {
		a, code = ep.handle(s, w, r, now)
	}
	s.countCall(i, a)
	if code != 0 {
		s.answerError(w, r, code, now)
	}
}

func (s *Sim) answerError(w http.ResponseWriter, r *http.Request, code int, now time.Time) {
	s.stats.errCode(code)
	writeJSONBytes(w, errBody(code, errMsgFor(code, r), now))
}

// appOf finds which known app a request concerns, cheaply and without
// side effects (used to count faulted calls).
func (s *Sim) appOf(r *http.Request) *app {
	q := r.URL.RawQuery
	if id := param(q, "appid"); id != "" {
		return s.app(id)
	}
	if r.URL.Path == PathStableToken && r.Method == http.MethodPost {
		var req stableRequest
		if body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20)); err == nil && json.Unmarshal(body, &req) == nil {
			return s.app(req.AppID)
		}
		return nil
	}
	tok := param(q, "access_token")
	if tok == "" {
		return nil
	}
	s.tokMu.RLock()
	t := s.tokens[tok]
	s.tokMu.RUnlock()
	if t != nil {
		return t.app
	}
	s.userMu.RLock()
	ut := s.userToks[tok]
	s.userMu.RUnlock()
	if ut != nil {
		return ut.app
	}
	return nil
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
