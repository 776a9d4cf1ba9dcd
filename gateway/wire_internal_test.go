package gateway

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestScrubQueryHidesCredentials(t *testing.T) {
	tests := []struct{ in, want string }{
		{"access_token=T0KEN&openid=o1", "access_token=%5Bredacted%5D&openid=o1"},
		{"appid=wx1&secret=K&code=C&grant_type=authorization_code", "appid=wx1&code=%5Bredacted%5D&grant_type=authorization_code&secret=%5Bredacted%5D"},
		{"refresh_token=R&js_code=J&ticket=X", "js_code=%5Bredacted%5D&refresh_token=%5Bredacted%5D&ticket=%5Bredacted%5D"},
		{"", ""},
		{"%zz", "[unparsable]"},
	}
	for _, tt := range tests {
		if got := scrubQuery(tt.in); got != tt.want {
			t.Errorf("scrubQuery(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSetParamKeepsTheRestOfTheQuery(t *testing.T) {
	tests := []struct{ in, want string }{
		{"access_token=H&openid=o%2F1&lang=zh_CN", "access_token=REAL%2B&openid=o%2F1&lang=zh_CN"},
		{"openid=o1&access_token=H", "openid=o1&access_token=REAL%2B"},
		{"openid=o1", "openid=o1&access_token=REAL%2B"},
		{"", "access_token=REAL%2B"},
		{"access_token=H&access_token=H2&x=1", "access_token=REAL%2B&x=1"},
	}
	for _, tt := range tests {
		if got := setParam(tt.in, "access_token", "REAL+"); got != tt.want {
			t.Errorf("setParam(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNotPlain(t *testing.T) {
	tests := []struct {
		target string
		plain  bool
	}{
		{"/", true},
		{"/cgi-bin/user/info", true},
		{"/oauth/", true},
		{"/cgi-bin/user/info?next=%2F..%2F", true}, // the query is not the path
		{"/media/a%20b", true},                     // %20 is the default encoding of a space
		{"/cgi-bin%2Fuser", false},
		{"/cgi-bin/%75ser", false},
		{"/cgi-bin/%2e%2e/x", false},
		{"/a/../b", false},
		{"/a/..", false},
		{"/a/./b", false},
		{"/.", false},
		{"//cgi-bin/token", false},
		{"/a//b", false},
		{"/a%5Cb", false},
	}
	for _, tt := range tests {
		u, err := url.ParseRequestURI(tt.target)
		if err != nil {
			t.Fatal(err)
		}
		if why := notPlain(u); (why == "") != tt.plain {
			t.Errorf("notPlain(%q) = %q, want plain %v", tt.target, why, tt.plain)
		}
	}
}

func TestReplayableMirrorsTheTransport(t *testing.T) {
	tests := []struct {
		method, header string
		body, getBody  bool
		want           bool
	}{
		{"GET", "", false, false, true},
		{"HEAD", "", false, false, true},
		{"GET", "", true, true, true},
		{"GET", "", true, false, false},
		{"POST", "", true, true, false},
		{"POST", "", false, false, false},
		{"POST", "Idempotency-Key", true, true, true},
		{"POST", "X-Idempotency-Key", true, true, true},
		{"POST", "Idempotency-Key", true, false, false},
	}
	for _, tt := range tests {
		var body io.Reader
		if tt.body {
			body = strings.NewReader("{}")
		}
		r, _ := http.NewRequest(tt.method, "http://wechat.example/x", body)
		if !tt.getBody {
			r.GetBody = nil
		}
		if tt.header != "" {
			r.Header.Set(tt.header, "")
		}
		if got := replayable(r); got != tt.want {
			t.Errorf("replayable(%s, header %q, body %v, GetBody %v) = %v, want %v", tt.method, tt.header, tt.body, tt.getBody, got, tt.want)
		}
	}
}

func TestEscapedParamName(t *testing.T) {
	tests := []struct {
		query string
		plain bool
	}{
		{"", true},
		{"access_token=H&openid=o1", true},
		{"return_to=https%3A%2F%2Fshop.example%2F%3Fa%3D1&state=a+b", true}, // values may be escaped
		{"flag&x=", true},
		{"access%5Ftoken=H", false},
		{"openid=o1&s%65cret=K", false},
		{"access+token=H", false},
		{"a%20b=1", false},
		{"%=1", false},
	}
	for _, tt := range tests {
		if why := escapedParamName(tt.query); (why == "") != tt.plain {
			t.Errorf("escapedParamName(%q) = %q, want plain %v", tt.query, why, tt.plain)
		}
	}
}

func TestRepeatedParam(t *testing.T) {
	tests := []struct{ query, want string }{
		{"", ""},
		{"access_token=H&openid=o1&openid=o2&lang=zh_CN&lang=en", ""}, // not read: may repeat
		{"access_token=H&access_token=H", "access_token more than once; send it once"},
		{"secret=&secret=K", "secret more than once; send it once"},
		{"appid=a&x=1&appid", "appid more than once; send it once"},
		{"code=c1&state=s&code=c2", "code more than once; send it once"},
		{"js_code=j&js_code=j", "js_code more than once; send it once"},
		{"grant_type=a&grant_type=b", "grant_type more than once; send it once"},
		{"return_to=a&scope=s&state=t&return_to=b", "return_to more than once; send it once"},
		{"access_token=H&access_tokens=X&xaccess_token=Y", ""}, // other names
		{"&&access_token=H&&", ""},
	}
	for _, tt := range tests {
		if got := repeatedParam(tt.query); got != tt.want {
			t.Errorf("repeatedParam(%q) = %q, want %q", tt.query, got, tt.want)
		}
	}
	if len(readParams) > 32 {
		t.Fatalf("%d readParams: repeatedParam's bit set holds 32", len(readParams))
	}
}

func TestQueryNotPlain(t *testing.T) {
	tests := []struct{ query, want string }{
		{"", ""},
		{"access_token=H&openid=o1&note=a%3Bb", ""},
		{"openid=o1;secret=K", "a ';' in the query"},
		{"access_token=H;", "a ';' in the query"},
		{"openid=o1;access%5Ftoken=H&openid=o2", "a ';' in the query"},
		{"access%5Ftoken=H&access_token=H", "a parameter name with %"},
		{"secret=&secret=K", "secret more than once"},
	}
	for _, tt := range tests {
		if got := queryNotPlain(tt.query); !strings.HasPrefix(got, tt.want) || (tt.want == "") != (got == "") {
			t.Errorf("queryNotPlain(%q) = %q, want %q...", tt.query, got, tt.want)
		}
	}
}
