package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/wxhub/wxhub/gateway/internal/clientlimit"
)

// snsUserPaths carry the user's own OAuth token (or refresh token), not a
// wxhub credential: they are relayed as they are, under the anonymous
// rate limit, per client address. (/sns/oauth2/access_token is the
// exception: see serveOAuthExchange.)
func userTokenPath(path string) bool {
	return strings.HasPrefix(path, "/sns/")
}

// exchangePath reports whether path is one of WeChat's code exchanges,
// the only /sns calls that take appid and the AppSecret: there, and
// nowhere else, the client key in `secret` is replaced by the AppSecret.
func exchangePath(path string) bool {
	switch path {
	case "/sns/oauth2/access_token", "/sns/jscode2session":
		return true
	}
	return false
}

// serveRelay relays a WeChat API call made with a handle (or, for a
// RealToken client, the real token).
func (g *Gateway) serveRelay(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if !userTokenPath(r.URL.Path) && hasParam(r.URL.RawQuery, "secret") {
		// secret is a client key only at the token endpoints and the
		// code exchanges, which are not relayed here; nothing else
		// WeChat serves takes one, and forwarded it would hand the key
		// to WeChat (and to whatever logs its URLs).
		g.writeError(w, errUnauthorized, "secret on a path that is not a token endpoint or a code exchange: the client key goes nowhere else")
		g.record(clientUnknown, r, errUnauthorized, start, 1)
		return
	}
	if userTokenPath(r.URL.Path) && hasParam(r.URL.RawQuery, "secret") {
		if !exchangePath(r.URL.Path) {
			// The AppSecret goes to the code exchanges only; this call is
			// not one, and is not forwarded with the key either.
			g.writeError(w, errUnauthorized, "secret on a /sns path that is not a code exchange (/sns/oauth2/access_token, /sns/jscode2session)")
			g.record(clientUnknown, r, errUnauthorized, start, 1)
			return
		}
		// A mini program's /sns/jscode2session: the client key stands
		// for the AppSecret.
		g.serveOAuthExchange(w, r)
		return
	}
	tok := queryParam(r.URL.RawQuery, "access_token")
	b, known := g.handles.lookup(tok)
	if userTokenPath(r.URL.Path) {
		if known || strings.HasPrefix(tok, handlePrefix) {
			// No /sns endpoint takes the global token: relayed with it,
			// WeChat would answer 40001 and the gateway would report the
			// valid global token as rejected (a refresh, a spent fetch).
			name := clientUnknown
			if known {
				name = b.client.Name
			}
			g.writeError(w, errUnauthorized, "a wxhub access_token on a /sns path: /sns calls take the user's own OAuth token")
			g.record(name, r, errUnauthorized, start, 1)
			return
		}
		g.passThrough(w, r, start)
		return
	}
	switch {
	case tok == "":
		g.writeError(w, errTokenMissing, "")
		g.record(clientUnknown, r, errTokenMissing, start, 1)
		return
	case !known:
		g.writeError(w, errInvalidToken, "not a handle this gateway gave; fetch the token again")
		g.record(clientUnknown, r, errInvalidToken, start, 1)
		return
	}
	c := b.client
	if !c.allowsPath(r.URL.Path) {
		g.writeError(w, errUnauthorized, "path not allowed for this client")
		g.record(c.Name, r, errUnauthorized, start, 1)
		return
	}
	if !c.allow() {
		g.writeError(w, errMinuteQuota, "client rate limit")
		g.record(c.Name, r, errMinuteQuota, start, 1)
		return
	}
	rec, err := g.freshToken(r.Context(), b.appid)
	if err != nil {
		g.writeError(w, errSystem, "no token available yet")
		g.record(c.Name, r, errSystem, start, 1)
		return
	}
	cl := &call{client: c.Name, appid: b.appid, useToken: true, token: rec,
		idempotent: r.Method == http.MethodGet || r.Method == http.MethodHead, rawQuery: r.URL.RawQuery,
		otherToken: otherToken(r.URL.RawQuery)}
	g.forward(w, r, cl, start)
}

