package gateway

import "strings"

// The front's checks of the raw query (see Gateway.front). A query that
// the gateway and WeChat, or a proxy between them, could read
// differently is refused with 48001 before any routing: before a token
// is attached, a client key checked or swapped for the AppSecret, or a
// mounted handler (the web login) reads it.

// readParams are the query parameters the gateway, or the web login on
// its front, reads, rewrites or forwards with a credential attached. Each
// may appear at most once (queryParam and url.Values.Get read the first;
// WeChat or a proxy may read the last). Any other name (openid, lang,
// type, ...) may repeat: the gateway neither reads nor rewrites it, so
// WeChat gets it as the client sent it, and what it makes of it is the
// client's business.
var readParams = [...]string{
	"access_token", // a handle, replaced by the real token; on /sns the user's token
	"secret",       // a client key: checked; on the code exchanges replaced by the AppSecret
	"appid",        // the app whose token or AppSecret is used
	"grant_type",   // checked by /cgi-bin/token; the code exchanges forward it with the AppSecret
	"code",         // the OAuth code (single use) sent with the AppSecret; the web login's callback
	"js_code",      // a mini program's code, sent with the AppSecret
	"state",        // the web login's (authorize, callback)
	"scope",        // the web login's authorize
	"return_to",    // the web login's authorize: where the browser is sent back
}

// queryNotPlain says why a raw query is refused, or "" when it is not:
// a ';' (semicolonInQuery), an escaped parameter name (escapedParamName)
// or a parameter of readParams more than once (repeatedParam).
func queryNotPlain(raw string) string {
	if raw == "" {
		return ""
	}
	if why := semicolonInQuery(raw); why != "" {
		return why
	}
	if why := escapedParamName(raw); why != "" {
		return why
	}
	return repeatedParam(raw)
}

// semicolonInQuery says why a raw query with a ';' (in a name or a
// value) is refused, or "" without one. Some servers and proxies split
// parameters on ';' as on '&'; the gateway does not (queryParam), and Go's
// url.ParseQuery drops such a pair (the token endpoint): so
// "openid=o1;secret=K" would pass the gateway as a call without a client
// key and reach WeChat as two parameters. WeChat's APIs separate
// parameters with '&' only, and SDKs escape a ';' in a value (%3B).
func semicolonInQuery(raw string) string {
	if strings.Contains(raw, ";") {
		return "a ';' in the query; separate parameters with '&' and escape a ';' in a value as %3B"
	}
	return ""
}

// escapedParamName says why a raw query has a parameter name that is not
// plain (one with '%' or '+', so that it means something else once
// decoded), or "" when every name is plain. The gateway finds
// access_token and secret by their names as sent, while WeChat decodes
// them: access%5Ftoken or s%65cret would go unnoticed by the gateway and
// reach WeChat as access_token or secret. WeChat's parameter names never
// need an escape; values may be escaped as usual.
func escapedParamName(raw string) string {
	for raw != "" {
		var p string
		p, raw, _ = strings.Cut(raw, "&")
		k, _, _ := strings.Cut(p, "=")
		if strings.ContainsAny(k, "%+") {
			return "a parameter name with % or +; send parameter names unescaped"
		}
	}
	return ""
}

// repeatedParam says which parameter of readParams the raw query has
// more than once (with or without a value), or "". Names are compared as
// sent: escapedParamName has refused escaped ones.
func repeatedParam(raw string) string {
	var seen uint32 // bit i: readParams[i] seen
	for raw != "" {
		var p string
		p, raw, _ = strings.Cut(raw, "&")
		k, _, _ := strings.Cut(p, "=")
		i := readParamIndex(k)
		if i < 0 {
			continue
		}
		if seen&(1<<i) != 0 {
			return k + " more than once; send it once"
		}
		seen |= 1 << i
	}
	return ""
}

// readParamIndex is name's index in readParams, or -1.
func readParamIndex(name string) int {
	for i, p := range readParams {
		if p == name {
			return i
		}
	}
	return -1
}
