package wechat_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

type simEnv struct {
	sim   *wechatsim.Sim
	clock *wechatsim.ManualClock
	c     *wechat.Client
}

func newSim(t *testing.T, opts ...wechatsim.Option) simEnv {
	t.Helper()
	clock := wechatsim.NewManualClock(time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC))
	sim := wechatsim.New(append([]wechatsim.Option{wechatsim.WithClock(clock)}, opts...)...)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	sim.AddApp("wxapp", "secret-1")
	sub := 1
	if err := sim.AddFollower("wxapp", wechatsim.Follower{OpenID: "o-follower", UnionID: "u-1", Subscribe: &sub, SubscribeTime: 1700000000,
		Language: "zh_CN", SubscribeScene: "ADD_SCENE_QR_CODE", QRScene: 98765, TagIDList: []int{2, 128}, Nickname: "Ann"}); err != nil {
		t.Fatal(err)
	}
	c, err := wechat.NewClient(wechat.Config{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return simEnv{sim, clock, c}
}

var ridRe = regexp.MustCompile(` rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$`)

func wantCode(t *testing.T, err error, code int) {
	t.Helper()
	var api *wechat.APIError
	if !errors.As(err, &api) || api.Code != code {
		t.Fatalf("err = %v, want errcode %d", err, code)
	}
	if !ridRe.MatchString(api.Msg) {
		t.Errorf("errmsg %q lacks the rid suffix", api.Msg)
	}
}

func TestTokenLifecycleAgainstSimulator(t *testing.T) {
	e := newSim(t)
	ctx := context.Background()
	t1, err := e.c.Token(ctx, "wxapp", "secret-1")
	if err != nil {
		t.Fatal(err)
	}
	if t1.ExpiresIn != 7200*time.Second || len(t1.Token) < 64 {
		t.Fatalf("token %d chars, expires in %v", len(t1.Token), t1.ExpiresIn)
	}
	info, err := e.c.UserInfo(ctx, t1.Token, "o-follower", "")
	if err != nil {
		t.Fatal(err)
	}
	if info.Subscribe != 1 || info.OpenID != "o-follower" || info.UnionID != "u-1" || info.QRScene != 98765 || len(info.TagIDList) != 2 {
		t.Fatalf("user info = %+v", info)
	}
	// A new token retires the old one 5 minutes later.
	t2, err := e.c.Token(ctx, "wxapp", "secret-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.UserInfo(ctx, t1.Token, "o-follower", ""); err != nil {
		t.Fatalf("old token within grace: %v", err)
	}
	e.clock.Advance(301 * time.Second)
	_, err = e.c.UserInfo(ctx, t1.Token, "o-follower", "")
	wantCode(t, err, wechat.CodeInvalidCredential)
	if !wechat.IsTokenInvalid(err) {
		t.Fatal("40001 must be token-invalid")
	}
	if _, err := e.c.CallbackIP(ctx, t2.Token); err != nil {
		t.Fatalf("new token: %v", err)
	}
	e.clock.Advance(7200 * time.Second)
	_, err = e.c.CallbackIP(ctx, t2.Token)
	wantCode(t, err, wechat.CodeAccessTokenExpired)
}

func TestClientErrorsAgainstSimulator(t *testing.T) {
	e := newSim(t)
	ctx := context.Background()
	tok, err := e.c.Token(ctx, "wxapp", "secret-1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		call  func() error
		code  int
		class wechat.Class
	}{
		{"wrong secret", func() error { _, err := e.c.Token(ctx, "wxapp", "nope"); return err }, 40125, wechat.ClassConfig},
		{"unknown appid", func() error { _, err := e.c.Token(ctx, "wxnope", "x"); return err }, 40013, wechat.ClassConfig},
		{"not a follower", func() error { _, err := e.c.UserInfo(ctx, tok.Token, "o-stranger", ""); return err }, 40003, wechat.ClassPermanent},
		{"malformed token", func() error { _, err := e.c.UserInfo(ctx, "not a token!", "o-follower", ""); return err }, 40014, wechat.ClassToken},
		{"missing token", func() error { _, err := e.c.UserInfo(ctx, "", "o-follower", ""); return err }, 41001, wechat.ClassBug},
		{"empty batch", func() error { _, err := e.c.BatchGetUserInfo(ctx, tok.Token, nil); return err }, 40032, wechat.ClassPermanent},
		{"unknown code", func() error { _, err := e.c.ExchangeCode(ctx, "wxapp", "secret-1", "nope"); return err }, 40029, wechat.ClassPermanent},
		{"bad refresh token", func() error { _, err := e.c.RefreshOAuthToken(ctx, "wxapp", "nope"); return err }, 40030, wechat.ClassPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			wantCode(t, err, tt.code)
			if got := wechat.Classify(err); got != tt.class {
				t.Fatalf("Classify = %v, want %v", got, tt.class)
			}
		})
	}
}

