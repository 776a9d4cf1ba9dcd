// Package demo is a small business web page that logs users in through
// wxhub's web login, the way a real business system would: it links to
// /oauth/authorize with its own state in a cookie, and when the browser
// comes back with wxhub_job it checks that state and shows the profile it
// received on user.profile for that job, once it has checked that the
// result's Wx-Correlation-Id is the SHA-256 of that same state (so a
// wxhub_job taken from someone else's finished login is refused too).
// `wxhub run` serves it against the
// WeChat simulator; the browser test drives it with chromium.
package demo

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/events"
)

// stateCookie keeps the business state the page sent to /oauth/authorize.
const stateCookie = "demo_login_state"

// keep bounds how many results the page remembers.
const keep = 1024

// Config configures a Page.
type Config struct {
	AppID string
	// LoginBase is where wxhub's web login answers (its /oauth/authorize),
	// e.g. http://127.0.0.1:8092; "" means the origin the page was
	// requested on (the page shares the web login's front).
	LoginBase string
	// SelfURL is this page's absolute URL: the return_to it asks for; ""
	// means the URL it was requested on, without the query.
	SelfURL string
	// Prefix is the subject prefix.
	Prefix string
	// Wait bounds the wait for a result that has not arrived yet; 0 means
	// 5 s.
	Wait time.Duration
}

// result is one terminal message for a job.
type result struct {
	profile *events.UserProfile
	failed  *events.UserProfileFailed
	corrID  string // the message's Wx-Correlation-Id
}

// Page is the demo business page, an http.Handler.
type Page struct {
	cfg  Config
	subs []*nats.Subscription

	mu      sync.Mutex
	results map[string]result
	order   []string
	arrived chan struct{} // closed and replaced on every result
}

// New subscribes to the result subjects on nc and returns the page.
// Close unsubscribes.
func New(nc *nats.Conn, cfg Config) (*Page, error) {
	if cfg.AppID == "" {
		return nil, errors.New("demo: AppID is required")
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 5 * time.Second
	}
	p := &Page{cfg: cfg, results: make(map[string]result), arrived: make(chan struct{})}
	s := events.NewSubjects(cfg.Prefix)
	for _, subj := range s.Results() {
		failed := subj == s.UserProfileFailed
		sub, err := nc.Subscribe(subj, func(m *nats.Msg) { p.onResult(m, failed) })
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("demo: subscribe %s: %w", subj, err)
		}
		p.subs = append(p.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		p.Close()
		return nil, fmt.Errorf("demo: subscribe: %w", err)
	}
	return p, nil
}

// Close ends the subscriptions.
func (p *Page) Close() {
	for _, s := range p.subs {
		_ = s.Unsubscribe()
	}
}

func (p *Page) onResult(m *nats.Msg, failed bool) {
	r := result{corrID: m.Header.Get(events.HeaderCorrelationID)}
	var id string
	if failed {
		var f events.UserProfileFailed
		if json.Unmarshal(m.Data, &f) != nil {
			return
		}
		r.failed, id = &f, f.JobID
	} else {
		var u events.UserProfile
		if json.Unmarshal(m.Data, &u) != nil {
			return
		}
		r.profile, id = &u, u.JobID
	}
	p.mu.Lock()
	if _, seen := p.results[id]; !seen {
		p.order = append(p.order, id)
		if len(p.order) > keep {
			delete(p.results, p.order[0])
			p.order = p.order[1:]
		}
	}
	p.results[id] = r
	close(p.arrived)
	p.arrived = make(chan struct{})
	p.mu.Unlock()
}

// lookup waits until the result for id has arrived or ctx ends.
func (p *Page) lookup(ctx context.Context, id string) (result, bool) {
	for {
		p.mu.Lock()
		r, ok := p.results[id]
		ch := p.arrived
		p.mu.Unlock()
		if ok {
			return r, true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return result{}, false
		}
	}
}

// LoginURL is the link the page shows for scope, for a page requested
// as r.
func (p *Page) LoginURL(r *http.Request, scope, state string) string {
	base, self := p.cfg.LoginBase, p.cfg.SelfURL
	if base == "" || self == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		origin := scheme + "://" + r.Host
		if base == "" {
			base = origin
		}
		if self == "" {
			self = origin + r.URL.Path
		}
	}
	return base + "/oauth/authorize?" + url.Values{
		"appid": {p.cfg.AppID}, "scope": {scope}, "return_to": {self}, "state": {state},
	}.Encode()
}

