package wechat

import (
	"errors"
	"strings"
	"testing"
)

const fuzzSecret = "FUZZSECRETvalue0123456789"

// answerKinds are the answer types the client decodes, by endpoint.
var answerKinds = []struct {
	path string
	out  func() withStatus
	post func(withStatus) error // the endpoint's own checks after decoding
}{
	{PathToken, func() withStatus { return &tokenAnswer{} }, func(a withStatus) error { _, err := a.(*tokenAnswer).token(PathToken); return err }},
	{PathUserInfo, func() withStatus { return &userInfoAnswer{} }, nil},
	{PathOAuthToken, func() withStatus { return &oauthAnswer{} }, func(a withStatus) error { _, err := a.(*oauthAnswer).token(PathOAuthToken); return err }},
	{PathSNSAuth, func() withStatus { return &status{} }, nil},
}

// FuzzDecodeAnswer feeds arbitrary bodies to the response decoder: it must
// never panic, classify every error, and never put the secret in an error
// even when the body echoes it.
func FuzzDecodeAnswer(f *testing.F) {
	seeds := []string{
		`{"access_token":"ACCESS_TOKEN","expires_in":7200}`,
		`{"errcode":40013,"errmsg":"invalid appid rid: 617682e0-09059ac5-34a8e2ea"}`,
		`{"errcode":-1,"errmsg":"system error"}`,
		`{"errcode":40001,"errmsg":"invalid credential FUZZSECRETvalue0123456789"}`,
		`{"errcode":40001,"errmsg":"\u0046UZZSECRETvalue0123456789"}`,
		`{"subscribe":1,"openid":"o1","tagid_list":[1,2],"qr_scene":98765}`,
		`{"subscribe":"1"}`,
		`{"access_token":"AT","expires_in":7200,"refresh_token":"RT","openid":"o","scope":"snsapi_base","is_snapshotuser":1}`,
		`{"errcode":0,"errmsg":"ok"}`,
		`<html>502 Bad Gateway</html>`,
		``, `null`, `[]`, `{"errcode":1e400}`, `{"expires_in":-5,"access_token":"x"}`,
	}
	for i, s := range seeds {
		f.Add(uint8(i), []byte(s))
	}
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		k := answerKinds[int(kind)%len(answerKinds)]
		out := k.out()
		err := decodeAnswer(k.path, 200, body, out, []string{fuzzSecret})
		if err == nil && k.post != nil {
			err = k.post(out)
		}
		if err == nil {
			return
		}
		if strings.Contains(err.Error(), fuzzSecret) {
			t.Fatalf("error leaks the secret: %v", err)
		}
		var api *APIError
		var te *TransportError
		switch {
		case errors.As(err, &api):
			if api.Code == 0 {
				t.Fatalf("APIError with errcode 0: %v", err)
			}
		case errors.As(err, &te):
			if Classify(err) != ClassTransient {
				t.Fatalf("TransportError not transient: %v", err)
			}
		default:
			t.Fatalf("error of unexpected type %T: %v", err, err)
		}
	})
}