// serveOAuthExchange relays a code exchange (exchangePath:
// /sns/oauth2/access_token, /sns/jscode2session) with the client key in
// `secret` replaced by the AppSecret. It is never repeated: WeChat
// counts a code as used even when it answers -1.
func (g *Gateway) serveOAuthExchange(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	appid := queryParam(r.URL.RawQuery, "appid")
	c, code, why := g.authorize(appid, queryParam(r.URL.RawQuery, "secret"))
	switch {
	case code != 0:
	case !c.allowsPath(r.URL.Path):
		code, why = errUnauthorized, "path not allowed for this client"
	case g.apps[appid].Secret == "":
		code, why = errSecret, "no AppSecret configured on the gateway for this app"
	case !c.allow():
		code, why = errMinuteQuota, "client rate limit"
	}
	if code != 0 {
		g.writeError(w, code, why)
		g.record(clientName(c), r, code, start, 1)
		return
	}
	secret := g.apps[appid].Secret
	cl := &call{client: c.Name, appid: appid, secret: secret, rawQuery: setParam(r.URL.RawQuery, "secret", secret)}
	g.forward(w, r, cl, start)
}

// passThrough relays a call carrying the user's own token.
func (g *Gateway) passThrough(w http.ResponseWriter, r *http.Request, start time.Time) {
	if !g.anon.Allow(g.anonClient(r), time.Now()) {
		g.writeError(w, errMinuteQuota, "rate limit of calls without a client, per address")
		g.record(clientAnonymous, r, errMinuteQuota, start, 1)
		return
	}
	cl := &call{client: clientAnonymous, rawQuery: r.URL.RawQuery,
		idempotent: r.Method == http.MethodGet && !exchangePath(r.URL.Path)}
	g.forward(w, r, cl, start)
}

// anonClient is the budget r counts against under AnonymousRate: its
// client's IPv4 address or IPv6 /64 (clientlimit). An X-Forwarded-For
// from a peer that is not a trusted proxy is ignored, and said once in
// the log: behind a proxy not listed in TrustedProxies every caller
// shares the proxy's budget.
func (g *Gateway) anonClient(r *http.Request) netip.Prefix {
	a, ignored := g.trusted.Addr(r)
	if ignored && g.warnedXFF.CompareAndSwap(false, true) {
		g.log.Warn("gateway: X-Forwarded-For from a peer that is not a trusted proxy is ignored: every caller behind it counts as one client against the anonymous rate limit (set the gateway's trusted proxies)", "peer", a)
	}
	return clientlimit.Key(a)
}

// maxAnonymousBody bounds the body of a call without a wxhub credential
// (WeChat's /sns endpoints take none): an unauthenticated caller cannot
// make the gateway buffer MaxRequestBody.
const maxAnonymousBody = 64 << 10

// bodyTimeout bounds the time to receive a request's body: twice
// CallTimeout, long enough for the largest upload allowed at a modest
// speed, short enough that a sender dribbling bytes cannot hold a
// connection (and its buffer) forever.
func (g *Gateway) bodyTimeout() time.Duration { return 2 * g.cfg.CallTimeout }

// bodyDeadline bounds, from now, the time to receive the body of the
// request w answers (bodyTimeout). The front sets it on every request
// that has a body; a handler that reads the whole body lifts it
// (readBody), so that the rest of the call (WeChat's answer may take
// CallTimeout) is not cut. A body left unread keeps it: the server's
// discard of the rest after the answer is bounded too.
func (g *Gateway) bodyDeadline(w http.ResponseWriter) {
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(g.bodyTimeout()))
}

// readBody reads r's body, at most limit bytes (http.MaxBytesReader), and
// lifts bodyDeadline once the body was read to its end; never after a
// failed read (the server would wait for the rest).
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err == nil {
		_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	}
	return body, err
}

// badBodyLabel is the errcode label of a call whose body could not be
// read while its client was still there (bodyFailed): the client's
// doing, answered 47001.
const badBodyLabel = "bad_body"

