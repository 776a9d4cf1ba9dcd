package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wxhub/wxhub/events"
)

// The relay forwards every other path to WeChat with an
// httputil.ReverseProxy: Rewrite points the request at the base URL and
// drops the forwarding headers (dropForwarding), the Transport
// (retryTransport) puts the real token in and applies the retry policy,
// ErrorHandler answers WeChat-shaped when WeChat cannot be
// reached or answers an HTTP status other than 2xx. Bodies of 2xx
// answers pass through unchanged (see scrub for what is taken out).
//
// Retry policy, per call:
//   - 40001, 40014, 42001 (the token was rejected, so the call was not
//     executed): report token.invalidated for the version used, wait up
//     to TokenWait for a newer token, repeat once, whatever the method;
//     unless the query carries another token (otherToken): then the
//     rejection may be about that one, and WeChat's answer goes back
//     unreported and unrepeated;
//   - -1, HTTP 5xx, a network error or an answer cut while the gateway
//     reads its errcode: repeat with backoff only an idempotent GET (not
//     /sns/oauth2/access_token: a code is used up even by a -1); a POST
//     is repeated only when the connection could not even be opened (it
//     never reached WeChat);
//   - any other status than 2xx (after the repeats allowed): -1, the
//     upstream's headers and body dropped; an informational 1xx before
//     the final answer (103 Early Hints) is dropped too (answerWriter);
//   - anything else: WeChat's answer, unchanged.

// call is one relayed request, carried in its context.
type call struct {
	client     string // for metrics and logs
	appid      string
	useToken   bool   // the query's access_token is replaced by the real one
	idempotent bool   // may be repeated after -1 or a network error
	rawQuery   string // the outbound query, token excluded when useToken
	secret     string // the AppSecret in rawQuery (code exchanges), else ""
	otherToken bool   // the query carries a token besides access_token (otherToken)
	body       []byte // nil: no body
	// in is the client's request's own context (not the call's, which
	// CallTimeout bounds): the server cancels it once the client went
	// away (its connection closed or reset, an HTTP/2 stream reset).
	in context.Context

	mu        sync.Mutex
	token     events.TokenRecord
	replaced  []string // real tokens sent before token, rejected by WeChat
	errcode   string
	attempts  int
	tokenWait bool
}

type callKey struct{}

// clientGone reports whether the client went away: its request's
// context ended while the gateway was still answering it. The server
// ends it for nothing else before the handler returns (the drain does
// not cancel requests; the gateway's own bounds end the call's context,
// not this one).
func (c *call) clientGone() bool { return c.in != nil && c.in.Err() != nil }

func callOf(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

func (c *call) outQuery() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.useToken {
		return c.rawQuery
	}
	return setParam(c.rawQuery, "access_token", c.token.AccessToken)
}

// sent returns the credentials the gateway put in the call (the real
// tokens, the AppSecret): none of them may reach the client (scrub).
func (c *call) sent() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	if c.useToken {
		out = append(append(out, c.replaced...), c.token.AccessToken)
	}
	if c.secret != "" {
		out = append(out, c.secret)
	}
	return out
}

// otherToken reports whether a raw query carries a token-like parameter
// besides access_token: one whose name, in any case, holds "token"
// (component_access_token, authorizer_access_token, suite_token,
// refresh_token, token, ...), the names the log scrub treats as tokens.
// WeChat answers 40001, 40014 or 42001 for a bad one of those too (an
// expired component_access_token of the open platform), so such a
// rejection says nothing sure about the global token, and a client could
// draw it at will: it is never reported, nor repeated. Credentials in a
// body are not looked at: WeChat's APIs take their tokens in the query.
func otherToken(raw string) bool {
	for raw != "" {
		var p string
		p, raw, _ = strings.Cut(raw, "&")
		k, _, _ := strings.Cut(p, "=")
		if k != "access_token" && strings.Contains(strings.ToLower(k), "token") {
			return true
		}
	}
	return false
}

