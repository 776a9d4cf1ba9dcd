// Package wechat is a typed client for the WeChat server API endpoints
// wxhub uses: the global access_token (cgi-bin/token and stable_token),
// follower profiles (cgi-bin/user/info and batchget), getcallbackip and
// get_api_domain_ip, and the web OAuth flow (sns/oauth2/access_token,
// refresh_token, sns/userinfo, sns/auth). Behaviour follows
// docs/wechat.md.
//
// Every call takes a context. WeChat's errors come back as *APIError
// (errcode and errmsg); network failures, timeouts, HTTP 5xx and non-JSON
// answers come back as *TransportError. Classify sorts any error into the
// classes of WeChat's error table (token, transient, quota, configuration,
// permanent, bug).
//
// Errors never contain the AppSecret, the global access_token or a user's
// tokens: those travel in query strings, and Go's *url.Error would print
// the whole URL, so the client reports only the endpoint path. Log
// Fingerprint(secret) when a secret must be identified.
package wechat
