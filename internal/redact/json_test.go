package redact_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/wxhub/wxhub/internal/redact"
	"github.com/wxhub/wxhub/wechat"
)

func fp(s string) string { return redact.FingerprintPrefix + wechat.Fingerprint(s) }

func TestJSONMasksCredentialsAndKeepsTheRest(t *testing.T) {
	cases := []struct {
		name, in string
		secrets  []string // must not appear
		want     []string // must appear, in this order
	}{
		{"oauth job", `{"job_id":"j-1","appid":"wx1","code":"0a1B2c-CODE","state":"n0nce","lang":"en"}`,
			[]string{"0a1B2c-CODE"},
			[]string{`"job_id": "j-1"`, `"appid": "wx1"`, `"code": "` + fp("0a1B2c-CODE") + `"`, `"state": "n0nce"`, `"lang": "en"`}},
		{"misspelt and nested credentials of a rejected job", `{"job_id":"j-2","Code":"C-1","extra":{"refresh_token":"RT-1","list":[{"access_token":"AT-1"}]},"app_secret":"S-1","clientKey":"K-1"}`,
			[]string{"C-1", "RT-1", "AT-1", "S-1", "K-1"},
			[]string{`"job_id": "j-2"`, fp("C-1"), fp("RT-1"), fp("AT-1"), fp("S-1"), fp("K-1")}},
		{"a credential that is not a string", `{"code":{"v":"C-2"},"token":12345678}`,
			[]string{"C-2", "12345678"},
			[]string{`"code": "` + fp(`{"v":"C-2"}`) + `"`, `"token": "` + fp("12345678") + `"`}},
		{"a member twice", `{"code":"C-3","code":"C-4"}`,
			[]string{"C-3", "C-4"},
			[]string{fp("C-3"), fp("C-4")}},
		{"other values as they were", `{"n":1.50,"b":true,"z":null,"s":"<a&b>","a":[1,"x"]}`,
			nil,
			[]string{`"n": 1.50`, `"b": true`, `"z": null`, `"s": "<a&b>"`, `"a": [`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := redact.JSON([]byte(c.in))
			if err != nil {
				t.Fatal(err)
			}
			got := string(out)
			for _, s := range c.secrets {
				if strings.Contains(got, s) {
					t.Errorf("%q left in:\n%s", s, got)
				}
			}
			rest := got
			for _, w := range c.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("%q missing (or out of order) in:\n%s", w, got)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

// Data that is not one JSON object is refused whole: neither the result
// nor the error holds any of it.
func TestJSONRefusesWhatIsNotOneObject(t *testing.T) {
	const code = "C0DE-in-a-broken-job"
	for _, in := range []string{
		`{"job_id":"j","code":"` + code, // truncated inside the code
		`{"job_id":"j","code":"` + code + `"`,
		`{"code":"` + code + `"} {"code":"` + code + `"}`,
		`{"code":"` + code + `"} trailing ` + code,
		`"` + code + `"`,
		`["` + code + `"]`,
		code,
		``,
	} {
		out, err := redact.JSON([]byte(in))
		if !errors.Is(err, redact.ErrNotJSONObject) || out != nil {
			t.Errorf("JSON(%q) = %q, %v; want ErrNotJSONObject", in, out, err)
			continue
		}
		if strings.Contains(err.Error(), code) {
			t.Errorf("the error quotes the data: %v", err)
		}
	}
}

func TestSecretName(t *testing.T) {
	for name, want := range map[string]bool{
		"code": true, "Code": true, "oauth_code": true, "access_token": true, "refresh_token": true,
		"AppSecret": true, "secret": true, "client-key": true, "session_key": true, "password": true, "jsapi_ticket": true,
		"job_id": false, "appid": false, "openid": false, "unionid": false, "state": false, "lang": false, "scope": false,
	} {
		if got := redact.SecretName(name); got != want {
			t.Errorf("SecretName(%q) = %v, want %v", name, got, want)
		}
	}
}
