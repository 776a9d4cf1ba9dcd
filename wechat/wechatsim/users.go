package wechatsim

import (
	"net/http"
	"time"
)

// globalAuth checks the access_token query parameter and, for ep >= 0,
// counts the call against the app's daily quota of endpoint ep.
func (s *Sim) globalAuth(r *http.Request, now time.Time, ep int) (*app, int) {
	t, c := s.lookupGlobal(param(r.URL.RawQuery, "access_token"), now)
	if t == nil {
		return nil, c
	}
	if c == 0 && ep >= 0 {
		c = t.app.quota.count(ep, now)
	}
	return t.app, c
}

// handleUserInfo serves GET /cgi-bin/user/info. The lang parameter is
// accepted and ignored: WeChat no longer localises this answer.
func (s *Sim) handleUserInfo(w http.ResponseWriter, r *http.Request, now time.Time) (*app, int) {
	a, c := s.globalAuth(r, now, epUserInfo)
	if c != 0 {
		return a, c
	}
	p := a.person(param(r.URL.RawQuery, "openid"))
	if p == nil || !p.follower {
		return a, codeInvalidOpenID
	}
	if a.bound.Load() {
		writeJSONBytes(w, p.infoU)
	} else {
		writeJSONBytes(w, p.info)
	}
	return a, 0
}

type batchRequest struct {
	UserList []struct {
		OpenID string `json:"openid"`
		Lang   string `json:"lang"`
	} `json:"user_list"`
}

// handleBatchGet serves POST /cgi-bin/user/info/batchget.
func (s *Sim) handleBatchGet(w http.ResponseWriter, r *http.Request, now time.Time) (*app, int) {
	var req batchRequest
	a, c := s.authJSON(r, now, epUserInfoBatch, &req)
	if c != 0 {
		return a, c
	}
	if n := len(req.UserList); n == 0 || n > 100 {
		return a, codeInvalidListSize
	}
	bound := a.bound.Load()
	out := make([]byte, 0, 64+256*len(req.UserList))
	out = append(out, `{"user_info_list":[`...)
	for i, u := range req.UserList {
		p := a.person(u.OpenID)
		if p == nil || !p.follower {
			return a, codeInvalidOpenID
		}
		if i > 0 {
			out = append(out, ',')
		}
		if bound {
			out = append(out, p.infoU...)
		} else {
			out = append(out, p.info...)
		}
	}
	out = append(out, "]}"...)
	writeJSONBytes(w, out)
	return a, 0
}

var (
	callbackIPs  = []byte(`{"ip_list":["106.55.206.146","106.55.206.211","101.226.103.0/25","101.226.62.0/25","183.3.234.0/25","58.251.80.0/25"]}`)
	apiDomainIPs = []byte(`{"ip_list":["101.89.47.18","101.91.34.103","101.91.37.19","109.244.145.140","109.244.184.48","112.53.42.48"]}`)
)

// ipListHandler serves /cgi-bin/getcallbackip and /cgi-bin/get_api_domain_ip
// (endpoint ep).
func ipListHandler(ep int, body []byte) handlerFunc {
	return func(s *Sim, w http.ResponseWriter, r *http.Request, now time.Time) (*app, int) {
		a, c := s.globalAuth(r, now, ep)
		if c != 0 {
			return a, c
		}
		writeJSONBytes(w, body)
		return a, 0
	}
}
