package wechat_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/wechat"
)

const (
	testSecret    = "S3cr3tAppSecretValue0123456789ab"
	testToken     = "GLOBAL_TOKEN_abcdefghijklmnopqrstuvwxyz_0123456789"
	testUserToken = "USER_TOKEN_zyxwvutsrqponmlkjihgfedcba_9876543210"
	testRefresh   = "REFRESH_TOKEN_qwertyuiopasdfghjkl_1357924680"
	testCode      = "CODE_0123456789abcdef"
)

// calls runs every secret-bearing endpoint against c.
func calls(ctx context.Context, c *wechat.Client) map[string]error {
	errs := map[string]error{}
	_, errs["token"] = c.Token(ctx, "wxapp", testSecret)
	_, errs["stable_token"] = c.StableToken(ctx, "wxapp", testSecret, true)
	_, errs["user/info"] = c.UserInfo(ctx, testToken, "openid1", "")
	_, errs["batchget"] = c.BatchGetUserInfo(ctx, testToken, []wechat.UserRef{{OpenID: "o"}})
	_, errs["getcallbackip"] = c.CallbackIP(ctx, testToken)
	_, errs["oauth exchange"] = c.ExchangeCode(ctx, "wxapp", testSecret, testCode)
	_, errs["oauth refresh"] = c.RefreshOAuthToken(ctx, "wxapp", testRefresh)
	_, errs["sns/userinfo"] = c.SNSUserInfo(ctx, testUserToken, "openid1", "")
	errs["sns/auth"] = c.CheckSNSToken(ctx, testUserToken, "openid1")
	return errs
}

func assertNoSecrets(t *testing.T, errs map[string]error, wantClass wechat.Class) {
	t.Helper()
	for name, err := range errs {
		if err == nil {
			t.Errorf("%s: want an error, got nil", name)
			continue
		}
		// Print the error every way a caller might.
		text := fmt.Sprintf("%v | %+v | %#v | %s", err, err, err, errors.Unwrap(err))
		for _, s := range []string{testSecret, testToken, testUserToken, testRefresh, testCode} {
			if strings.Contains(text, s) {
				t.Errorf("%s: error leaks a secret: %s", name, text)
			}
		}
		if got := wechat.Classify(err); got != wantClass {
			t.Errorf("%s: Classify = %v, want %v (%v)", name, got, wantClass, err)
		}
	}
}

func TestErrorsNeverLeakSecrets(t *testing.T) {
	t.Run("network error", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close() // nothing listens: connection refused
		c, err := wechat.NewClient(wechat.Config{BaseURL: "http://" + addr})
		if err != nil {
			t.Fatal(err)
		}
		assertNoSecrets(t, calls(context.Background(), c), wechat.ClassTransient)
	})
	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body) // so the server notices the client leaving
			select {                    // never answers before the client gives up
			case <-r.Context().Done():
			case <-release:
			}
		}))
		defer srv.Close()
		defer close(release)
		c, err := wechat.NewClient(wechat.Config{BaseURL: srv.URL, Timeout: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		errs := calls(context.Background(), c)
		assertNoSecrets(t, errs, wechat.ClassTransient)
		for name, err := range errs {
			var te *wechat.TransportError
			if !errors.As(err, &te) || !te.Timeout {
				t.Errorf("%s: want a timeout TransportError, got %v", name, err)
			}
		}
	})
	t.Run("WeChat error echoing the request", func(t *testing.T) {
		// A hostile or buggy server that echoes the query into errmsg.
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `{"errcode":40001,"errmsg":"invalid credential %s rid: 1"}`, strings.ReplaceAll(r.URL.RawQuery, `"`, ""))
		}))
		defer srv.Close()
		c, err := wechat.NewClient(wechat.Config{BaseURL: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		assertNoSecrets(t, calls(context.Background(), c), wechat.ClassToken)
	})
	t.Run("HTTP 502", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "bad gateway "+r.URL.RawQuery, http.StatusBadGateway)
		}))
		defer srv.Close()
		c, _ := wechat.NewClient(wechat.Config{BaseURL: srv.URL})
		assertNoSecrets(t, calls(context.Background(), c), wechat.ClassTransient)
	})
	t.Run("non-JSON 200", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "<html>"+r.URL.RawQuery+"</html>")
		}))
		defer srv.Close()
		c, _ := wechat.NewClient(wechat.Config{BaseURL: srv.URL})
		errs := calls(context.Background(), c)
		assertNoSecrets(t, errs, wechat.ClassTransient)
		if !strings.Contains(errs["user/info"].Error(), "not the expected JSON") {
			t.Errorf("message should say the answer is not JSON: %v", errs["user/info"])
		}
	})
}

func TestCancelledCallIsNotTransient(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	defer close(release)
	c, _ := wechat.NewClient(wechat.Config{BaseURL: srv.URL})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.UserInfo(ctx, testToken, "o", "")
	if !errors.Is(err, context.Canceled) || wechat.Classify(err) != wechat.ClassNone {
		t.Fatalf("err = %v, class %v", err, wechat.Classify(err))
	}
}

func TestNewClientRejectsBadBaseURL(t *testing.T) {
	for _, u := range []string{"ftp://x", "not a url", "http://"} {
		if _, err := wechat.NewClient(wechat.Config{BaseURL: u}); err == nil {
			t.Errorf("NewClient(%q): want error", u)
		}
	}
}
