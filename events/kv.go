package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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
	// InvalidatedAt is set (holder clock) when the leader accepted a
	// token.invalidated report against this token and could not refresh
	// it at once (WeChat failing, the fetch backoff): the refresh is still
	// to be made, and the holder that leads next makes it. A newer token
	// is stored without it, so it never outlives the report's version.
	InvalidatedAt time.Time `json:"invalidated_at,omitzero"`
	// ConflictAt is when token.conflict was announced for this token
	// (holder clock): a new leader does not announce it again.
	ConflictAt time.Time `json:"conflict_at,omitzero"`
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

// ForceQuotaKey is the wx_quota key counting a stable_token app's
// force_refresh calls on the China calendar day of t:
// "appid.YYYYMMDD.force".
func ForceQuotaKey(appid string, t time.Time) string {
	return QuotaKey(appid, t) + ".force"
}

// QuotaRecord is the value under a wx_quota key (QuotaKey, or
// ForceQuotaKey for stable_token forced calls): what the holders counted
// on that China day. Only holders write it, with compare-and-swap.
type QuotaRecord struct {
	// Used is the number of WeChat calls counted that day.
	Used int64 `json:"used"`
	// Recent holds the ids of the last fetches counted (at most
	// QuotaRecentFetches, oldest first). A holder whose write timed out
	// after it landed finds its fetch's id here on the retry and does not
	// count the call twice.
	Recent []string `json:"recent,omitempty"`
	// ExhaustedAt is when WeChat answered 45009 to a normal fetch that
	// day (holder clock), ExhaustedBy the holder that got it: no fetch
	// until the China day turns, whichever holder leads.
	ExhaustedAt time.Time `json:"exhausted_at,omitzero"`
	ExhaustedBy string    `json:"exhausted_by,omitempty"`
}

// QuotaRecentFetches bounds QuotaRecord.Recent.
const QuotaRecentFetches = 16

// ParseQuotaRecord decodes a wx_quota value: a QuotaRecord, or a bare
// count (as older holders wrote it, or an operator with `nats kv put`).
func ParseQuotaRecord(b []byte) (QuotaRecord, error) {
	b = bytes.TrimSpace(b)
	if n, err := strconv.ParseInt(string(b), 10, 64); err == nil {
		if n < 0 {
			return QuotaRecord{}, fmt.Errorf("quota record: negative count %d", n)
		}
		return QuotaRecord{Used: n}, nil
	}
	var r QuotaRecord
	if len(b) == 0 || b[0] != '{' {
		return r, errors.New("quota record: neither a count nor a JSON object")
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return QuotaRecord{}, fmt.Errorf("quota record: %w", err)
	}
	if r.Used < 0 {
		return QuotaRecord{}, fmt.Errorf("quota record: negative count %d", r.Used)
	}
	return r, nil
}

// Counted reports whether the fetch id is among the recent ones.
func (r QuotaRecord) Counted(id string) bool {
	for _, x := range r.Recent {
		if x == id {
			return true
		}
	}
	return false
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
