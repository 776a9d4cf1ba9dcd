package wechat_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"

	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

func Example() {
	sim := wechatsim.New()
	srv := httptest.NewServer(sim)
	defer srv.Close()
	sim.AddApp("wxexample", "app-secret")

	c, _ := wechat.NewClient(wechat.Config{BaseURL: srv.URL})
	ctx := context.Background()
	tok, err := c.Token(ctx, "wxexample", "app-secret")
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = c.UserInfo(ctx, tok.Token, "not-a-follower", "en")
	var api *wechat.APIError
	if errors.As(err, &api) {
		fmt.Println(api.Code, wechat.Classify(err))
	}
	// Output: 40003 permanent
}
