// Package gateway is wxhub's WeChat-compatible front: it answers at
// WeChat's API paths, so that an existing SDK (EasyWeChat, WxJava,
// wechatpy, silenceper/wechat, node SDKs) uses wxhub by changing its API
// base URL, with no code change.
//
// # Token endpoints that never fetch
//
// GET /cgi-bin/token?grant_type=client_credential&appid=A&secret=K and
// POST /cgi-bin/stable_token answer {"access_token":H,"expires_in":N}
// from the holder's token in wx_tokens (kept in memory by a KV watch,
// Config.Tokens). K is a client key (Config.Clients), never the
// AppSecret; N is the token's real remaining life. H is a handle, an
// opaque per-client value (handles.go: HMAC-SHA256 of the client and app
// keyed with the real token), unless the client has RealToken. Any number
// of SDK processes cost zero WeChat token fetches. Refusals are
// WeChat's: 40002 grant_type, 40013 unknown appid, 40125 wrong key or an
// app the client may not use, 45011 over the client's rate, -1 when no
// token is available within TokenWait. force_refresh is ignored.
//
// # The relay
//
// Every other path is forwarded to Config.BaseURL by an
// httputil.ReverseProxy (relay.go) with the handle replaced by the
// current real token; headers and bodies (JSON, multipart uploads, binary
// downloads) pass unchanged but for the credentials the gateway put in
// (below), within MaxRequestBody and MaxResponseBody
// (64 KiB for a call without a client: the /sns calls below). The
// headers that name the callers and the proxies in between are not
// relayed (X-Forwarded-For and every X-Forwarded-*, Forwarded, Via,
// X-Real-IP and its kin: forwardingHeaders), nor does the gateway add
// its own: WeChat does not use them (its IP allowlist checks the
// connection's source address), and they would disclose the business
// systems' internal addresses. A request's
// body must arrive within 2 × CallTimeout (a read deadline set by the
// front and lifted once the body is read), else -1 and the connection is
// closed. A relayed answer must be written to the client within
// AnswerTimeout (60 s by default: 64 MiB at about 1.1 MB/s) from its
// start, and never later than DrainTimeout − HeaderTimeout − 1 s after
// its request came in, so that it ends within any drain: a write
// deadline set on the connection before its headers (answer.go), which
// the server lifts once the answer is done. The time before the answer
// (a token wait, the body, the call) is not counted: the server has no
// WriteTimeout. A client that stops reading a download is cut then: the
// call is counted under errcode answer_timeout and logged (warn, the
// query scrubbed). A client that goes away before its answer is written
// (it closes or resets its connection in the middle of a download, or
// part-way through sending its request body, an upload it abandons, or
// cancels its request before WeChat answered: the server ends the
// request's context) is counted under errcode client_gone and logged at
// info, the query scrubbed: never as transport, which the alert on
// WeChat unreachable watches, so that no client can fire it by hanging
// up; a body cut by the gateway's own 2 × CallTimeout stays -1; the
// stable_token endpoint counts these the same, under the client unknown
// (the key is in the body). A body that cannot be read while the client
// is still there (a chunked body that breaks its framing) is answered
// 47001 data format error with net/http's reason, HTTP 200 as every
// WeChat error, the connection closed after it, never forwarded; counted
// under errcode bad_body and logged at info, the query scrubbed, nothing
// of the body (bodyFailed). The bodies held in memory, all calls together, stay within
// MaxBufferedBytes (golang.org/x/sync/semaphore): a call takes its
// Content-Length (MaxRequestBody when it announces none) before its body
// is read and gives it back once answered; one that cannot have it
// within BodyBudgetWait is answered -1 ("busy") and not forwarded, so
// many concurrent uploads neither exhaust memory nor wait without end.
// A handle of any of the last three token versions stays valid and is
// relayed with the current token, so a rotation fails no call; an
// unknown one is answered 40001 (the SDK fetches a new token). Retry
// policy: 40001/40014/42001 → token.invalidated for the version used
// (Config.Invalidator), wait up to TokenWait for a newer token, repeat
// once (the call was not executed; no report when a newer token is held
// already), unless the query carries a token-like parameter of its own
// besides access_token (a name holding "token": component_access_token,
// authorizer_access_token, suite_token, ...): the rejection may be about
// that one, so it is neither reported nor repeated (a client could
// otherwise make the gateway report the valid token at will); -1, HTTP
// 5xx, network errors and an answer cut while the gateway reads it for
// its errcode → repeated with backoff (Attempts, RetryInitial) for
// idempotent GETs only; a POST is repeated only when its connection
// could not even be opened. A call that is not repeated and that
// net/http's Transport would re-send by itself on a broken keep-alive
// connection (a GET, or an Idempotency-Key header) goes out on a fresh
// connection, which is never re-sent. Otherwise the SDK gets WeChat's answer unchanged, with
// two exceptions, so that the real token and the AppSecret the gateway
// sent never come back (an egress proxy's redirect or error page may
// show the URL): an answer with an HTTP status other than 2xx (WeChat's
// own errors are HTTP 200) is answered -1, with nothing of its headers,
// Location or body (counted under errcode http_3xx or http_4xx, or
// transport for 5xx); and in a 2xx answer every occurrence of those
// credentials, raw or URL-escaped, is replaced by [redacted] in the
// headers, the trailers and a JSON or text body of at most 256 KiB
// (larger and binary bodies stream through unread). Informational
// answers (1xx, such as 103 Early Hints) are dropped, never passed on:
// WeChat sends none, and ReverseProxy would pass them before any of
// these checks (answerWriter).
//
// The code exchanges, /sns/oauth2/access_token?appid=A&secret=K&code=C
// and /sns/jscode2session?appid=A&secret=K&js_code=J, get K replaced by
// the AppSecret (Config.Apps) and are never repeated (a code is used up
// even by -1). Any other /sns call carrying `secret` is refused with
// 48001, and so is any call outside /sns carrying one (the token
// endpoints read theirs; nothing else WeChat serves takes it): a client
// key, or an AppSecret, never goes through the relay, whatever its
// value, empty too. Other /sns calls carry the user's own token: they
// pass through unchanged, without a client, under AnonymousRate per
// client address (an IPv4 address or an IPv6 /64; 45011 over it), so
// that no caller can use up everybody's budget. The address is the
// peer's, or, when the peer is one of TrustedProxies, the rightmost
// X-Forwarded-For address that is not a trusted proxy. The table of
// per-address limiters is bounded (MaxAnonymousClients): an idle one is
// forgotten, a full table forgets the one used least recently (package
// gateway/internal/clientlimit, shared with the web login). No /sns endpoint
// takes the global token, so a handle (or a RealToken client's real
// token, or any access_token starting wxh1_) on a /sns path is refused
// with 48001: relayed with the real token it would draw a 40001, and a
// token.invalidated report against the valid global token.
//
// # Plain paths and queries only
//
// Before any routing, a request whose path is not plain (an escape other
// than the default encoding, such as %2F, so that URL.RawPath is set; a
// backslash; an empty or a "." or ".." segment) is answered 48001 and
// counted under the unknown client: the relay forwards the path as
// escaped while client path lists are checked on the decoded one. So is
// a query (query.go) with a parameter name holding '%' or '+' (access_token
// and secret are found by their names as sent, WeChat decodes them), or
// with a parameter the gateway reads, rewrites or sends on with a
// credential given more than once (readParams: access_token, secret,
// appid, grant_type, code, js_code, and the web login's state, scope and
// return_to): the gateway reads the first, WeChat or a proxy may read
// another. Other parameters may repeat. So is a query with a raw ';',
// which some servers split parameters on and the gateway does not.
//
// # Clients, logs, metrics
//
// A client has a name, a key (compared in constant time on SHA-256
// sums; two clients with the same key are refused by New, the error
// naming both clients, never the key), the appids and path prefixes it may use (48001 for another
// path) and a rate limit (golang.org/x/time/rate). Metrics on wxhub's
// registry: wxhub_gateway_calls_total{client,path,errcode} (errcode:
// WeChat's or the gateway's; transport: WeChat unreachable, its 5xx, or
// its answer cut; http_3xx, http_4xx; answer_timeout, client_gone and
// bad_body: the client's doing),
// wxhub_gateway_call_duration_seconds{client,path} and
// wxhub_gateway_retries_total{client,reason}; at most 200 path values
// for the clients' calls, then "other". Only a relayed call of a client
// takes a new one: a call the gateway refuses itself (bad key or
// handle, a path not allowed, over the rate, over a body limit, busy)
// gets its path's label only if it has one already, else "other", and
// unknown and anonymous callers get "other" except on a fixed list of
// WeChat's paths (labelled outside the 200), so none can use the 200
// up. Logs (debug per call, info for retries and clients gone, warn for
// failures) carry the query with every token, secret, key, code and
// ticket value replaced by [redacted]; never a handle, token, key or
// AppSecret.
//
// # Operations
//
// The gateway holds no state of its own: run any number of replicas
// behind a load balancer (handles are the same on every replica). Start
// binds Listen (HTTPS with TLSCert and TLSKey); Run serves until its
// context ends, then lets the requests in flight finish: DrainTimeout,
// by default DrainFor(TokenWait, CallTimeout, MountWait), what the
// longest request may take plus DrainMargin: HeaderTimeout for its
// headers, then a relayed call (TokenWait, 2 × CallTimeout for its body,
// CallTimeout for the call: 10 + 10 + 60 + 30 s by default) or a mounted
// handler such as the web login's callback (MountWait); the answer's
// writing is bounded to end within it (AnswerTimeout, above). A shorter
// DrainTimeout is refused; the stop timeouts in deploy/ exceed the
// longest drain (config.MaxGatewayDrain).
// The TLS certificate is read again, with no restart, once TLSCert or
// TLSKey changes (each handshake compares their modification times and
// sizes); a pair that does not load (one file of two renewed, a file
// missing) keeps the last good certificate, logged without the files'
// contents, and is tried again when the files change again.
// /healthz and /readyz on the same front (ready once every configured
// app has an unexpired token). Config.Mount adds handlers on the front,
// such as the web login under /oauth/ (package weblogin).
package gateway