// setParam replaces (or appends) one parameter of a raw query and keeps
// every other byte of it as the client sent it. Names are compared as
// sent, as queryParam does: the front refused escaped names
// (escapedParamName) and a repeated access_token or secret
// (repeatedParam), so the dropping of a second one below is a backstop.
func setParam(raw, name, value string) string {
	pair := name + "=" + url.QueryEscape(value)
	if raw == "" {
		return pair
	}
	parts := strings.Split(raw, "&")
	found := false
	for i, p := range parts {
		k, _, _ := strings.Cut(p, "=")
		if k == name {
			if found {
				parts[i] = ""
				continue
			}
			parts[i] = pair
			found = true
		}
	}
	if !found {
		parts = append(parts, pair)
	}
	out := parts[:0]
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, "&")
}

func (g *Gateway) newRelay() http.Handler {
	base := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: g.cfg.CallTimeout,
	}
	// Go's Transport re-sends a replayable request (see replayable) when a
	// reused connection breaks after the request was written: WeChat may
	// have executed it. A call the gateway does not repeat goes out on a
	// fresh connection instead, which the Transport never re-sends.
	fresh := base.Clone()
	fresh.DisableKeepAlives = true
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(g.base)
			pr.Out.URL.RawQuery = callOf(pr.In.Context()).outQuery()
			// Let the transport ask for gzip and undo it, so that the
			// retry policy can read WeChat's errcode.
			pr.Out.Header.Del("Accept-Encoding")
			dropForwarding(pr.Out.Header)
		},
		Transport:    &retryTransport{g: g, base: base, fresh: fresh},
		ErrorHandler: g.relayError,
		BufferPool:   bufferPool{},
		ErrorLog:     slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
}

// forwardingHeaders name the callers, and the proxies between them and
// the gateway, by address or host. None goes to WeChat: it does not use
// them (its IP allowlist checks the connection's source address), and
// they would disclose the business systems' internal addresses and
// hosts. The gateway reads X-Forwarded-For itself, from the request it
// got (the anonymous limit, TrustedProxies). ReverseProxy's Rewrite
// drops Forwarded and X-Forwarded-For, -Host and -Proto before it runs
// and adds none; dropForwarding drops the rest of the kin too: these and
// every X-Forwarded-* header.
var forwardingHeaders = []string{
	"Forwarded", "Via", "X-Forwarded", "X-Original-Forwarded-For",
	"X-Real-Ip", "True-Client-Ip", "X-Client-Ip", "X-Cluster-Client-Ip",
	"Cf-Connecting-Ip", "Fastly-Client-Ip",
}

// callAttrs are the log attributes naming a call: its client, method,
// path and query (scrubbed).
func callAttrs(client string, r *http.Request) []any {
	return []any{"client", client, "method", r.Method, "path", r.URL.Path, "query", scrubQuery(r.URL.RawQuery)}
}

// dropForwarding removes forwardingHeaders and every X-Forwarded-*
// header from h (the outbound request's, canonical keys).
func dropForwarding(h http.Header) {
	for k := range h {
		if strings.HasPrefix(k, "X-Forwarded-") {
			delete(h, k)
		}
	}
	for _, k := range forwardingHeaders {
		delete(h, k)
	}
}

// bufferPool recycles the proxy's 32 KiB copy buffers (one per answer
// otherwise).
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

var errTooLarge = errors.New("response body over the gateway's limit")