func TestStableTokenAgainstSimulator(t *testing.T) {
	e := newSim(t)
	ctx := context.Background()
	a, err := e.c.StableToken(ctx, "wxapp", "secret-1", false)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	b, err := e.c.StableToken(ctx, "wxapp", "secret-1", false)
	if err != nil {
		t.Fatal(err)
	}
	if a.Token != b.Token || b.ExpiresIn != time.Hour {
		t.Fatalf("normal mode must return the same token with its remaining life: %v", b.ExpiresIn)
	}
	e.clock.Advance(time.Minute)
	f, err := e.c.StableToken(ctx, "wxapp", "secret-1", true)
	if err != nil {
		t.Fatal(err)
	}
	if f.Token == a.Token || f.ExpiresIn != 7200*time.Second {
		t.Fatal("force_refresh must issue a new token")
	}
}

func TestOAuthFlowAgainstSimulator(t *testing.T) {
	e := newSim(t)
	ctx := context.Background()
	code, err := e.sim.IssueCode("wxapp", "o-follower", "snsapi_userinfo")
	if err != nil {
		t.Fatal(err)
	}
	ut, err := e.c.ExchangeCode(ctx, "wxapp", "secret-1", code)
	if err != nil {
		t.Fatal(err)
	}
	if ut.OpenID != "o-follower" || ut.Scope != "snsapi_userinfo" || ut.RefreshToken == "" {
		t.Fatalf("oauth token = %+v", ut)
	}
	_, err = e.c.ExchangeCode(ctx, "wxapp", "secret-1", code)
	wantCode(t, err, wechat.CodeCodeBeenUsed)
	p, err := e.c.SNSUserInfo(ctx, ut.AccessToken, ut.OpenID, "")
	if err != nil {
		t.Fatal(err)
	}
	if p.Nickname != "Ann" || p.OpenID != "o-follower" {
		t.Fatalf("sns profile = %+v", p)
	}
	if err := e.c.CheckSNSToken(ctx, ut.AccessToken, ut.OpenID); err != nil {
		t.Fatalf("sns/auth: %v", err)
	}
	rt, err := e.c.RefreshOAuthToken(ctx, "wxapp", ut.RefreshToken)
	if err != nil || rt.OpenID != "o-follower" {
		t.Fatalf("refresh: %+v %v", rt, err)
	}
	base, _ := e.sim.IssueCode("wxapp", "o-follower", "snsapi_base")
	bt, err := e.c.ExchangeCode(ctx, "wxapp", "secret-1", base)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.c.SNSUserInfo(ctx, bt.AccessToken, bt.OpenID, "")
	wantCode(t, err, wechat.CodeAPIUnauthorized)
}

