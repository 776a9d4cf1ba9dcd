package gateway

import "testing"

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
