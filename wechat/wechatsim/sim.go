package wechatsim

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults and WeChat's fixed lifetimes.
const (
	DefaultTokenDailyLimit = 2000
	tokenLifetime          = 7200 * time.Second
	tokenGrace             = 300 * time.Second
	codeLifetime           = 5 * time.Minute
	refreshLifetime        = 30 * 24 * time.Hour
	stableForceDaily       = 20
	stableForceSpacing     = 30 * time.Second
	defaultTokenLen        = 153
)

// Errors returned by the Go API (the HTTP admin API answers 400 with them).
var (
	ErrUnknownApp = errors.New("wechatsim: unknown appid")
	ErrBadInput   = errors.New("wechatsim: bad input")
)

// Option configures a Sim.
type Option func(*Sim)

// WithClock makes the simulator follow c. The default is the real time.
func WithClock(c Clock) Option { return func(s *Sim) { s.clock = c } }

// WithLatency adds d to every API request (not to /_sim/ requests).
func WithLatency(d time.Duration) Option { return func(s *Sim) { s.latency.Store(int64(d)) } }

// WithTokenLength makes global access_tokens (/cgi-bin/token and
// stable_token) n characters long, within 16..2048; the default is 153.
// WeChat's may be about 512, so storage must not truncate them.
func WithTokenLength(n int) Option {
	return func(s *Sim) { s.tokenLen = min(max(n, 16), 2048) }
}

// WithLogger sets the logger; nil means slog.Default().
func WithLogger(l *slog.Logger) Option { return func(s *Sim) { s.log = l } }

// Sim is the simulated WeChat API server. It implements http.Handler and is
// safe for concurrent use. The zero value is not usable; call New.
type Sim struct {
	clock    Clock
	log      *slog.Logger
	latency  atomic.Int64 // time.Duration
	tokenLen int          // of global access_tokens

	appsMu sync.RWMutex
	apps   map[string]*app

	tokMu    sync.RWMutex
	tokens   map[string]*globalToken
	issued   int // tokens issued since the last sweep
	userMu   sync.RWMutex
	userToks map[string]*userToken
	refresh  map[string]*refreshToken
	codes    map[string]*code

	connect connectState

	faultsMu sync.Mutex
	faults   []*faultState
	nFaults  atomic.Int32

	stats statsState

	adminOnce sync.Once
	admin     *http.ServeMux
}