func TestTransientFaultsAgainstSimulator(t *testing.T) {
	e := newSim(t)
	ctx := context.Background()
	tok, _ := e.c.Token(ctx, "wxapp", "secret-1")
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechat.PathUserInfo, HTTPStatus: 503, Count: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := e.c.UserInfo(ctx, tok.Token, "o-follower", "")
	var te *wechat.TransportError
	if !errors.As(err, &te) || te.StatusCode != 503 || !wechat.IsTransient(err) {
		t.Fatalf("503: %v", err)
	}
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechat.PathUserInfo, ErrCode: -1, Count: 1}); err != nil {
		t.Fatal(err)
	}
	_, err = e.c.UserInfo(ctx, tok.Token, "o-follower", "")
	if wechat.ErrCode(err) != -1 || !wechat.IsTransient(err) {
		t.Fatalf("-1: %v", err)
	}
	if _, err := e.c.UserInfo(ctx, tok.Token, "o-follower", ""); err != nil {
		t.Fatalf("after faults: %v", err)
	}
}

func TestIPListsAgainstSimulator(t *testing.T) {
	e := newSim(t)
	ctx := context.Background()
	tok, err := e.c.Token(ctx, "wxapp", "secret-1")
	if err != nil {
		t.Fatal(err)
	}
	calls := []struct {
		name string
		call func(ctx context.Context, token string) ([]string, error)
	}{
		{"getcallbackip", e.c.CallbackIP},
		{"get_api_domain_ip", e.c.APIDomainIP},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			ips, err := c.call(ctx, tok.Token)
			if err != nil || len(ips) == 0 {
				t.Fatalf("ip_list %v, err %v", ips, err)
			}
			_, err = c.call(ctx, "")
			wantCode(t, err, wechat.CodeAccessTokenMissing)
			_, err = c.call(ctx, strings.Repeat("Q", 150))
			wantCode(t, err, wechat.CodeInvalidCredential)
		})
	}
}

// TestTokensOf512Characters: WeChat's tokens may be about 512 characters;
// the client hands them back whole.
func TestTokensOf512Characters(t *testing.T) {
	e := newSim(t, wechatsim.WithTokenLength(512))
	ctx := context.Background()
	fetch := []struct {
		name string
		get  func() (wechat.AccessToken, error)
	}{
		{"token", func() (wechat.AccessToken, error) { return e.c.Token(ctx, "wxapp", "secret-1") }},
		{"stable_token", func() (wechat.AccessToken, error) { return e.c.StableToken(ctx, "wxapp", "secret-1", false) }},
	}
	for _, f := range fetch {
		t.Run(f.name, func(t *testing.T) {
			tok, err := f.get()
			if err != nil || len(tok.Token) != 512 {
				t.Fatalf("%d characters, err %v", len(tok.Token), err)
			}
			if _, err := e.c.UserInfo(ctx, tok.Token, "o-follower", ""); err != nil {
				t.Fatalf("using it: %v", err)
			}
		})
	}
}

