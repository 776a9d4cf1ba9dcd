package wechat_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/wxhub/wxhub/wechat"
)

// TestUserInfoQuery: UserInfo builds its query by hand (no url.Values);
// it must be exactly what url.Values.Encode gives, for any token, openid
// and language, and lang defaults to zh_CN.
func TestUserInfoQuery(t *testing.T) {
	t.Parallel()
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.URL.RawQuery
		_, _ = w.Write([]byte(`{"subscribe":1,"openid":"o"}`))
	}))
	t.Cleanup(srv.Close)
	c, err := wechat.NewClient(wechat.Config{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ token, openid, lang, wantLang string }{
		{"tok-1", "o-follower", "en", "en"},
		{"a b&c=d+e/f?g#h%", "o_ü 1", "zh_TW", "zh_TW"},
		{"t", "o", "", "zh_CN"},
	} {
		if _, err := c.UserInfo(context.Background(), tc.token, tc.openid, tc.lang); err != nil {
			t.Fatalf("UserInfo(%q, %q, %q): %v", tc.token, tc.openid, tc.lang, err)
		}
		want := url.Values{"access_token": {tc.token}, "openid": {tc.openid}, "lang": {tc.wantLang}}.Encode()
		if q := <-got; q != want {
			t.Errorf("query %q, want %q", q, want)
		}
	}
}
