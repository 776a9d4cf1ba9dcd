// Package wechatsim is an in-memory stand-in for api.weixin.qq.com: an
// http.Handler that answers the endpoints wxhub uses the way WeChat does
// (docs/wechat.md), with knobs for latency, injected faults, a
// controllable clock and per-endpoint call statistics.
//
// Use it from tests with httptest:
//
//	sim := wechatsim.New(wechatsim.WithClock(wechatsim.NewManualClock(start)))
//	sim.AddApp("wx0123456789abcdef", "secret")
//	srv := httptest.NewServer(sim)
//
// or as a process (wxhub sim --listen 127.0.0.1:PORT, or Run in a program
// of your own), driven over HTTP through the admin API under /_sim/ (apps,
// followers, codes, faults, latency, stats, clock).
//
// # Choices where WeChat's documentation is silent
//
//   - A superseded /cgi-bin/token token stays valid until min(its expiry,
//     supersede time + 300 s). A token retired before its natural expiry
//     answers 40001 afterwards; one that lived to its natural expiry answers
//     42001.
//   - stable_token with force_refresh=true retires the previous stable token
//     immediately (40001 from then on). At most 20 forced refreshes per
//     China day (the 21st answers 45009); a force within 30 s of the last
//     forced refresh returns the current token and its remaining lifetime
//     without counting.
//   - Quotas (quota.go) are per app and per China calendar day (UTC+8) of
//     the simulator's clock. /cgi-bin/token counts successful fetches
//     (2000 a day); /cgi-bin/stable_token counts successful answers
//     (500,000 a day, then 45009; 10,000 a calendar minute, then 45011);
//     user/info, batchget, getcallbackip and get_api_domain_ip count every
//     call with a valid access_token and have no limit unless
//     SetDailyLimit sets one. A refused call is not counted.
//   - /cgi-bin/clear_quota {"appid"} (the token's own appid, else 40013)
//     zeroes the day's counts above, not the forced stable_token
//     refreshes; the 11th clear in a China calendar month answers 48006.
//   - /cgi-bin/openapi/quota/get {"cgi_path"} answers errcode 0, errmsg
//     ok, quota {daily_limit, used, remain} (0 and 0 for a path without a
//     limit) and rate_limit {call_count, refresh_second} (10000 and 60 for
//     stable_token, else 0 and 0); a path the simulator does not count
//     (the /sns/ paths among them) answers 76021.
//   - lang on user/info and sns/userinfo may be zh_CN, zh_TW or en; any other
//     value is treated as zh_CN (WeChat no longer localises these answers).
//   - GET endpoints also accept POST (parameters in the query), like WeChat;
//     stable_token, user/info/batchget, clear_quota and quota/get need
//     POST, else 43002.
//   - /sns/oauth2/access_token without a code answers 41008 "missing code";
//     a code that is used is reported as 40163 even once it has expired.
//   - A fault with both count and rate fires on that fraction of matching
//     calls and removes itself after count firings. A 40164 fault names
//     the caller's address as WeChat does ("invalid ip X ipv6 ::ffff:X,
//     not in whitelist"; an IPv6 caller's address twice).
//   - Users' OAuth tokens follow the sim clock: an access_token lives
//     7200 s; /sns/oauth2/refresh_token on an unexpired one keeps its
//     value and extends it to 7200 s from now, on an expired one issues a
//     new value; the refresh_token itself is never extended and answers
//     42002 once 30 days (SetRefreshLifetime, e.g. 180 for mobile apps)
//     have passed since the login.
//   - RevokeGrant ends a user's grants: "revoked" (the user cancelled)
//     makes their access tokens answer 40001 and refresh tokens 40030;
//     "reset" (password change) makes both answer 42007. A later login
//     starts a new grant.
//   - Unknown paths answer a plain-text 404.
//   - The browser pages /connect/oauth2/authorize and /connect/qrconnect
//     (open.weixin.qq.com) check, in this order: parameter order (appid,
//     redirect_uri, response_type, scope, state; 10001), appid (missing
//     10012, unknown 40013), redirect_uri (missing 10011; its host must
//     equal a registered OAuth domain, SetOAuthDomains, else 10003; a
//     domain with a port must match host:port), response_type=code
//     (10001), scope (missing 10010; snsapi_base|snsapi_userinfo for an
//     official account on /connect/oauth2/authorize, snsapi_login for a
//     website app on /connect/qrconnect, else 10005) and state
//     ([a-zA-Z0-9]{0,128}, 10013). Errors are an HTML page with the code,
//     status 400. The #wechat_redirect fragment never reaches a server,
//     so it cannot be checked.
//   - snsapi_base redirects at once with a code; snsapi_userinfo and
//     qrconnect show a consent page whose allow button redirects with a
//     code and whose refuse button redirects with the state only. The
//     page's form carries a single-use ticket (10 minutes). A subscribed
//     follower who opened the link from the account's menu or chat
//     (LoggedInUser.FromAccount, cookie wxsim_from_account=1) is not
//     asked for snsapi_userinfo: the redirect comes at once.
//   - The logged-in user is the browser's wxsim_openid cookie (and
//     wxsim_snapshot=1, wxsim_from_account=1), else LogIn for the app,
//     else LogIn for every app (""), else an error page. A snapshot-page visitor is never asked:
//     the code is for VirtualOpenID(appid, openid), scope snsapi_base,
//     is_snapshotuser=1 at the exchange.
//   - Website-app codes (snsapi_login) live 10 minutes and their user
//     tokens may call /sns/userinfo.
//
// # Admin API
//
// JSON over HTTP under /_sim/ (never delayed, never faulted). Bad input
// answers 400 {"error":"..."} naming the problem; a wrong method 405.
//
//	POST   /_sim/apps      {"appid","secret","token_daily_limit"?,"bound_to_open_platform"?,"refresh_token_days"?} → 201 {"appid"}
//	POST   /_sim/followers {"appid","openid",...Follower fields,"follower"?} → 201 {"appid","openid"}
//	                       ("follower":false records an SNS-only user, see AddSNSUser)
//	POST   /_sim/codes     {"appid","openid","scope","is_snapshotuser"?} → 200 {"code"}
//	POST   /_sim/oauth/apps {"appid","domains":[...],"website"?} → 200 (OAuth domains, website app)
//	POST   /_sim/oauth/user {"appid"?,"openid","is_snapshotuser"?,"from_account"?} → 200 (the logged-in user; no appid: every app)
//	DELETE /_sim/oauth/user?appid=A → 204
//	POST   /_sim/grants/revoke {"appid","openid","how"?: "revoked"|"reset"} → 200 {"revoked": n}
//	GET    /_sim/faults    → 200 {"faults":[...]}
//	POST   /_sim/faults    Fault → 201 Fault
//	DELETE /_sim/faults    → 204
//	GET    /_sim/latency   → 200 {"ms"};  POST {"ms"} → 200 {"ms"}
//	GET    /_sim/stats     → 200 Stats;   DELETE → 204
//	GET    /_sim/clock     → 200 {"now"}; POST {"advance_ms"} → 200 {"now"}, 409 unless a ManualClock is in use
//
// Secrets (AppSecrets, tokens, codes) are never logged; only short SHA-256
// fingerprints are.
package wechatsim