// bodyFailed answers, logs and counts a request whose body readBody
// could not read (err, not a MaxBytesError, which each caller answers
// itself; received: the bytes read before it failed). Nothing of it is
// forwarded. Three cases, told apart in this order:
//   - the body deadline passed (bodyDeadline): -1 "request body not
//     received in time", the connection closed;
//   - the client went away while sending it (it closed or reset its
//     connection part-way: the server ends the request's context on any
//     failed read of the connection): its doing, like a download it
//     hangs up on. Counted under client_gone, logged at info, nothing
//     answered: nobody reads it;
//   - the connection is still there but the body does not read (a
//     chunked body that breaks its framing: a chunk length that is not
//     hex, chunk data without its CRLF): answered 47001 data format
//     error with net/http's reason, HTTP 200 as every WeChat error, and
//     counted under bad_body, logged at info. The server closes the
//     connection after the answer: what follows on the wire cannot be
//     told from the body. Never an empty answer, never -1: the client
//     sent a bad request, and sending it again will not mend it.
//
// The logs carry the client's name and the query scrubbed; nothing of
// the body (the stable_token body holds a client key).
func (g *Gateway) bodyFailed(w http.ResponseWriter, r *http.Request, client string, start time.Time, received int, err error) {
	attrs := append(callAttrs(client, r), "received", received, "announced", r.ContentLength)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		g.writeError(w, errSystem, "request body not received in time")
		g.record(client, r, errSystem, start, 1)
	case r.Context().Err() != nil:
		g.log.Info("gateway: the client went away while sending its request body", attrs...)
		g.recordCall(client, r, clientGoneLabel, start, 1, false)
	default:
		g.log.Info("gateway: the request body could not be read", append(attrs, "err", err.Error())...)
		g.writeError(w, errBadJSON, "request body could not be read: "+err.Error())
		g.recordCall(client, r, badBodyLabel, start, 1, false)
	}
}

// budgetWait is the longest a call waits for its share of
// MaxBufferedBytes: BodyBudgetWait, at most CallTimeout (DrainFor
// counts it within the body's 2 × CallTimeout).
func (g *Gateway) budgetWait() time.Duration { return min(BodyBudgetWait, g.cfg.CallTimeout) }

// takeBudget takes n bytes of MaxBufferedBytes for a body about to be
// read, waiting at most budgetWait; false when they could not be had.
func (g *Gateway) takeBudget(ctx context.Context, n int64) bool {
	if !g.bodies.TryAcquire(n) {
		ctx, cancel := context.WithTimeout(ctx, g.budgetWait())
		defer cancel()
		if g.bodies.Acquire(ctx, n) != nil {
			return false
		}
	}
	g.held.Add(n)
	return true
}

// giveBudget gives back what takeBudget took.
func (g *Gateway) giveBudget(n int64) {
	g.held.Add(-n)
	g.bodies.Release(n)
}