// relayError answers when WeChat could not be reached (after the retries
// allowed), answered an HTTP status other than 2xx, or its answer was too
// large: -1, as the gateway's own errors (HTTP 200), nothing of the
// upstream's answer.
func (g *Gateway) relayError(w http.ResponseWriter, r *http.Request, err error) {
	c := callOf(r.Context())
	label := "transport"
	var se *statusError
	switch {
	case errors.As(err, &se) && se.code < 500:
		// A redirect or a refusal by something in between, not WeChat
		// unreachable (an unknown path draws a 404, say).
		label = fmt.Sprintf("http_%dxx", se.code/100)
	case c.clientGone():
		// The client went away before WeChat answered: its request's
		// context ended the call. WeChat was not found unreachable.
		c.mu.Lock()
		c.errcode = clientGoneLabel
		c.mu.Unlock()
		g.log.Info("gateway: the client went away before WeChat answered", append(callAttrs(c.client, r), "err", describe(err))...)
		// Most likely nobody reads this; a client that only closed its
		// sending side still does.
		g.writeError(w, errSystem, "the request was cancelled before WeChat answered")
		return
	}
	c.mu.Lock()
	c.errcode = label
	c.mu.Unlock()
	g.log.Warn("gateway: WeChat call failed", append(callAttrs(c.client, r), "err", describe(err))...)
	why := "WeChat unreachable"
	switch {
	case errors.Is(err, errTooLarge):
		why = "WeChat's answer is over the size limit"
	case errors.As(err, &se):
		why = se.Error()
	}
	g.writeError(w, errSystem, why)
}

// describe says what failed without the URL (its query holds the token
// or the AppSecret).
func describe(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}

// retryTransport sends a call with the real token and applies the retry
// policy.
type retryTransport struct {
	g     *Gateway
	base  http.RoundTripper // pooled keep-alive connections
	fresh http.RoundTripper // a new connection per request (no keep-alive)
}

// transport picks the pooled transport, unless the call may not be
// repeated and the Transport would re-send it on its own.
func (t *retryTransport) transport(c *call, out *http.Request) http.RoundTripper {
	if !c.idempotent && replayable(out) {
		return t.fresh
	}
	return t.base
}

// replayable mirrors net/http's Request.isReplayable: the requests its
// Transport re-sends after a reused connection broke (GET, HEAD,
// OPTIONS, TRACE, or any method with an Idempotency-Key or
// X-Idempotency-Key header; without a body or with GetBody).
func replayable(r *http.Request) bool {
	if r.Body != nil && r.Body != http.NoBody && r.GetBody == nil {
		return false
	}
	switch r.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := r.Header["Idempotency-Key"]
	_, xkey := r.Header["X-Idempotency-Key"]
	return key || xkey
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c := callOf(req.Context())
	g := t.g
	ctx := req.Context()
	backoff := g.cfg.RetryInitial
	transient := 0
	for {
		out := req.Clone(ctx)
		out.URL.RawQuery = c.outQuery()
		if c.body != nil {
			out.Body = io.NopCloser(bytes.NewReader(c.body))
			out.ContentLength = int64(len(c.body))
			out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(c.body)), nil }
		} else {
			out.Body = nil
			out.ContentLength = 0
		}
		c.mu.Lock()
		c.attempts++
		c.mu.Unlock()
		resp, err := t.transport(c, out).RoundTrip(out)
		if err != nil {
			if transient+1 < g.cfg.Attempts && (c.idempotent || neverSent(err)) && ctx.Err() == nil {
				transient++
				g.retried(c, "transient", describe(err))
				if !sleep(ctx, backoff) {
					return nil, err
				}
				backoff *= 2
				continue
			}
			return nil, err
		}
		if resp.StatusCode >= 500 && c.idempotent && transient+1 < g.cfg.Attempts {
			drain(resp)
			transient++
			g.retried(c, "transient", resp.Status)
			if !sleep(ctx, backoff) {
				return nil, ctx.Err()
			}
			backoff *= 2
			continue
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			// WeChat answers 200, errors included: another status comes
			// from something in between (an egress proxy's redirect or
			// error page), whose Location or body may hold the URL, so
			// the real token or the AppSecret. None of it goes back.
			drain(resp)
			return nil, &statusError{code: resp.StatusCode}
		}
		if resp.ContentLength > g.cfg.MaxResponseBody {
			drain(resp)
			return nil, errTooLarge
		}
		code, buf, err := peekErrcode(resp)
		if err != nil {
			// The answer was cut before its errcode was read: nothing has
			// gone to the client yet, so a GET can be repeated.
			if c.idempotent && transient+1 < g.cfg.Attempts && ctx.Err() == nil {
				transient++
				g.retried(c, "transient", "answer cut: "+describe(err))
				if !sleep(ctx, backoff) {
					return nil, ctx.Err()
				}
				backoff *= 2
				continue
			}
			return nil, err
		}
		c.mu.Lock()
		c.errcode = errcodeLabel(code)
		retriedToken := c.tokenWait
		c.mu.Unlock()
		switch {
		case isTokenError(code) && c.useToken && c.otherToken:
			g.log.Info("gateway: token rejected; not reported: the call carries another token, which the rejection may be about",
				"client", c.client, "appid", c.appid, "errcode", code)
		case isTokenError(code) && c.useToken && !retriedToken:
			c.mu.Lock()
			c.tokenWait = true
			used := c.token
			c.mu.Unlock()
			newer, err := g.newerToken(ctx, c, used, code)
			if err != nil {
				g.log.Warn("gateway: no newer token in time; answering WeChat's error", "client", c.client, "appid", c.appid,
					"version", used.Version, "errcode", code, "err", err)
				return g.answer(c, resp, buf), nil
			}
			drain(resp)
			c.mu.Lock()
			c.replaced = append(c.replaced, used.AccessToken)
			c.token = newer
			c.mu.Unlock()
			g.retried(c, "token", fmt.Sprint(code))
			continue
		case code == errSystem && c.idempotent && transient+1 < g.cfg.Attempts:
			drain(resp)
			transient++
			g.retried(c, "transient", "errcode -1")
			if !sleep(ctx, backoff) {
				return nil, ctx.Err()
			}
			backoff *= 2
			continue
		}
		return g.answer(c, resp, buf), nil
	}
}

