package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/gateway"
)

// fixedTokens stands for the wx_tokens watch (worker.TokenCache in wxhub).
type fixedTokens map[string]events.TokenRecord

func (f fixedTokens) Current(appid string) (events.TokenRecord, bool) {
	rec, ok := f[appid]
	return rec, ok
}

func (f fixedTokens) WaitNewer(ctx context.Context, appid string, v uint64) (events.TokenRecord, error) {
	if rec, ok := f[appid]; ok && rec.Version > v {
		return rec, nil
	}
	<-ctx.Done()
	return events.TokenRecord{}, ctx.Err()
}

// An SDK asks the gateway for a token with its client key: it gets a
// handle with the token's remaining life, and WeChat is not called.
func Example() {
	tokens := fixedTokens{"wxexample000001": {AppID: "wxexample000001", AccessToken: "the-real-token",
		Version: 7, ExpiresAt: time.Now().Add(2 * time.Hour)}}
	gw, err := gateway.New(gateway.Config{
		Tokens:  tokens,
		BaseURL: "https://api.weixin.qq.com",
		Apps:    []gateway.App{{AppID: "wxexample000001"}},
		Clients: []gateway.Client{{Name: "shop", Key: "shop-client-key-0123", AppIDs: []string{"*"}}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ask := func(key string) string {
		rec := httptest.NewRecorder()
		gw.Handler().ServeHTTP(rec, httptest.NewRequest("GET",
			"/cgi-bin/token?grant_type=client_credential&appid=wxexample000001&secret="+key, nil))
		b, _ := io.ReadAll(rec.Body)
		return string(b)
	}
	good := ask("shop-client-key-0123")
	fmt.Println(strings.Contains(good, `"access_token":"wxh1_`), strings.Contains(good, "the-real-token"), strings.Contains(good, `"expires_in":71`))
	fmt.Println(strings.SplitN(ask("a-wrong-key-0000000"), " rid:", 2)[0])
	// Output:
	// true false true
	// {"errcode":40125,"errmsg":"invalid appsecret (wxhub gateway: unknown client key)
}
