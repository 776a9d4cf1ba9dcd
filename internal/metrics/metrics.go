// Package metrics defines wxhub's Prometheus metrics on one registry and
// serves them. Labels never carry a secret: appid, subject, endpoint path,
// errcode and small enumerations only.
package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry holds every wxhub metric plus the Go and process collectors.
var Registry = prometheus.NewRegistry()

var f = promauto.With(Registry)

func init() {
	Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// Job outcomes (label outcome of JobsTotal).
const (
	OutcomeSuccess = "success" // user.profile published
	OutcomeFailed  = "failed"  // user.profile.failed published (not for bad input)
	OutcomeRetry   = "retry"   // nak'd for redelivery
	OutcomeInvalid = "invalid" // bad input or unknown appid: dead letter and user.profile.failed published
	// OutcomeDuplicate: a delivery of a job that already had its result
	// (it has a done record): acked with no WeChat call and no result.
	OutcomeDuplicate = "duplicate"
)

var (
	// JobsTotal counts handled job deliveries by subject and outcome:
	// each delivery under exactly one outcome, so a job counts once under
	// a terminal outcome (success, failed, invalid) plus once under retry
	// per delivery that was nak'd.
	JobsTotal = f.NewCounterVec(prometheus.CounterOpts{
		Name: "wxhub_jobs_total",
		Help: "Job deliveries handled, by job subject and outcome (success, failed, retry, invalid, duplicate).",
	}, []string{"subject", "outcome"})

	// JobDuration observes the time from delivery to ack/nak.
	JobDuration = f.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "wxhub_job_duration_seconds",
		Help:    "Time spent handling one job delivery.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	}, []string{"subject"})

	// WeChatLatency observes WeChat API round trips by endpoint path.
	WeChatLatency = f.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "wxhub_wechat_request_duration_seconds",
		Help:    "WeChat API call latency by endpoint path.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	}, []string{"endpoint"})

	// WeChatErrors counts WeChat errcodes (and transport failures as
	// errcode "transport") by endpoint.
	WeChatErrors = f.NewCounterVec(prometheus.CounterOpts{
		Name: "wxhub_wechat_errors_total",
		Help: "WeChat API errors by endpoint path and errcode (\"transport\" for network, timeout, 5xx, non-JSON).",
	}, []string{"endpoint", "errcode"})

	// TokenExpiresAt is the unix time the current token of an app expires.
	TokenExpiresAt = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wxhub_token_expires_at_seconds",
		Help: "Unix time at which the stored global access_token of the app expires.",
	}, []string{"appid"})

	// TokenRefreshes counts successful token fetches by reason.
	TokenRefreshes = f.NewCounterVec(prometheus.CounterOpts{
		Name: "wxhub_token_refreshes_total",
		Help: "Global access_token fetches stored, by appid and reason (startup, scheduled, invalidated, manual, takeover).",
	}, []string{"appid", "reason"})

	// TokenRefreshFailures counts failed fetches by errcode.
	TokenRefreshFailures = f.NewCounterVec(prometheus.CounterOpts{
		Name: "wxhub_token_refresh_failures_total",
		Help: "Failed global access_token fetches by appid and errcode.",
	}, []string{"appid", "errcode"})

	// TokenInvalidations counts token.invalidated reports by what the holder
	// did with them: accepted, stale, duplicate, rate_limited, quota_reserve, conflict.
	TokenInvalidations = f.NewCounterVec(prometheus.CounterOpts{
		Name: "wxhub_token_invalidations_total",
		Help: "token.invalidated reports by appid and decision (accepted, stale, duplicate, rate_limited, quota_reserve, conflict).",
	}, []string{"appid", "decision"})

	// QuotaUsed is the number of token fetches counted today (China day).
	QuotaUsed = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wxhub_token_quota_used",
		Help: "Global access_token fetches used today (China day) by appid.",
	}, []string{"appid"})

	// QuotaLimit and QuotaReserve are the holder's configured daily fetch
	// limit and reserve for an app in token mode (stable_token apps have
	// no reserve: their forced calls are limited to 20 a day instead):
	// forced refreshes stop once QuotaUsed >= QuotaLimit - QuotaReserve.
	QuotaLimit = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wxhub_token_quota_limit",
		Help: "Daily /cgi-bin/token fetch limit this holder assumes for the appid (WeChat's 2000); token mode apps only.",
	}, []string{"appid"})
	QuotaReserve = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wxhub_token_quota_reserve",
		Help: "Fetches this holder keeps in reserve for the appid (--quota-reserve): forced refreshes stop once wxhub_token_quota_used >= limit - reserve; token mode apps only.",
	}, []string{"appid"})

	// TokenLockout is 1 while a lockout state stops refreshes of an app
	// (holder.Lockout* states: not_leading, conflict, quota_reserve,
	// force_limit, force_exhausted, quota_exhausted, backoff, clock_skew).
	TokenLockout = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wxhub_token_lockout",
		Help: "1 while the state stops refreshes of the app's token, as seen by this holder (not_leading, conflict, quota_reserve, force_limit, force_exhausted, quota_exhausted, backoff, clock_skew).",
	}, []string{"appid", "state"})

	// HolderClockOffset is the holder's clock minus the NATS server's.
	HolderClockOffset = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wxhub_holder_clock_offset_seconds",
		Help: "This holder's clock minus the NATS server's, measured from JetStream message timestamps; beyond the bound (30 s) the holder refuses to lead.",
	}, []string{"holder"})

	// HolderLeader is 1 while this process leads the appid.
	HolderLeader = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wxhub_holder_leader",
		Help: "1 while this holder process is the leader for the appid.",
	}, []string{"appid"})
)

// ErrCode formats an errcode label value.
func ErrCode(code int) string { return strconv.Itoa(code) }

// Handler serves the registry in the Prometheus text format.
func Handler() http.Handler {
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{Registry: Registry})
}