// New returns an empty simulator: no apps, no faults, no latency.
func New(opts ...Option) *Sim {
	s := &Sim{
		clock:    realClock{},
		tokenLen: defaultTokenLen,
		apps:     make(map[string]*app),
		tokens:   make(map[string]*globalToken),
		userToks: make(map[string]*userToken),
		refresh:  make(map[string]*refreshToken),
		codes:    make(map[string]*code),
	}
	s.stats.init()
	for _, o := range opts {
		o(s)
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.clock == nil {
		s.clock = realClock{}
	}
	return s
}

// app is one official account.
type app struct {
	id    string
	bound atomic.Bool
	calls [numEndpoints]atomic.Int64

	quota quotaState

	mu         sync.RWMutex
	secret     string
	latest     *globalToken // newest /cgi-bin/token token
	stable     *globalToken // current stable token
	forceDay   string
	forceCount int
	lastForce  time.Time
	people     map[string]*person
	oauth      oauthSettings
	// refreshLifetime of new grants; 0 means 30 days.
	refreshLifetime time.Duration
}

// person is a follower or a user known only through OAuth (SNS profile).
type person struct {
	f        Follower
	follower bool
	info     []byte // user/info answer without unionid
	infoU    []byte // user/info answer with unionid (when bound)
}

// AddApp registers an app, or changes the secret of a known one.
func (s *Sim) AddApp(appid, secret string) {
	s.appsMu.Lock()
	a, ok := s.apps[appid]
	if !ok {
		a = &app{id: appid, people: make(map[string]*person)}
		a.bound.Store(true)
		a.quota.init()
		s.apps[appid] = a
	}
	s.appsMu.Unlock()
	a.mu.Lock()
	a.secret = secret
	a.mu.Unlock()
	s.log.Debug("wechatsim: app registered", "appid", appid, "secret_fp", fingerprint(secret))
}

func (s *Sim) app(appid string) *app {
	s.appsMu.RLock()
	a := s.apps[appid]
	s.appsMu.RUnlock()
	return a
}

// SetTokenDailyLimit sets how many /cgi-bin/token fetches appid may make
// per China day (default 2000; 200 is a test account's; 0 refuses every
// fetch). Unknown appids are ignored.
func (s *Sim) SetTokenDailyLimit(appid string, n int) {
	_ = s.SetDailyLimit(appid, PathToken, max(n, 0))
}

// SetBoundToOpenPlatform says whether appid is bound to an Open Platform
// account (default true): only then do answers carry unionid.
func (s *Sim) SetBoundToOpenPlatform(appid string, bound bool) {
	if a := s.app(appid); a != nil {
		a.bound.Store(bound)
	}
}

// Follower is a user of an app as the simulator knows it: the user/info
// fields and the SNS profile /sns/userinfo returns. JSON names are WeChat's.
type Follower struct {
	OpenID         string `json:"openid"`
	UnionID        string `json:"unionid,omitempty"`
	Subscribe      *int   `json:"subscribe,omitempty"` // nil means 1
	SubscribeTime  int64  `json:"subscribe_time,omitempty"`
	Language       string `json:"language,omitempty"`
	Remark         string `json:"remark,omitempty"`
	GroupID        int    `json:"groupid,omitempty"`
	TagIDList      []int  `json:"tagid_list,omitempty"`
	SubscribeScene string `json:"subscribe_scene,omitempty"`
	QRScene        int    `json:"qr_scene,omitempty"`
	QRSceneStr     string `json:"qr_scene_str,omitempty"`

	// The SNS profile. WeChat no longer gives sex or region (since late
	// 2021): /sns/userinfo answers sex 0 and empty province, city and
	// country for everyone, so there are no fields for them.
	Nickname   string   `json:"nickname,omitempty"`
	HeadImgURL string   `json:"headimgurl,omitempty"`
	Privilege  []string `json:"privilege,omitempty"`
}

// userInfo is the /cgi-bin/user/info answer, in WeChat's field order.
type userInfo struct {
	Subscribe      int    `json:"subscribe"`
	OpenID         string `json:"openid"`
	Language       string `json:"language"`
	SubscribeTime  int64  `json:"subscribe_time"`
	UnionID        string `json:"unionid,omitempty"`
	Remark         string `json:"remark"`
	GroupID        int    `json:"groupid"`
	TagIDList      []int  `json:"tagid_list"`
	SubscribeScene string `json:"subscribe_scene"`
	QRScene        int    `json:"qr_scene"`
	QRSceneStr     string `json:"qr_scene_str"`
}

type unsubscribedInfo struct {
	Subscribe int    `json:"subscribe"`
	OpenID    string `json:"openid"`
	UnionID   string `json:"unionid,omitempty"`
}

// subscribeScenes are the subscribe_scene values WeChat answers.
var subscribeScenes = []string{
	"ADD_SCENE_SEARCH", "ADD_SCENE_ACCOUNT_MIGRATION", "ADD_SCENE_PROFILE_CARD", "ADD_SCENE_QR_CODE",
	"ADD_SCENE_PROFILE_LINK", "ADD_SCENE_PROFILE_ITEM", "ADD_SCENE_PAID", "ADD_SCENE_WECHAT_ADVERTISEMENT",
	"ADD_SCENE_REPRINT", "ADD_SCENE_LIVESTREAM", "ADD_SCENE_CHANNELS", "ADD_SCENE_OTHERS",
}

func newPerson(f Follower, follower bool) (*person, error) {
	switch {
	case f.OpenID == "":
		return nil, fmt.Errorf("%w: openid is required", ErrBadInput)
	case f.Subscribe != nil && *f.Subscribe != 0 && *f.Subscribe != 1:
		return nil, fmt.Errorf("%w: subscribe must be 0 or 1", ErrBadInput)
	case f.SubscribeScene != "" && !slices.Contains(subscribeScenes, f.SubscribeScene):
		return nil, fmt.Errorf("%w: subscribe_scene %q is not one WeChat answers (%s)", ErrBadInput, f.SubscribeScene, strings.Join(subscribeScenes, ", "))
	}
	f.TagIDList = append([]int(nil), f.TagIDList...)
	f.Privilege = append([]string(nil), f.Privilege...)
	p := &person{f: f, follower: follower}
	sub := 1
	if f.Subscribe != nil {
		sub = *f.Subscribe
		v := sub
		p.f.Subscribe = &v
	}
	var with, without any
	if sub == 0 {
		with = unsubscribedInfo{OpenID: f.OpenID, UnionID: f.UnionID}
		without = unsubscribedInfo{OpenID: f.OpenID}
	} else {
		ui := userInfo{
			Subscribe: sub, OpenID: f.OpenID, Language: f.Language, SubscribeTime: f.SubscribeTime,
			UnionID: f.UnionID, Remark: f.Remark, GroupID: f.GroupID, TagIDList: f.TagIDList,
			SubscribeScene: f.SubscribeScene, QRScene: f.QRScene, QRSceneStr: f.QRSceneStr,
		}
		if ui.Language == "" {
			ui.Language = "zh_CN"
		}
		if ui.TagIDList == nil {
			ui.TagIDList = []int{}
		}
		if ui.SubscribeScene == "" {
			ui.SubscribeScene = "ADD_SCENE_OTHERS"
		}
		with = ui
		ui.UnionID = ""
		without = ui
	}
	var err error
	if p.infoU, err = json.Marshal(with); err != nil {
		return nil, err
	}
	if p.info, err = json.Marshal(without); err != nil {
		return nil, err
	}
	return p, nil
}

// AddFollower adds f as a follower of appid, replacing any earlier record
// of the same openid. It fails if the app is unknown, f has no openid, or
// f holds a value WeChat never answers (subscribe other than 0 or 1, a
// subscribe_scene not in WeChat's list).
func (s *Sim) AddFollower(appid string, f Follower) error { return s.addPerson(appid, f, true) }

// AddSNSUser records the SNS profile of a user who is NOT a follower of
// appid (user/info answers 40003 for it), for OAuth flows.
func (s *Sim) AddSNSUser(appid string, f Follower) error { return s.addPerson(appid, f, false) }

func (s *Sim) addPerson(appid string, f Follower, follower bool) error {
	a := s.app(appid)
	if a == nil {
		return fmt.Errorf("%w %q", ErrUnknownApp, appid)
	}
	p, err := newPerson(f, follower)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.people[f.OpenID] = p
	a.mu.Unlock()
	return nil
}

// subscribed reports whether openid follows the app (subscribe 1).
func (a *app) subscribed(openid string) bool {
	p := a.person(openid)
	return p != nil && p.follower && (p.f.Subscribe == nil || *p.f.Subscribe == 1)
}

func (a *app) person(openid string) *person {
	a.mu.RLock()
	p := a.people[openid]
	a.mu.RUnlock()
	return p
}

// SetLatency sets the latency added to every API request.
func (s *Sim) SetLatency(d time.Duration) { s.latency.Store(int64(d)) }

// Latency returns the latency added to every API request.
func (s *Sim) Latency() time.Duration { return time.Duration(s.latency.Load()) }

// Now returns the simulator's time.
func (s *Sim) Now() time.Time { return s.clock.Now() }

// ValidToken returns the newest /cgi-bin/token token of appid if it is
// still valid, else "". A test helper.
func (s *Sim) ValidToken(appid string) string {
	a := s.app(appid)
	if a == nil {
		return ""
	}
	a.mu.RLock()
	t := a.latest
	a.mu.RUnlock()
	if t == nil || t.check(s.clock.Now()) != 0 {
		return ""
	}
	return t.value
}

// fingerprint identifies a secret in logs: the first 8 hex digits of its
// SHA-256.
func fingerprint(secret string) string {
	if secret == "" {
		return "(empty)"
	}
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:4])
}
