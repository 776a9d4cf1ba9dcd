package wechatsim

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/wxhub/wxhub/events"
)

// globalToken is a global access_token from /cgi-bin/token or
// /cgi-bin/stable_token. value, app, stable and expiresAt never change.
type globalToken struct {
	value     string
	app       *app
	stable    bool
	expiresAt time.Time
	retiredAt atomic.Int64 // unix nanoseconds after which it is invalid; 0 = never
}

// check returns 0 if the token is valid at now, else the errcode WeChat
// answers for it.
func (t *globalToken) check(now time.Time) int {
	exp := t.expiresAt.UnixNano()
	if r := t.retiredAt.Load(); r != 0 && r < exp && now.UnixNano() >= r {
		return codeInvalidCred
	}
	if now.UnixNano() >= exp {
		return codeTokenExpired
	}
	return 0
}

// retire makes the token invalid from at on, unless it already is earlier.
func (t *globalToken) retire(at time.Time) {
	n := at.UnixNano()
	for {
		old := t.retiredAt.Load()
		if old != 0 && old <= n {
			return
		}
		if t.retiredAt.CompareAndSwap(old, n) {
			return
		}
	}
}

func (t *globalToken) expiresIn(now time.Time) int64 {
	s := int64(t.expiresAt.Sub(now) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}

type tokenAnswer struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

// lookupGlobal resolves a global access_token: the token and 0, or nil
// and the errcode to answer.
func (s *Sim) lookupGlobal(tok string, now time.Time) (*globalToken, int) {
	if tok == "" {
		return nil, codeTokenMissing
	}
	if !wellFormed(tok) {
		return nil, codeInvalidToken
	}
	s.tokMu.RLock()
	t := s.tokens[tok]
	s.tokMu.RUnlock()
	if t == nil {
		return nil, codeInvalidCred
	}
	if c := t.check(now); c != 0 {
		return t, c
	}
	return t, 0
}

// newGlobalToken creates and registers a token for a. Call with a.mu held.
func (s *Sim) newGlobalToken(a *app, stable bool, now time.Time) *globalToken {
	t := &globalToken{value: randomToken("86_", s.tokenLen-3), app: a, stable: stable, expiresAt: now.Add(tokenLifetime)}
	s.tokMu.Lock()
	s.tokens[t.value] = t
	s.issued++
	if s.issued >= 4096 {
		s.issued = 0
		for k, old := range s.tokens {
			if now.Sub(old.expiresAt) > 24*time.Hour {
				delete(s.tokens, k)
			}
		}
	}
	s.tokMu.Unlock()
	s.stats.tokenIssued(a.id)
	return t
}

// credentials checks grant_type, appid and secret; it returns the app or
// the errcode to answer.
func (s *Sim) credentials(grant, appid, secret string) (*app, int) {
	if grant != "client_credential" {
		return s.app(appid), codeInvalidGrant
	}
	a := s.app(appid)
	if a == nil {
		return nil, codeInvalidAppID
	}
	a.mu.RLock()
	ok := a.secret == secret
	a.mu.RUnlock()
	if !ok {
		return a, codeInvalidSecret
	}
	return a, 0
}

// handleToken serves GET /cgi-bin/token.
func (s *Sim) handleToken(w http.ResponseWriter, r *http.Request, now time.Time) (*app, int) {
	q := r.URL.RawQuery
	a, c := s.credentials(param(q, "grant_type"), param(q, "appid"), param(q, "secret"))
	if c != 0 {
		return a, c
	}
	a.mu.Lock()
	if c := a.quota.count(epToken, now); c != 0 {
		a.mu.Unlock()
		return a, c
	}
	t := s.newGlobalToken(a, false, now)
	if prev := a.latest; prev != nil {
		prev.retire(now.Add(tokenGrace))
	}
	a.latest = t
	a.mu.Unlock()
	writeJSON(w, tokenAnswer{AccessToken: t.value, ExpiresIn: int64(tokenLifetime / time.Second)})
	return a, 0
}

type stableRequest struct {
	GrantType    string `json:"grant_type"`
	AppID        string `json:"appid"`
	Secret       string `json:"secret"`
	ForceRefresh bool   `json:"force_refresh"`
}

// handleStableToken serves POST /cgi-bin/stable_token.
func (s *Sim) handleStableToken(w http.ResponseWriter, r *http.Request, now time.Time) (*app, int) {
	var req stableRequest
	if c := readJSON(r, &req); c != 0 {
		return nil, c
	}
	a, c := s.credentials(req.GrantType, req.AppID, req.Secret)
	if c != 0 {
		return a, c
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	// The minute's and the day's limits; a call counts once answered.
	q, minute, day := &a.quota, minuteNumber(now), chinaDayNumber(now)
	if l := q.minuteLimit.Load(); l >= 0 && q.minute.used(minute) >= l {
		return a, codeMinuteQuota
	}
	if l := q.limit[epStableToken].Load(); l >= 0 && q.daily[epStableToken].used(day) >= l {
		return a, codeDailyQuota
	}
	answer := func(t *globalToken) (*app, int) {
		q.minute.take(minute, -1)
		q.daily[epStableToken].take(day, -1)
		writeJSON(w, tokenAnswer{AccessToken: t.value, ExpiresIn: t.expiresIn(now)})
		return a, 0
	}
	cur := a.stable
	valid := cur != nil && cur.check(now) == 0
	if req.ForceRefresh {
		if valid && !a.lastForce.IsZero() && now.Sub(a.lastForce) < stableForceSpacing {
			return answer(cur)
		}
		if today := events.ChinaDay(now); a.forceDay != today {
			a.forceDay, a.forceCount = today, 0
		}
		if a.forceCount >= stableForceDaily {
			return a, codeDailyQuota
		}
		a.forceCount++
		a.lastForce = now
		if cur != nil {
			cur.retire(now)
		}
	} else if valid && cur.expiresAt.Sub(now) > tokenGrace {
		return answer(cur)
	}
	a.stable = s.newGlobalToken(a, true, now)
	return answer(a.stable)
}
