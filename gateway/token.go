package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/wxhub/wxhub/events"
)

// The token endpoints answer from the in-memory copy of wx_tokens and
// never call WeChat: any number of SDK processes cost zero fetches.

// serveToken answers GET /cgi-bin/token?grant_type=client_credential&appid=A&secret=K.
func (g *Gateway) serveToken(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	q := r.URL.Query()
	name, code := g.answerToken(w, r.Context(), q.Get("grant_type"), q.Get("appid"), q.Get("secret"))
	g.record(name, r, code, start, 1)
}

// stableTokenRequest is the body of POST /cgi-bin/stable_token.
type stableTokenRequest struct {
	GrantType    string `json:"grant_type"`
	AppID        string `json:"appid"`
	Secret       string `json:"secret"`
	ForceRefresh bool   `json:"force_refresh"`
}

// serveStableToken answers POST /cgi-bin/stable_token like /cgi-bin/token.
// force_refresh is ignored: the gateway never fetches; a token WeChat
// rejects is reported by the relay, which retries with the next one.
func (g *Gateway) serveStableToken(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodPost {
		g.writeError(w, errPostOnly, "")
		g.record(clientUnknown, r, errPostOnly, start, 1)
		return
	}
	var req stableTokenRequest
	body, err := readBody(w, r, 64<<10)
	var mbe *http.MaxBytesError
	if err != nil && !errors.As(err, &mbe) {
		// Not in time, the client gone, or a body that does not read:
		// as on the relay. The client is not known yet: its key is in
		// the body.
		g.bodyFailed(w, r, clientUnknown, start, len(body), err)
		return
	}
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil { // over 64 KiB, or not JSON
		g.writeError(w, errBadJSON, "")
		g.record(clientUnknown, r, errBadJSON, start, 1)
		return
	}
	name, code := g.answerToken(w, r.Context(), req.GrantType, req.AppID, req.Secret)
	g.record(name, r, code, start, 1)
}

// answerToken checks the credentials and writes the token answer. It
// returns the client's name (clientUnknown when not authenticated) and
// the errcode answered (0 on success).
func (g *Gateway) answerToken(w http.ResponseWriter, ctx context.Context, grant, appid, key string) (string, int) {
	if grant != "client_credential" {
		g.writeError(w, errBadGrant, "")
		return clientUnknown, errBadGrant
	}
	c, code, why := g.authorize(appid, key)
	if code != 0 {
		g.writeError(w, code, why)
		return clientName(c), code
	}
	if !c.allow() {
		g.writeError(w, errMinuteQuota, "client rate limit")
		return c.Name, errMinuteQuota
	}
	rec, err := g.freshToken(ctx, appid)
	if err != nil {
		g.log.Warn("gateway: no token to give", "client", c.Name, "appid", appid, "err", err)
		g.writeError(w, errSystem, "no token available yet")
		return c.Name, errSystem
	}
	g.handles.add(rec, g.clients)
	v, ok := g.handles.given(appid, c.Name)
	if !ok {
		g.writeError(w, errSystem, "no token available yet")
		return c.Name, errSystem
	}
	n := int(rec.ExpiresAt.Sub(g.cfg.Now()) / time.Second)
	writeJSON(w, map[string]any{"access_token": v, "expires_in": max(n, 1)})
	return c.Name, 0
}

// authorize checks appid and the client key sent as its secret: 40013
// for an app the gateway does not serve, 40125 for a wrong key or an app
// the key's client may not use (as WeChat answers a secret of another
// app). why is for the errmsg (no secret in it).
func (g *Gateway) authorize(appid, key string) (*client, int, string) {
	if _, ok := g.apps[appid]; !ok {
		return nil, errAppID, ""
	}
	c := g.authenticate(key)
	if c == nil {
		return nil, errSecret, "unknown client key"
	}
	if !c.allowsApp(appid) {
		return c, errSecret, "client may not use this appid"
	}
	return c, 0, ""
}

func clientName(c *client) string {
	if c == nil {
		return clientUnknown
	}
	return c.Name
}

// freshToken returns appid's unexpired token, waiting up to TokenWait
// for one.
func (g *Gateway) freshToken(ctx context.Context, appid string) (events.TokenRecord, error) {
	now := g.cfg.Now()
	rec, ok := g.cfg.Tokens.Current(appid)
	if ok && rec.Fresh(now, 0) {
		return rec, nil
	}
	var after uint64
	if ok {
		after = rec.Version
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.TokenWait)
	defer cancel()
	return g.cfg.Tokens.WaitNewer(ctx, appid, after)
}