// forward reads the body (bounded in size and time, and all bodies
// together by MaxBufferedBytes) and hands the call to the proxy.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, cl *call, start time.Time) {
	if r.Body != nil && r.Body != http.NoBody {
		limit := g.cfg.MaxRequestBody
		if cl.client == clientAnonymous {
			limit = maxAnonymousBody
		}
		if r.ContentLength > limit {
			g.writeError(w, errTooBig, "request body over the gateway's limit")
			g.record(cl.client, r, errTooBig, start, 1)
			return
		}
		// The body is held until the call is answered (a repeat sends it
		// again): its bytes are taken from the budget until then.
		need := limit
		if r.ContentLength >= 0 {
			need = r.ContentLength
		}
		if !g.takeBudget(r.Context(), need) {
			g.writeError(w, errSystem, "busy: too many request bodies in flight; try again")
			g.record(cl.client, r, errSystem, start, 1)
			return
		}
		defer g.giveBudget(need)
		body, err := readBody(w, r, limit)
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			g.writeError(w, errTooBig, "request body over the gateway's limit")
			g.record(cl.client, r, errTooBig, start, 1)
			return
		case err != nil:
			g.bodyFailed(w, r, cl.client, start, len(body), err)
			return
		}
		if len(body) > 0 || r.ContentLength == 0 && r.Method == http.MethodPost {
			cl.body = body
		}
	}
	cl.in = r.Context()
	ctx, cancel := context.WithTimeout(context.WithValue(r.Context(), callKey{}, cl), g.cfg.CallTimeout)
	defer cancel()
	aw := &answerWriter{ResponseWriter: w, g: g, start: start}
	defer func() {
		cl.mu.Lock()
		code, attempts := cl.errcode, cl.attempts
		cl.mu.Unlock()
		// The proxy panics with http.ErrAbortHandler when the copy of the
		// answer fails part-way: the call is counted all the same, and
		// the panic goes on to the server, which cuts the connection. An
		// answer the client did not read within its bound
		// (answerDeadline) is counted as answer_timeout, and logged
		// (warn); one the client went away from (a write to it failed,
		// or its request's context ended: the upstream's body read is
		// cancelled then) as client_gone (info); any other cut (over
		// MaxResponseBody, WeChat gone part-way) as transport.
		p := recover()
		switch {
		case aw.timedOut():
			code = answerTimeoutLabel
			g.log.Warn("gateway: the client did not read the answer in time; connection cut",
				append(callAttrs(cl.client, r), "written", aw.written, "answer_timeout", g.cfg.AnswerTimeout.String())...)
		case p != nil && (aw.failedWrite() || cl.clientGone()):
			code = clientGoneLabel
			g.log.Info("gateway: the client went away during the answer", append(callAttrs(cl.client, r), "written", aw.written)...)
		case p != nil:
			code = "transport"
		}
		g.recordCall(cl.client, r, code, start, attempts, true)
		if p != nil {
			panic(p)
		}
	}()
	g.relay.ServeHTTP(aw, r.WithContext(ctx))
}

// queryParam returns the first value of name in a raw query.
func queryParam(raw, name string) string {
	for raw != "" {
		var p string
		p, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(p, "=")
		if k == name {
			if uv, err := unescape(v); err == nil {
				return uv
			}
			return ""
		}
	}
	return ""
}

// hasParam reports whether a raw query has a parameter named name (as
// sent), whatever its value, also one that does not decode.
func hasParam(raw, name string) bool {
	for raw != "" {
		var p string
		p, raw, _ = strings.Cut(raw, "&")
		if k, _, _ := strings.Cut(p, "="); k == name {
			return true
		}
	}
	return false
}

// record counts a call the gateway answered itself, a refusal or a
// token: it takes no new path label (see recordCall).
func (g *Gateway) record(client string, r *http.Request, code int, start time.Time, attempts int) {
	g.recordCall(client, r, errcodeLabel(code), start, attempts, false)
}

// recordCall counts a call. Its path label: WeChat's fixed paths
// (knownPath) always by name; for a client's call, a path already
// labelled by name, and a new one while fewer than maxPathLabels are,
// but only when the call was relayed (relayed): refusals, which anyone
// can make up by the hundred, never take one of the labels the clients'
// real calls need; anything else "other".
func (g *Gateway) recordCall(client string, r *http.Request, code string, start time.Time, attempts int, relayed bool) {
	if code == "" {
		code = "0"
	}
	d := time.Since(start)
	path := "other"
	switch {
	case knownPath(r.URL.Path):
		path = r.URL.Path
	case client != clientUnknown && client != clientAnonymous:
		path = g.paths.label(r.URL.Path, relayed)
	}
	callsTotal.WithLabelValues(client, path, code).Inc()
	callDuration.WithLabelValues(client, path).Observe(d.Seconds())
	if g.log.Enabled(r.Context(), -4) { // debug: build nothing below the level
		g.log.Debug("gateway call", append(callAttrs(client, r), "errcode", code, "attempts", attempts, "duration", d)...)
	}
}

// knownPath: paths worth a label from any caller, an unauthenticated or
// anonymous one too, outside the clients' maxPathLabels (so that the
// token endpoints' series, which the alerts watch, never turn "other").
func knownPath(p string) bool {
	switch p {
	case "/cgi-bin/token", "/cgi-bin/stable_token", "/sns/oauth2/access_token", "/sns/jscode2session",
		"/sns/userinfo", "/sns/auth", "/sns/oauth2/refresh_token":
		return true
	}
	return false
}