// TestClientClassifiesSimulatorRefusals: what the simulator refuses with
// WeChat's errcodes, the client classifies as the error table says.
func TestClientClassifiesSimulatorRefusals(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		call  func(t *testing.T, e simEnv) error
		code  int
		class wechat.Class
	}{
		{"the day's 2001st token", func(t *testing.T, e simEnv) error {
			e.sim.SetTokenDailyLimit("wxapp", 1)
			if _, err := e.c.Token(ctx, "wxapp", "secret-1"); err != nil {
				t.Fatal(err)
			}
			_, err := e.c.Token(ctx, "wxapp", "secret-1")
			return err
		}, 45009, wechat.ClassQuota},
		{"stable_token over the minute's limit", func(t *testing.T, e simEnv) error {
			e.sim.SetStableTokenMinuteLimit("wxapp", 1)
			if _, err := e.c.StableToken(ctx, "wxapp", "secret-1", false); err != nil {
				t.Fatal(err)
			}
			_, err := e.c.StableToken(ctx, "wxapp", "secret-1", false)
			return err
		}, 45011, wechat.ClassTransient},
		{"the 21st forced stable_token of the day", func(t *testing.T, e simEnv) error {
			for range 20 {
				if _, err := e.c.StableToken(ctx, "wxapp", "secret-1", true); err != nil {
					t.Fatal(err)
				}
				e.clock.Advance(31 * time.Second)
			}
			_, err := e.c.StableToken(ctx, "wxapp", "secret-1", true)
			return err
		}, 45009, wechat.ClassQuota},
		{"IP not in the whitelist", func(t *testing.T, e simEnv) error {
			if err := e.sim.AddFault(wechatsim.Fault{Path: wechat.PathToken, ErrCode: 40164}); err != nil {
				t.Fatal(err)
			}
			_, err := e.c.Token(ctx, "wxapp", "secret-1")
			return err
		}, 40164, wechat.ClassConfig},
		{"user/info over a daily limit", func(t *testing.T, e simEnv) error {
			if err := e.sim.SetDailyLimit("wxapp", wechat.PathUserInfo, 0); err != nil {
				t.Fatal(err)
			}
			tok, err := e.c.Token(ctx, "wxapp", "secret-1")
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.c.UserInfo(ctx, tok.Token, "o-follower", "")
			return err
		}, 45009, wechat.ClassQuota},
		{"a superseded token after the 5 minutes", func(t *testing.T, e simEnv) error {
			old, err := e.c.Token(ctx, "wxapp", "secret-1")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.c.Token(ctx, "wxapp", "secret-1"); err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(300 * time.Second)
			_, err = e.c.CallbackIP(ctx, old.Token)
			return err
		}, 40001, wechat.ClassToken},
		{"a code expired after 5 minutes", func(t *testing.T, e simEnv) error {
			code, _ := e.sim.IssueCode("wxapp", "o-follower", "snsapi_base")
			e.clock.Advance(5 * time.Minute)
			_, err := e.c.ExchangeCode(ctx, "wxapp", "secret-1", code)
			return err
		}, 40029, wechat.ClassPermanent},
		{"a code used by a call that answered -1", func(t *testing.T, e simEnv) error {
			code, _ := e.sim.IssueCode("wxapp", "o-follower", "snsapi_base")
			if err := e.sim.AddFault(wechatsim.Fault{Path: wechat.PathOAuthToken, ErrCode: -1, Count: 1}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.c.ExchangeCode(ctx, "wxapp", "secret-1", code); wechat.ErrCode(err) != -1 || !wechat.IsTransient(err) {
				t.Fatalf("first exchange: %v", err)
			}
			_, err := e.c.ExchangeCode(ctx, "wxapp", "secret-1", code)
			return err
		}, 40163, wechat.ClassPermanent},
		{"a refresh_token after 30 days", func(t *testing.T, e simEnv) error {
			code, _ := e.sim.IssueCode("wxapp", "o-follower", "snsapi_base")
			ut, err := e.c.ExchangeCode(ctx, "wxapp", "secret-1", code)
			if err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(30 * 24 * time.Hour)
			_, err = e.c.RefreshOAuthToken(ctx, "wxapp", ut.RefreshToken)
			return err
		}, 42002, wechat.ClassPermanent},
		{"a grant reset (password change)", func(t *testing.T, e simEnv) error {
			code, _ := e.sim.IssueCode("wxapp", "o-follower", "snsapi_base")
			ut, err := e.c.ExchangeCode(ctx, "wxapp", "secret-1", code)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.sim.RevokeGrant("wxapp", "o-follower", wechatsim.GrantReset); err != nil {
				t.Fatal(err)
			}
			_, err = e.c.RefreshOAuthToken(ctx, "wxapp", ut.RefreshToken)
			return err
		}, 42007, wechat.ClassPermanent},
		{"101 profiles in one batch", func(t *testing.T, e simEnv) error {
			tok, err := e.c.Token(ctx, "wxapp", "secret-1")
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.c.BatchGetUserInfo(ctx, tok.Token, make([]wechat.UserRef, 101))
			return err
		}, 40032, wechat.ClassPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(t, newSim(t))
			wantCode(t, err, tt.code)
			if got := wechat.Classify(err); got != tt.class {
				t.Fatalf("Classify = %v, want %v", got, tt.class)
			}
		})
	}
}
