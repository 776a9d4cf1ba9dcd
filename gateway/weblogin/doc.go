// Package weblogin is the browser half of WeChat's web OAuth flow, as an
// http.Handler for the gateway's HTTP front:
//
//	GET /oauth/authorize?appid=A&scope=snsapi_base|snsapi_userinfo&return_to=URL[&state=S]
//	GET /oauth/callback?code=C&state=N
//
// Authorize checks the app, the scope and return_to (against the app's
// allow-list: exact origin, path prefix), stores a State under a fresh
// random nonce in the KV bucket wx_login_state (StateStore, 10 minutes)
// with a random job id, sets a login cookie on the browser (a fresh
// 32-byte secret; the State keeps only its SHA-256) and redirects (302)
// to open.weixin.qq.com with WeChat's parameter order
// and the #wechat_redirect fragment (/connect/qrconnect and snsapi_login
// for website apps). Bad input gets a 400 page saying which. The logins
// started are limited per client (ClientRate, default 5 a second, burst
// 20; a client is an IPv4 address or an IPv6 /64) and, all browsers
// together (AuthorizeRate, default 50 a second, burst 100): over either,
// the same 429 page (Retry-After: 1), and nothing is stored. The client's
// own limit is asked first, so a client over it spends nothing of
// everybody's budget. The client is the peer (RemoteAddr); only when the
// peer is one of TrustedProxies (none by default) is it the rightmost
// X-Forwarded-For address that is not a trusted proxy. The table of
// per-client limiters is bounded (MaxClients, default 10,000): a limiter
// idle until its burst is full again is dropped, and a full table drops
// the one used least recently (see clientlimit.Table for why not "global
// limit only" when full).
//
// Callback accepts the nonce only from the browser that started the login:
// without that login's cookie, or with another secret in it, it answers
// 403 and leaves the state in place (login CSRF / state fixation: an
// attacker's WeChat URL opened by a victim is refused, the victim's code
// is never exchanged). It takes the nonce exactly once (read, then a
// revision-checked delete: of any number of concurrent or replayed
// callbacks one proceeds, the others get 400 and publish nothing; a
// browser reload is a replay, except after a job surely not published,
// below), clears the cookie, publishes
// oauth.code.received with the State's job id as job_id and Nats-Msg-Id
// and CorrelationID(the business's state), the hex SHA-256 of it, as
// Wx-Correlation-Id (the result carries it back: a business trusts a
// result only when it equals the hash of its session's state), waits (bounded) for the result, and redirects to return_to
// with wxhub_job, the business's state and error: access_denied when the
// user refused (no code), timeout when no result came in time, or the
// failure's kind.
//
// Choices where WeChat and the contract are silent:
//   - The nonce is crypto/rand.Text (26 base32 characters, 130 bits).
//   - The job id is "weblogin-" and 32 hex digits from crypto/rand, chosen
//     at authorize and kept in the State: it cannot be computed from the
//     nonce, which travels in WeChat's URLs.
//   - The login cookie is one per login (named wxhub_login_ and a digest of
//     the nonce, so two tabs can log in at once), HttpOnly, SameSite=Lax
//     (the callback is a top-level cross-site GET from WeChat), Max-Age the
//     state TTL. Over an https callback base it is __Host-wxhub_login_…,
//     Secure, Path=/ (the prefix requires /; it keeps sibling subdomains
//     from planting one); over http (the local demo) Path is the
//     callback's path and it is not Secure. /oauth/authorize must be
//     reached on the callback base's host, or the callback never sees it.
//   - A callback without the right cookie does not consume the state: the
//     code it carries is not exchanged either way, and the browser that
//     started the login can still finish it; consuming would only let
//     whoever sees the URL cancel someone's login.
//   - An expired state (older than the TTL by the store's clock, even if
//     the bucket still holds it) is consumed and refused.
//   - The job's state field carries the nonce (the state that came back
//     with the code); the business's state never leaves the store except
//     on the final redirect.
//   - return_to's own query is kept byte for byte, in its order (flags
//     without '=', ';' within pairs, its escaping); parameters named
//     wxhub_job, state or error (also as ';'-separated parts) are
//     dropped, and ours are appended after it.
//   - A job that surely was not published (the connection closed, no
//     stream took it at any attempt, the reconnect buffer full, JetStream
//     refused it: ErrNotPublished) did nothing with the code, which WeChat
//     keeps for 5 minutes: the state is put back under its nonce
//     (StateStore.Restore, the same CreatedAt) and the browser gets a 503
//     page (Retry-After: 5, the login cookie kept, no wxhub_job) asking
//     it to reload; the reload is the callback again, with the same code
//     and job id. A link on the page goes to return_to with
//     error=temporarily_unavailable. Only if the state cannot be put back
//     does the callback send the browser there itself, cookie cleared.
//   - NATSJobs retries a publish no stream took (no responders) itself,
//     2 more times 250 ms apart while the wait leaves room: every attempt
//     had no responders, so a wait that ends between attempts is still
//     ErrNotPublished, never "may have been stored".
//   - A publish not acknowledged within the wait (ErrNotAcknowledged: a
//     timeout, e.g. during a NATS reconnect, when nats.go keeps the
//     message in its reconnect buffer and sends it when NATS returns) may
//     still run: it ends like a wait timeout, error=timeout with
//     wxhub_job, so the business can fetch the result by that id (it is
//     fixed, and JetStream dedupes a republish).
//
// The callback logs a fingerprint of the job id, never the id itself (a
// reference to the user's profile), the code, the nonce or the cookie.
//
// Package demo (gateway/weblogin/demo) is a business page that uses it,
// with both of the business's checks (state, correlation id).
package weblogin
