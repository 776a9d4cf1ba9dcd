package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Errors the gateway answers itself, shaped like WeChat's so that SDKs
// handle them as they would WeChat's (HTTP 200, errcode, errmsg with a rid).
const (
	errSystem       = -1    // WeChat unreachable or a token not available in time
	errBadGrant     = 40002 // grant_type is not client_credential
	errInvalidToken = 40001 // not a handle (or real token) this gateway knows
	errAppID        = 40013 // appid not configured
	errSecret       = 40125 // wrong client key, or an app the client may not use
	errTokenMissing = 41001 // no access_token
	errPostOnly     = 43002
	errMinuteQuota  = 45011 // the client's rate limit
	errBadJSON      = 47001
	errUnauthorized = 48001 // a path the client may not call
	errTooBig       = 45001 // the request body is over the gateway's limit
)

var errMsgs = map[int]string{
	errSystem:       "system error",
	errBadGrant:     "invalid grant_type",
	errInvalidToken: "invalid credential, access_token is invalid or not latest",
	errAppID:        "invalid appid",
	errSecret:       "invalid appsecret",
	errTokenMissing: "access_token missing",
	errPostOnly:     "require POST method",
	errMinuteQuota:  "api minute-quota reach limit mustslower retry next minute",
	errBadJSON:      "data format error",
	errUnauthorized: "api unauthorized",
	errTooBig:       "multimedia file size out of limit",
}

// rid is a request id in WeChat's form: unix time in hex, then two random
// groups of 8 hex digits.
func rid(now time.Time) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return fmt.Sprintf("%08x-%s-%s", now.Unix(), h[:8], h[8:])
}

// writeError answers {"errcode":code,"errmsg":"<msg>[ (wxhub: why)] rid: ..."}.
func (g *Gateway) writeError(w http.ResponseWriter, code int, why string) {
	msg := errMsgs[code]
	if why != "" {
		msg += " (wxhub gateway: " + why + ")"
	}
	writeJSON(w, map[string]any{"errcode": code, "errmsg": msg + " rid: " + rid(g.cfg.Now())})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; encoding=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

// sensitive reports whether a query parameter carries a credential: its
// value never reaches a log.
func sensitive(name string) bool {
	n := strings.ToLower(name)
	for _, s := range []string{"token", "secret", "key", "code", "ticket", "password", "sign"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// scrubQuery returns q with the values of credential parameters replaced.
func scrubQuery(raw string) string {
	if raw == "" {
		return ""
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return "[unparsable]"
	}
	for k := range q {
		if sensitive(k) {
			q[k] = []string{"[redacted]"}
		}
	}
	return q.Encode()
}

func unescape(s string) (string, error) { return url.QueryUnescape(s) }
