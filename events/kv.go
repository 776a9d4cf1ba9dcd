package events

import (
	"fmt"
	"time"
)

// Token modes.
const (
	ModeToken       = "token"        // GET /cgi-bin/token
	ModeStableToken = "stable_token" // POST /cgi-bin/stable_token
)

// TokenRecord is the value stored under the appid key in wx_tokens. It holds
// the global access_token: only the holder writes it, and only token users
// (workers, trusted services) may read the bucket.
type TokenRecord struct {
	AppID       string    `json:"appid"`
	AccessToken string    `json:"access_token"`
	ExpiresAt   time.Time `json:"expires_at"`
	FetchedAt   time.Time `json:"fetched_at"`
	Version     uint64    `json:"version"`
	Mode        string    `json:"mode"`
	Holder      string    `json:"holder,omitempty"`
	// Reason is why the holder fetched this token (a token.refreshed
	// reason); "invalidated" tells a new leader that reports against this
	// version within the conflict window mean another system fetches.
	Reason string `json:"reason,omitempty"`
	// LastForcedAt is when the holders last made a forced refresh of this
	// app (reports, manual): its rate limit survives a failover.
	LastForcedAt time.Time `json:"last_forced_at,omitzero"`
}

// Fresh reports whether the token has more than margin left at now.
func (r TokenRecord) Fresh(now time.Time, margin time.Duration) bool {
	return r.AccessToken != "" && r.ExpiresAt.Sub(now) > margin
}

// QuotaKey is the wx_quota key for appid on the China calendar day of t:
// "appid.YYYYMMDD".
func QuotaKey(appid string, t time.Time) string {
	return fmt.Sprintf("%s.%s", appid, ChinaDay(t))
}

// ChinaTZ is UTC+8, the zone WeChat's daily quotas reset in.
var ChinaTZ = time.FixedZone("CST", 8*60*60)

// ChinaDay returns t's calendar day in China as YYYYMMDD.
func ChinaDay(t time.Time) string { return t.In(ChinaTZ).Format("20060102") }

// NextChinaMidnight returns the first instant of the China day after t's.
func NextChinaMidnight(t time.Time) time.Time {
	c := t.In(ChinaTZ)
	return time.Date(c.Year(), c.Month(), c.Day()+1, 0, 0, 0, 0, ChinaTZ)
}
