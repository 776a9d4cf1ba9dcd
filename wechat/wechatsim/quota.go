package wechatsim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/wxhub/wxhub/events"
)

// Call quotas: each app counts its calls of the /cgi-bin/ endpoints per
// China day, refuses them with 45009 over the day's limit, reports them
// at /cgi-bin/openapi/quota/get and zeroes them at /cgi-bin/clear_quota.
//
//   - /cgi-bin/token counts successful fetches; limit 2000 a day.
//   - /cgi-bin/stable_token counts successful answers; limits 500,000 a
//     day and 10,000 a minute (45011, "retry next minute": the calendar
//     minute of the sim clock).
//   - user/info, batchget, getcallbackip and get_api_domain_ip count every
//     call that presents a valid access_token. They have no limit until
//     SetDailyLimit gives them one, so that long benchmarks are not cut
//     off by a figure WeChat's documentation does not state.
//   - A limit of 0 refuses every call; a negative one is no limit.
//   - clear_quota zeroes the day's counts of every endpoint above (not
//     the 20 forced stable_token refreshes, not the minute's count), at
//     most 10 times per China calendar month (then 48006).
const (
	stableDailyLimit  = 500_000
	stableMinuteLimit = 10_000
	clearsPerMonth    = 10
)

// quotaEndpoints are the endpoints whose calls are counted, by cgi_path.
// (A map of its own: endpoints refers to handleQuotaGet.)
var quotaEndpoints = map[string]int{
	PathToken:         epToken,
	PathStableToken:   epStableToken,
	PathUserInfo:      epUserInfo,
	PathUserInfoBatch: epUserInfoBatch,
	PathCallbackIP:    epCallbackIP,
	PathAPIDomainIP:   epAPIDomainIP,
}

// periodCount counts calls in one period (a day, a minute): the period's
// number in the high 32 bits, the count in the low 32, so that a new
// period starts at zero without a lock.
type periodCount struct{ v atomic.Uint64 }

func (c *periodCount) used(period uint64) int64 {
	v := c.v.Load()
	if v>>32 != period {
		return 0
	}
	return int64(v & 0xffffffff)
}

// take counts one call in period unless limit (>= 0) calls were counted
// in it already; it reports whether it counted.
func (c *periodCount) take(period uint64, limit int64) bool {
	for {
		old := c.v.Load()
		var n uint64
		if old>>32 == period {
			n = old & 0xffffffff
		}
		if limit >= 0 && int64(n) >= limit {
			return false
		}
		if c.v.CompareAndSwap(old, period<<32|(n+1)) {
			return true
		}
	}
}

// chinaDayNumber is the China calendar day of t, counted from 1970-01-01.
func chinaDayNumber(t time.Time) uint64 {
	d := (t.Unix() + 8*3600) / 86400
	return uint64(max(d, 0))
}

func minuteNumber(t time.Time) uint64 { return uint64(max(t.Unix()/60, 0)) }

// quotaState is an app's call counts and limits.
type quotaState struct {
	daily       [numEndpoints]periodCount
	limit       [numEndpoints]atomic.Int64 // per China day; < 0: none
	minute      periodCount                // stable_token calls this minute
	minuteLimit atomic.Int64               // < 0: none
	// Under app.mu:
	clearMonth string // China month of clears
	clears     int
}

func (q *quotaState) init() {
	for i := range q.limit {
		q.limit[i].Store(-1)
	}
	q.limit[epToken].Store(DefaultTokenDailyLimit)
	q.limit[epStableToken].Store(stableDailyLimit)
	q.minuteLimit.Store(stableMinuteLimit)
}

// count counts a call of endpoint ep by the app: 0, or 45009 over the
// day's limit (the call is then not counted).
func (q *quotaState) count(ep int, now time.Time) int {
	if !q.daily[ep].take(chinaDayNumber(now), q.limit[ep].Load()) {
		return codeDailyQuota
	}
	return 0
}

