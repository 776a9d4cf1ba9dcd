package wechatsim

import (
	"net/http"
	"testing"
	"time"
)

func TestRevokeGrant(t *testing.T) {
	for _, tc := range []struct {
		how                   string
		wantAuth, wantRefresh int
	}{
		{GrantRevoked, 40001, 40030},
		{GrantReset, 42007, 42007},
	} {
		t.Run(tc.how, func(t *testing.T) {
			h := newHarness(t)
			seedUsers(t, h)
			ex := h.exchange(testApp, testSecret, h.code(testApp, plainFollower.OpenID, ScopeUserInfo))
			wantErr(t, ex, 0)
			// Another user of the same app is not touched.
			other := h.exchange(testApp, testSecret, h.code(testApp, "oSomeoneElse", ScopeUserInfo))
			wantErr(t, other, 0)
			a := h.postJSON("/_sim/grants/revoke", map[string]any{"appid": testApp, "openid": plainFollower.OpenID, "how": tc.how})
			if a.status != http.StatusOK || a.num("revoked") != 1 {
				t.Fatalf("revoke: %d %s", a.status, a.raw)
			}
			if got := h.snsAuth(ex.str("access_token"), plainFollower.OpenID); got != tc.wantAuth {
				t.Fatalf("revoked access token: %d, want %d", got, tc.wantAuth)
			}
			wantErr(t, h.refresh(testApp, ex.str("refresh_token")), tc.wantRefresh)
			if got := h.snsAuth(other.str("access_token"), "oSomeoneElse"); got != 0 {
				t.Fatalf("other user's token: %d", got)
			}
			// A new login works again.
			again := h.exchange(testApp, testSecret, h.code(testApp, plainFollower.OpenID, ScopeUserInfo))
			wantErr(t, again, 0)
			if got := h.snsAuth(again.str("access_token"), plainFollower.OpenID); got != 0 {
				t.Fatalf("new grant: %d", got)
			}
		})
	}
	h := newHarness(t)
	for _, body := range []map[string]any{
		{"appid": testApp},
		{"appid": "wxnope", "openid": "o"},
		{"appid": testApp, "openid": "o", "how": "maybe"},
	} {
		if a := h.postJSON("/_sim/grants/revoke", body); a.status != http.StatusBadRequest || a.str("error") == "" {
			t.Errorf("revoke %v: %d %s, want 400", body, a.status, a.raw)
		}
	}
}

func TestRefreshLifetime180Days(t *testing.T) {
	h := newHarness(t)
	seedUsers(t, h)
	if a := h.postJSON("/_sim/apps", map[string]any{"appid": "wxmobile", "secret": "m0bile", "refresh_token_days": 180}); a.status != http.StatusCreated {
		t.Fatalf("add app: %d %s", a.status, a.raw)
	}
	ex := h.exchange("wxmobile", "m0bile", h.code("wxmobile", "oPhone", ScopeUserInfo))
	wantErr(t, ex, 0)
	h.clock.Advance(179 * 24 * time.Hour)
	r := h.refresh("wxmobile", ex.str("refresh_token"))
	wantErr(t, r, 0)
	if r.str("access_token") == ex.str("access_token") {
		t.Fatal("an expired access token came back after a refresh")
	}
	h.clock.Advance(24 * time.Hour)
	wantErr(t, h.refresh("wxmobile", ex.str("refresh_token")), 42002)
	if a := h.postJSON("/_sim/apps", map[string]any{"appid": "wxbad", "secret": "x", "refresh_token_days": 0}); a.status != http.StatusBadRequest {
		t.Fatalf("refresh_token_days 0: %d", a.status)
	}
}
