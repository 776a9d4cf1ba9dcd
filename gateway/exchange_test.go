package gateway_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestSecretIsReplacedOnlyOnExchangePaths: the client key in `secret`
// is replaced by the AppSecret on the code exchanges only
// (/sns/oauth2/access_token, /sns/jscode2session). Any other /sns path
// carrying `secret` is refused with 48001 and never forwarded: the
// AppSecret must not go anywhere else.
func TestSecretIsReplacedOnlyOnExchangePaths(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	hc := &http.Client{}
	q := "?appid=" + appA + "&secret=" + keyShop
	refused := []struct{ name, target string }{
		{"the token endpoint's query on another /sns path", "/sns/token" + q + "&grant_type=client_credential"},
		{"user info", "/sns/userinfo" + q + "&access_token=user-token&openid=o1"},
		{"token check", "/sns/auth" + q + "&access_token=user-token&openid=o1"},
		{"refresh (takes no secret)", "/sns/oauth2/refresh_token" + q + "&grant_type=refresh_token&refresh_token=r1"},
		{"an exchange path with a suffix", "/sns/jscode2session/x" + q + "&js_code=j1&grant_type=authorization_code"},
		{"the exchange path with a trailing slash", "/sns/oauth2/access_token/" + q + "&code=c1&grant_type=authorization_code"},
		{"a component's exchange", "/sns/component/jscode2session" + q + "&js_code=j1&grant_type=authorization_code"},
		{"an unknown client key", "/sns/userinfo?appid=" + appA + "&secret=not-a-key-not-a-key&access_token=t&openid=o1"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			a := get(t, hc, e.url+tt.target)
			if a.ErrCode != 48001 || !strings.Contains(a.ErrMsg, "not a code exchange") || !strings.Contains(a.ErrMsg, " rid: ") {
				t.Fatalf("answer %s, want 48001: secret only on a code exchange", a.raw)
			}
		})
	}
	if got := e.relayed(); len(got) != 0 {
		t.Fatalf("%d refused calls reached WeChat, first %s", len(got), got[0].Path)
	}
	if n := len(e.callLines("unknown", "48001")); n != len(refused) {
		t.Errorf("%d refusals logged under the unknown client, want %d", n, len(refused))
	}

	// The exchanges get the AppSecret.
	code, err := e.sim.IssueCode(appA, openID, "snsapi_base")
	if err != nil {
		t.Fatal(err)
	}
	if a := get(t, hc, e.url+"/sns/oauth2/access_token"+q+"&code="+code+"&grant_type=authorization_code"); a.ErrCode != 0 || a.OpenID != openID {
		t.Fatalf("OAuth exchange: %s", a.raw)
	}
	if a := get(t, hc, e.url+"/sns/jscode2session"+q+"&js_code=j1&grant_type=authorization_code"); a.ErrCode != 0 || a.OpenID != "oMini-j1" {
		t.Fatalf("mini program exchange: %s", a.raw)
	}
	for _, a := range e.relayed() {
		if s := a.Query.Get("secret"); s != secretA {
			t.Errorf("%s reached WeChat with secret %q, want the AppSecret", a.Path, s)
		}
	}
	if n := len(e.relayed()); n != 2 {
		t.Errorf("%d calls reached WeChat, want the 2 exchanges", n)
	}
	e.assertNoLeak("the logs", e.logs.String())
}