// SetDailyLimit sets how many calls of path appid may make per China day;
// a negative n removes the limit. path is /cgi-bin/token (default 2000),
// /cgi-bin/stable_token (default 500,000), or /cgi-bin/user/info,
// user/info/batchget, getcallbackip, get_api_domain_ip (no limit by
// default).
func (s *Sim) SetDailyLimit(appid, path string, n int) error {
	a := s.app(appid)
	if a == nil {
		return fmt.Errorf("%w %q", ErrUnknownApp, appid)
	}
	ep, ok := quotaEndpoints[path]
	if !ok {
		return fmt.Errorf("%w: %s has no daily quota in the simulator", ErrBadInput, path)
	}
	a.quota.limit[ep].Store(int64(max(n, -1)))
	return nil
}

// SetStableTokenMinuteLimit sets how many /cgi-bin/stable_token calls
// appid may make per minute (default 10,000; over it 45011); a negative
// n removes the limit. Unknown appids are ignored.
func (s *Sim) SetStableTokenMinuteLimit(appid string, n int) {
	if a := s.app(appid); a != nil {
		a.quota.minuteLimit.Store(int64(max(n, -1)))
	}
}

type clearQuotaRequest struct {
	AppID string `json:"appid"`
}

// handleClearQuota serves POST /cgi-bin/clear_quota?access_token=T
// {"appid"}: the appid must be the token's own (else 40013).
func (s *Sim) handleClearQuota(w http.ResponseWriter, r *http.Request, now time.Time) (*app, int) {
	var req clearQuotaRequest
	a, c := s.authJSON(r, now, -1, &req)
	if c != 0 {
		return a, c
	}
	if req.AppID != a.id {
		return a, codeInvalidAppID
	}
	month := now.In(events.ChinaTZ).Format("200601")
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.quota.clearMonth != month {
		a.quota.clearMonth, a.quota.clears = month, 0
	}
	if a.quota.clears >= clearsPerMonth {
		return a, codeClearQuotaLimit
	}
	a.quota.clears++
	for i := range a.quota.daily {
		a.quota.daily[i].v.Store(0)
	}
	writeJSONBytes(w, okBody)
	return a, 0
}

type quotaGetRequest struct {
	CGIPath string `json:"cgi_path"`
}

type quotaAnswer struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
	Quota   struct {
		DailyLimit int64 `json:"daily_limit"`
		Used       int64 `json:"used"`
		Remain     int64 `json:"remain"`
	} `json:"quota"`
	RateLimit struct {
		CallCount     int64 `json:"call_count"`
		RefreshSecond int64 `json:"refresh_second"`
	} `json:"rate_limit"`
}

// handleQuotaGet serves POST /cgi-bin/openapi/quota/get?access_token=T
// {"cgi_path"}: the token's app's count of cgi_path today. A path
// without a limit reports daily_limit 0 and remain 0; a path the
// simulator does not count answers 76021.
func (s *Sim) handleQuotaGet(w http.ResponseWriter, r *http.Request, now time.Time) (*app, int) {
	var req quotaGetRequest
	a, c := s.authJSON(r, now, -1, &req)
	if c != 0 {
		return a, c
	}
	ep, ok := quotaEndpoints[req.CGIPath]
	if !ok {
		return a, codeCGIPathNotFound
	}
	ans := quotaAnswer{ErrMsg: "ok"}
	ans.Quota.DailyLimit = max(a.quota.limit[ep].Load(), 0)
	ans.Quota.Used = a.quota.daily[ep].used(chinaDayNumber(now))
	ans.Quota.Remain = max(ans.Quota.DailyLimit-ans.Quota.Used, 0)
	if l := a.quota.minuteLimit.Load(); ep == epStableToken && l >= 0 {
		ans.RateLimit.CallCount, ans.RateLimit.RefreshSecond = l, 60
	}
	writeJSON(w, ans)
	return a, 0
}

// authJSON is globalAuth, then readJSON of the body into v.
func (s *Sim) authJSON(r *http.Request, now time.Time, ep int, v any) (*app, int) {
	a, c := s.globalAuth(r, now, ep)
	if c == 0 {
		c = readJSON(r, v)
	}
	return a, c
}

// readJSON decodes a request body of at most 1 MiB into v: 0, or 47001
// when it is not JSON.
func readJSON(r *http.Request, v any) int {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || json.Unmarshal(body, v) != nil {
		return codeDataFormat
	}
	return 0
}
