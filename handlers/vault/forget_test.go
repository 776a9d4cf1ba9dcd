package vault_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/handlers/vault"
	"github.com/wxhub/wxhub/wechat"
)

// WeChat answers 42002 for the old grant while the user logs in again:
// forgetting the dead record at the revision Fresh saw keeps the new
// login's record.
func TestForgetIfKeepsTheLoginStoredWhileTheRefreshWasRefused(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t)
	c := &clock{now: time.Now()}
	ctx := context.Background()
	v := openVault(t, env.JS, ring(t, keyLine(t, "k1")), c)
	if _, err := v.Store(ctx, "wxapp", "oAlice", tokens(c, 1)); err != nil {
		t.Fatal(err)
	}
	c.Advance(3 * time.Hour)
	var relogin vault.Record
	dead, _, err := v.Fresh(ctx, vault.FreshRequest{AppID: "wxapp", OpenID: "oAlice", RefreshTTL: time.Hour,
		Refresh: func(ctx context.Context, _ string) (wechat.OAuthToken, error) {
			var err error
			if relogin, err = v.Store(ctx, "wxapp", "oAlice", tokens(c, 2)); err != nil {
				t.Error(err)
			}
			return wechat.OAuthToken{}, &wechat.APIError{Code: wechat.CodeRefreshExpired, Msg: "refresh_token expired"}
		}})
	if wechat.ErrCode(err) != wechat.CodeRefreshExpired || dead.Revision == 0 || dead.Revision == relogin.Revision {
		t.Fatalf("Fresh = rev %d, %v; want 42002 at the revision before the new login (%d)", dead.Revision, err, relogin.Revision)
	}

	res, err := v.ForgetIf(ctx, "wxapp", "oAlice", dead.Revision)
	if err != nil || res != vault.ChangedMeanwhile {
		t.Fatalf("ForgetIf(the dead revision) = %v, %v; want %v", res, err, vault.ChangedMeanwhile)
	}
	got, err := v.Get(ctx, "wxapp", "oAlice")
	if err != nil || got.Tokens.RefreshToken != tokens(c, 2).RefreshToken {
		t.Fatalf("the new login's record after ForgetIf: %v, %v", got.Tokens, err)
	}

	// At the current revision it does delete.
	if res, err := v.ForgetIf(ctx, "wxapp", "oAlice", got.Revision); err != nil || res != vault.Forgotten {
		t.Fatalf("ForgetIf(current revision) = %v, %v; want %v", res, err, vault.Forgotten)
	}
	if _, err := v.Get(ctx, "wxapp", "oAlice"); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("after ForgetIf: %v, want ErrNotFound", err)
	}
	// Gone already: nothing to delete, not an error.
	if res, err := v.ForgetIf(ctx, "wxapp", "oAlice", got.Revision); err != nil || res != vault.ChangedMeanwhile {
		t.Fatalf("ForgetIf on a forgotten record = %v, %v", res, err)
	}
	if _, err := v.ForgetIf(ctx, "wxapp", "oAlice", 0); err == nil {
		t.Fatal("ForgetIf without a revision succeeded")
	}
}