// statusError is an upstream answer with an HTTP status other than 2xx,
// after the repeats allowed: answered -1 (relayError).
type statusError struct{ code int }

func (e *statusError) Error() string { return fmt.Sprintf("WeChat answered HTTP %d", e.code) }

// answer is the upstream's 2xx answer as the client gets it: bounded to
// MaxResponseBody, and scrubbed of the credentials the gateway sent.
func (g *Gateway) answer(c *call, resp *http.Response, buf []byte) *http.Response {
	scrub(resp, buf, c.sent())
	return limitBody(resp, g.cfg.MaxResponseBody)
}

// scrub replaces, in resp's headers (and trailers) and in its body when
// the peek read it whole (buf, at most peekLimit: JSON and text), every
// occurrence of a credential the gateway sent (the real token, the
// AppSecret), raw or escaped, with [redacted]: an upstream echoing its
// URL (a Location, an error page served with 200) must not hand them to
// the client. Larger and binary bodies (media downloads up to
// MaxResponseBody) stream through unread.
func scrub(resp *http.Response, buf []byte, sent []string) {
	var forms []string
	for _, s := range sent {
		if s == "" {
			continue
		}
		forms = append(forms, s)
		for _, e := range []string{url.QueryEscape(s), url.PathEscape(s)} {
			if e != s {
				forms = append(forms, e)
			}
		}
	}
	if len(forms) == 0 {
		return
	}
	scrubHeader(resp.Header, forms)
	if buf == nil {
		if len(resp.Trailer) > 0 {
			resp.Body = &trailerScrub{ReadCloser: resp.Body, trailer: resp.Trailer, forms: forms}
		}
		return
	}
	scrubHeader(resp.Trailer, forms) // the peek read the body to its end: they are in
	out, changed := buf, false
	for _, f := range forms {
		if bytes.Contains(out, []byte(f)) {
			out, changed = bytes.ReplaceAll(out, []byte(f), []byte(redacted)), true
		}
	}
	if !changed {
		return
	}
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	if resp.Header.Get("Content-Length") != "" {
		resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
	}
}

const redacted = "[redacted]"

