// Package weblogin is the browser half of WeChat's web OAuth flow, as an
// http.Handler for the gateway's HTTP front:
//
//	GET /oauth/authorize?appid=A&scope=snsapi_base|snsapi_userinfo&return_to=URL[&state=S]
//	GET /oauth/callback?code=C&state=N
//
// Authorize checks the app, the scope and return_to (against the app's
// allow-list: exact origin, path prefix), stores a State under a fresh
// random nonce in the KV bucket wx_login_state (StateStore, 10 minutes)
// and redirects (302) to open.weixin.qq.com with WeChat's parameter order
// and the #wechat_redirect fragment (/connect/qrconnect and snsapi_login
// for website apps). Bad input gets a 400 page saying which. The logins
// started are limited, all browsers together (AuthorizeRate, default 50
// a second, burst 100): over it a 429 page, and nothing is stored.
//
// Callback takes the nonce exactly once (read, then a revision-checked
// delete: of any number of concurrent or replayed callbacks one proceeds,
// the others get 400 and publish nothing; a browser reload is a replay),
// publishes oauth.code.received with JobID(nonce) as job_id and
// Nats-Msg-Id, waits (bounded) for the result, and redirects to return_to
// with wxhub_job, the business's state and error: access_denied when the
// user refused (no code), timeout when no result came in time, or the
// failure's kind.
//
// Choices where WeChat and the contract are silent:
//   - The nonce is crypto/rand.Text (26 base32 characters, 130 bits).
//   - An expired state (older than the TTL by the store's clock, even if
//     the bucket still holds it) is consumed and refused.
//   - The job's state field carries the nonce (the state that came back
//     with the code); the business's state never leaves the store except
//     on the final redirect.
//   - return_to's own query is kept; wxhub_job, state and error replace
//     any parameters of those names.
//   - A job that could not be published ends the login with
//     error=temporarily_unavailable; the nonce is spent (the code may be
//     too), so the user starts again.
//
// Package demo (gateway/weblogin/demo) is a business page that uses it.
package weblogin