type view struct {
	AppID                  string
	LoginUserInfo, LoginBs string
	Error, JobID           string
	StateChecked, StateOK  bool
	NotThisLogin           bool // the result's correlation id is not this browser's state's

	Profile *events.UserProfile
	Failed  *events.UserProfileFailed
	Pending bool
}

// ServeHTTP shows the login links, or the outcome of a login.
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	q := r.URL.Query()
	v := view{AppID: p.cfg.AppID, Error: q.Get("error"), JobID: q.Get("wxhub_job")}
	var state string
	if v.Error != "" || v.JobID != "" {
		// The business's own CSRF check: the state that came back must be
		// the one this browser was given, or someone else's finished
		// login is being passed off on this browser.
		v.StateChecked = true
		if c, err := r.Cookie(stateCookie); err == nil && c.Value != "" {
			v.StateOK = subtle.ConstantTimeCompare([]byte(c.Value), []byte(q.Get("state"))) == 1
			state = c.Value
		}
		http.SetCookie(w, &http.Cookie{Name: stateCookie, Value: "", Path: "/", MaxAge: -1})
	}
	if v.JobID != "" && v.StateOK {
		ctx, cancel := context.WithTimeout(r.Context(), p.cfg.Wait)
		res, ok := p.lookup(ctx, v.JobID)
		cancel()
		// The second check: the result must be the one of the login this
		// browser started, whose correlation id is the SHA-256 of its
		// state. A wxhub_job copied from someone else's finished login
		// (history, logs) paired with this browser's state fails here.
		sum := sha256.Sum256([]byte(state))
		if ok && subtle.ConstantTimeCompare([]byte(res.corrID), []byte(hex.EncodeToString(sum[:]))) != 1 {
			v.NotThisLogin, ok, res = true, true, result{}
		}
		v.Profile, v.Failed, v.Pending = res.profile, res.failed, !ok
	}
	if v.JobID == "" && v.Error == "" {
		state := rand.Text()
		http.SetCookie(w, &http.Cookie{Name: stateCookie, Value: state, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: 600})
		v.LoginUserInfo = p.LoginURL(r, "snsapi_userinfo", state)
		v.LoginBs = p.LoginURL(r, "snsapi_base", state)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = page.Execute(w, v)
}

var page = template.Must(template.New("demo").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Demo shop: log in with WeChat</title></head>
<body>
<h1>Demo shop</h1>
{{if .LoginUserInfo}}
<p>Log in to the demo shop with WeChat (app {{.AppID}}):</p>
<p><a id="login" href="{{.LoginUserInfo}}">Log in with WeChat (profile: snsapi_userinfo)</a></p>
<p><a id="login-base" href="{{.LoginBs}}">Log in silently (openid only: snsapi_base)</a></p>
{{else}}
{{if not .StateOK}}<p id="state-check">The state that came back is not the one this browser was given: login refused (start again).</p>
{{else}}<p id="state-check">state checked: this browser started this login.</p>{{end}}
{{if .NotThisLogin}}<p id="correlation-check">The result of job <code>{{.JobID}}</code> is not for the login this browser started (its correlation id is not the hash of this browser's state): login refused (start again).</p>{{end}}
{{if .Error}}<p>Login failed: <b id="error">{{.Error}}</b>{{if .JobID}} (job <code id="job">{{.JobID}}</code>){{end}}</p>{{end}}
{{with .Profile}}
<p id="welcome">Logged in.</p>
<dl>
<dt>openid</dt><dd id="openid">{{.OpenID}}</dd>
<dt>nickname</dt><dd id="nickname">{{.Nickname}}</dd>
<dt>unionid</dt><dd id="unionid">{{.UnionID}}</dd>
<dt>scope</dt><dd id="scope">{{.Scope}}</dd>
<dt>source</dt><dd id="source">{{.Source}}</dd>
{{if .IsSnapshotUser}}<dt>snapshot user</dt><dd id="snapshot">yes: a virtual openid from a Moments snapshot page; do not create an account</dd>{{end}}
</dl>
{{end}}
{{with .Failed}}<p>The login job failed: <b id="failed">{{.Error.Kind}}</b> {{.Error.ErrCode}} {{.Error.ErrMsg}}</p>{{end}}
{{if .Pending}}<p id="pending">No result yet for job <code>{{.JobID}}</code>: reload in a moment.</p>{{end}}
<p><a id="again" href="?">Start again</a></p>
{{end}}
</body></html>
`))