func scrubHeader(h http.Header, forms []string) {
	for k, vs := range h {
		for i, v := range vs {
			for _, f := range forms {
				if strings.Contains(v, f) {
					v = strings.ReplaceAll(v, f, redacted)
					h[k][i] = v
				}
			}
		}
	}
}

// trailerScrub scrubs the trailers, which the Transport fills in when the
// body reaches its end, before the proxy copies them.
type trailerScrub struct {
	io.ReadCloser
	trailer http.Header
	forms   []string
}

func (t *trailerScrub) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if err == io.EOF {
		scrubHeader(t.trailer, t.forms)
	}
	return n, err
}

// newerToken returns a token newer than used, the rejected one. When the
// holder replaced used while the call was in flight, the newer token is
// held already and taken at once, with no report (it would be stale: the
// holder drops it, but it is an event, a log line and a count for
// nothing). Otherwise it reports used and waits for the next one.
func (g *Gateway) newerToken(ctx context.Context, c *call, used events.TokenRecord, code int) (events.TokenRecord, error) {
	if cur, ok := g.cfg.Tokens.Current(c.appid); ok && cur.Version > used.Version && cur.Fresh(g.cfg.Now(), 0) {
		g.log.Info("gateway: token rejected; a newer one is held already: not reported", "client", c.client, "appid", c.appid,
			"version", used.Version, "held_version", cur.Version, "errcode", code)
		return cur, nil
	}
	if inv := g.cfg.Invalidator; inv != nil {
		if err := inv.Invalidate(ctx, c.appid, used.Version, code); err != nil {
			g.log.Warn("gateway: could not report a rejected token", "appid", c.appid, "version", used.Version, "err", err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, g.cfg.TokenWait)
	defer cancel()
	return g.cfg.Tokens.WaitNewer(wctx, c.appid, used.Version)
}

func (g *Gateway) retried(c *call, reason, what string) {
	retriesTotal.WithLabelValues(c.client, reason).Inc()
	g.log.Info("gateway: repeating a WeChat call", "client", c.client, "appid", c.appid, "reason", reason, "after", what)
}

func isTokenError(code int) bool { return code == 40001 || code == 40014 || code == 42001 }

// neverSent reports a failure to open the connection: the request cannot
// have reached WeChat, so even a POST may be repeated.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// peekLimit is the largest answer read to find an errcode; WeChat's JSON
// answers are far smaller, media downloads are not JSON.
const peekLimit = 256 << 10

// peekErrcode reads a JSON (or text) answer to find its errcode (0 when
// none) and puts the bytes back; other answers (media) are not read. It
// returns the whole body when it read it all (at most peekLimit), else
// nil.
func peekErrcode(resp *http.Response) (int, []byte, error) {
	if !jsonish(resp.Header.Get("Content-Type")) || resp.ContentLength > peekLimit {
		return 0, nil, nil
	}
	buf, err := io.ReadAll(io.LimitReader(resp.Body, peekLimit+1))
	if err != nil {
		resp.Body.Close()
		return 0, nil, err
	}
	if len(buf) > peekLimit {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), resp.Body), resp.Body}
		return 0, nil, nil
	}
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(buf))
	if !bytes.Contains(buf, []byte(`"errcode"`)) { // most successes: no decoding
		return 0, buf, nil
	}
	var e struct {
		ErrCode int `json:"errcode"`
	}
	_ = json.Unmarshal(buf, &e)
	return e.ErrCode, buf, nil
}

func jsonish(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return strings.Contains(mt, "json") || strings.HasPrefix(mt, "text/")
}

// limitBody makes the copy to the client fail past max bytes.
func limitBody(resp *http.Response, max int64) *http.Response {
	resp.Body = &limitedBody{rc: resp.Body, left: max}
	return resp
}

type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left <= 0 {
		var one [1]byte
		if n, err := l.rc.Read(one[:]); n == 0 && err == io.EOF {
			return 0, io.EOF
		}
		return 0, errTooLarge
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.rc.Read(p)
	l.left -= int64(n)
	return n, err
}

func (l *limitedBody) Close() error { return l.rc.Close() }
