package wechatsim

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Ways a user's grant ends before its time.
const (
	// GrantRevoked: the user cancelled the authorization. Their access
	// tokens answer 40001, their refresh tokens 40030.
	GrantRevoked = "revoked"
	// GrantReset: both tokens became invalid (the user changed their
	// password, or WeChat flagged the account): 42007 on both.
	GrantReset = "reset"
)

// RevokeGrant ends every OAuth grant openid gave appid: how = GrantRevoked
// or GrantReset (see those). Codes issued later start new, working
// grants. It returns how many refresh tokens it ended.
func (s *Sim) RevokeGrant(appid, openid, how string) (int, error) {
	a := s.app(appid)
	if a == nil {
		return 0, fmt.Errorf("%w %q", ErrUnknownApp, appid)
	}
	var access, refresh int32
	switch how {
	case GrantRevoked, "":
		access, refresh = codeInvalidCred, codeInvalidRefresh
	case GrantReset:
		access, refresh = codeTokenRefreshBroken, codeTokenRefreshBroken
	default:
		return 0, fmt.Errorf("%w: how must be %s or %s", ErrBadInput, GrantRevoked, GrantReset)
	}
	s.userMu.Lock()
	defer s.userMu.Unlock()
	n := 0
	for _, rt := range s.refresh {
		if rt.app == a && rt.user.openid == openid && rt.revoked == 0 {
			rt.revoked = int(refresh)
			n++
		}
	}
	for _, ut := range s.userToks {
		if ut.app == a && ut.openid == openid {
			ut.revoked.CompareAndSwap(0, access)
		}
	}
	return n, nil
}

// SetRefreshLifetime sets how long appid's refresh tokens live from the
// login: 30 days by default (WeChat gives mobile apps 180). It applies
// to grants made afterwards.
func (s *Sim) SetRefreshLifetime(appid string, d time.Duration) error {
	a := s.app(appid)
	if a == nil {
		return fmt.Errorf("%w %q", ErrUnknownApp, appid)
	}
	if d <= 0 {
		return fmt.Errorf("%w: refresh lifetime must be positive", ErrBadInput)
	}
	a.mu.Lock()
	a.refreshLifetime = d
	a.mu.Unlock()
	return nil
}

func (a *app) refreshTTL() time.Duration {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.refreshLifetime > 0 {
		return a.refreshLifetime
	}
	return refreshLifetime
}

type revokeBody struct {
	AppID  string `json:"appid"`
	OpenID string `json:"openid"`
	How    string `json:"how"`
}

// adminRevokeGrant serves POST /_sim/grants/revoke.
func (s *Sim) adminRevokeGrant(w http.ResponseWriter, r *http.Request) {
	var b revokeBody
	if err := decode(r, &b); err != nil {
		badRequest(w, err)
		return
	}
	if b.AppID == "" || b.OpenID == "" {
		badRequest(w, errors.New("appid and openid are required"))
		return
	}
	n, err := s.RevokeGrant(b.AppID, b.OpenID, b.How)
	if err != nil {
		badRequest(w, err)
		return
	}
	adminJSON(w, http.StatusOK, struct {
		Revoked int `json:"revoked"`
	}{n})
}
