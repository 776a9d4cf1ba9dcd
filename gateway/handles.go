package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"sync"

	"github.com/wxhub/wxhub/events"
)

// Handles. A client that may not see the real token gets a handle: the
// HMAC-SHA256 of its name and the appid, keyed with the real token. So
//   - every replica computes the same handle from wx_tokens: no shared
//     state, any number of gateways;
//   - a handle reveals nothing of the token, and stops working by itself
//     a few rotations later (handleVersions are kept);
//   - a call with a handle of a recent version is relayed with the
//     CURRENT real token: a rotation never fails a client's call.
const (
	handlePrefix   = "wxh1_"
	handleVersions = 3 // current and the two before: WeChat keeps a replaced token 5 more minutes
)

func makeHandle(realToken, clientName, appid string) string {
	m := hmac.New(sha256.New, []byte(realToken))
	m.Write([]byte("wxhub gateway handle\x00"))
	m.Write([]byte(clientName))
	m.Write([]byte{0})
	m.Write([]byte(appid))
	return handlePrefix + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// holder of a credential presented to the relay.
type bearer struct {
	client *client
	appid  string
}

// handleTable maps the handles of recent token versions (and the real
// tokens, for RealToken clients) to their client and app.
type handleTable struct {
	mu       sync.RWMutex
	byValue  map[string]bearer
	versions map[string][][]string        // appid → keys added per version, oldest first
	current  map[string]map[string]string // appid → client name → what the client is given now
	latest   map[string]uint64            // appid → version of current
}

func newHandleTable() *handleTable {
	return &handleTable{byValue: map[string]bearer{}, versions: map[string][][]string{}, current: map[string]map[string]string{}, latest: map[string]uint64{}}
}

// add records the handles of rec for every client of its app, unless a
// version as new is there already.
func (t *handleTable) add(rec events.TokenRecord, clients []*client) {
	t.mu.RLock()
	known := t.latest[rec.AppID] >= rec.Version && t.current[rec.AppID] != nil
	t.mu.RUnlock()
	if known {
		return
	}
	var keys []string
	given := map[string]string{}
	for _, c := range clients {
		if !c.allowsApp(rec.AppID) {
			continue
		}
		v := rec.AccessToken
		if !c.RealToken {
			v = makeHandle(rec.AccessToken, c.Name, rec.AppID)
		}
		given[c.Name] = v
		keys = append(keys, v)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.latest[rec.AppID] >= rec.Version && t.current[rec.AppID] != nil {
		return
	}
	for _, c := range clients {
		if v, ok := given[c.Name]; ok {
			t.byValue[v] = bearer{client: c, appid: rec.AppID}
		}
	}
	vs := append(t.versions[rec.AppID], keys)
	for len(vs) > handleVersions {
		for _, k := range vs[0] {
			delete(t.byValue, k)
		}
		vs = vs[1:]
	}
	t.versions[rec.AppID] = vs
	t.current[rec.AppID] = given
	t.latest[rec.AppID] = rec.Version
}

// lookup returns who presented v.
func (t *handleTable) lookup(v string) (bearer, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	b, ok := t.byValue[v]
	return b, ok
}

// given returns what client is handed now for appid (a handle or the
// real token).
func (t *handleTable) given(appid, clientName string) (string, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	v, ok := t.current[appid][clientName]
	return v, ok
}

// follow keeps the table current for appid until ctx ends: one entry per
// token version the cache sees, without polling.
func (g *Gateway) follow(ctx context.Context, appid string) {
	var version uint64
	for {
		rec, err := g.cfg.Tokens.WaitNewer(ctx, appid, version)
		if err != nil {
			return
		}
		version = rec.Version
		g.handles.add(rec, g.clients)
	}
}
