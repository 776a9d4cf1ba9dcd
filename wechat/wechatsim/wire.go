package wechatsim

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	mrand "math/rand/v2"
)

// WeChat error codes the simulator answers.
const (
	codeSystemError        = -1
	codeInvalidCred        = 40001
	codeInvalidGrant       = 40002
	codeInvalidOpenID      = 40003
	codeInvalidAppID       = 40013
	codeInvalidToken       = 40014
	codeInvalidCode        = 40029
	codeInvalidRefresh     = 40030
	codeInvalidListSize    = 40032
	codeInvalidSecret      = 40125
	codeCodeUsed           = 40163
	codeIPNotWhitelisted   = 40164
	codeTokenMissing       = 41001
	codeMissingCode        = 41008
	codeTokenExpired       = 42001
	codeRefreshExpired     = 42002
	codeTokenRefreshBroken = 42007
	codeRequirePOST        = 43002
	codeDailyQuota         = 45009
	codeMinuteQuota        = 45011
	codeDataFormat         = 47001
	codeUnauthorized       = 48001
	codeClearQuotaLimit    = 48006
	codeCGIPathNotFound    = 76021
)

var errMessages = map[int]string{
	codeSystemError:        "system error",
	codeInvalidCred:        "invalid credential, access_token is invalid or not latest, could get access_token by getStableAccessToken, more details at https://mmbizurl.cn/s/JtxxFh33r",
	codeInvalidGrant:       "invalid grant_type",
	codeInvalidOpenID:      "invalid openid",
	codeInvalidAppID:       "invalid appid",
	codeInvalidToken:       "invalid access_token",
	codeInvalidCode:        "invalid code",
	codeInvalidRefresh:     "invalid refresh_token",
	codeInvalidListSize:    "invalid openid list size",
	codeInvalidSecret:      "invalid appsecret",
	codeIPNotWhitelisted:   "invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1, not in whitelist",
	codeCodeUsed:           "code been used",
	codeTokenMissing:       "access_token missing",
	codeMissingCode:        "missing code",
	codeTokenExpired:       "access_token expired",
	codeRefreshExpired:     "refresh_token expired",
	codeTokenRefreshBroken: "access_token and refresh_token exception",
	codeRequirePOST:        "require POST method",
	codeDailyQuota:         "reach max api daily quota limit",
	codeMinuteQuota:        "api minute-quota reach limit mustslower retry next minute",
	codeDataFormat:         "data format error",
	codeUnauthorized:       "api unauthorized",
	codeClearQuotaLimit:    "forbid to clear quota because of reaching the limit",
	codeCGIPathNotFound:    "cgi_path not found, please check",
	50001:                  "user unauthorized",
}

// ErrMsg returns the errmsg WeChat sends for code, without the rid suffix
// (for 40164, as a caller at 127.0.0.1 would see it).
func ErrMsg(code int) string {
	if m, ok := errMessages[code]; ok {
		return m
	}
	return "simulated error"
}

// errMsgFor is ErrMsg(code) as r's caller sees it: 40164 names the
// caller's address, the one to add to the IP whitelist.
func errMsgFor(code int, r *http.Request) string {
	if code != codeIPNotWhitelisted {
		return ErrMsg(code)
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return ErrMsg(code)
	}
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		return "invalid ip " + ip.String() + " ipv6 ::ffff:" + ip.String() + ", not in whitelist"
	}
	return "invalid ip " + ip.String() + " ipv6 " + ip.String() + ", not in whitelist"
}

var jsonContentType = []string{"application/json; encoding=utf-8"}

func writeJSONBytes(w http.ResponseWriter, b []byte) {
	w.Header()["Content-Type"] = jsonContentType
	_, _ = w.Write(b)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSONBytes(w, b)
}

// rid returns a WeChat-style request id: unix time, then two random
// groups, each 8 lowercase hex digits.
func rid(now time.Time) string {
	b := make([]byte, 0, 26)
	b = appendHex8(b, uint32(now.Unix()))
	b = append(b, '-')
	b = appendHex8(b, mrand.Uint32())
	b = append(b, '-')
	b = appendHex8(b, mrand.Uint32())
	return string(b)
}

func appendHex8(b []byte, v uint32) []byte {
	const digits = "0123456789abcdef"
	for i := 28; i >= 0; i -= 4 {
		b = append(b, digits[(v>>uint(i))&0xf])
	}
	return b
}

// errBody is {"errcode":N,"errmsg":"<msg> rid: ..."}.
func errBody(code int, m string, now time.Time) []byte {
	b := make([]byte, 0, 96)
	b = append(b, `{"errcode":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"errmsg":`...)
	msg, _ := json.Marshal(m + " rid: " + rid(now))
	b = append(b, msg...)
	return append(b, '}')
}

var okBody = []byte(`{"errcode":0,"errmsg":"ok"}`)

// param returns the (unescaped) first value of key in a raw query string
// without building a url.Values map.
func param(raw, key string) string {
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != key {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			if u, err := url.QueryUnescape(v); err == nil {
				return u
			}
			return "\x00" // undecodable: malformed
		}
		return v
	}
	return ""
}

const tokenAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

// randomToken returns prefix followed by n random characters of
// [A-Za-z0-9_-].
func randomToken(prefix string, n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	for i, c := range buf {
		buf[i] = tokenAlphabet[c&63]
	}
	return prefix + string(buf)
}

// wellFormed reports whether t looks like a WeChat token: 16..2048
// characters of [A-Za-z0-9_-].
func wellFormed(t string) bool {
	if len(t) < 16 || len(t) > 2048 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
