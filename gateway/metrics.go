package gateway

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/wxhub/wxhub/internal/metrics"
)

// Metrics, on wxhub's registry. Labels: client name, path (bounded: see
// pathLabel), errcode, reason. Never a token, key or secret.
var (
	callsTotal = promauto.With(metrics.Registry).NewCounterVec(prometheus.CounterOpts{
		Name: "wxhub_gateway_calls_total",
		Help: "Calls answered by the gateway, by client, path and errcode (0: success; \"transport\": WeChat unreachable; \"answer_timeout\": the client did not read the answer in time; \"client_gone\": the client went away before its answer was written; \"bad_body\": its request body could not be read, answered 47001).",
	}, []string{"client", "path", "errcode"})
	callDuration = promauto.With(metrics.Registry).NewHistogramVec(prometheus.HistogramOpts{
		Name:    "wxhub_gateway_call_duration_seconds",
		Help:    "Time to answer a gateway call, by client and path (retries and token waits included).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"client", "path"})
	retriesTotal = promauto.With(metrics.Registry).NewCounterVec(prometheus.CounterOpts{
		Name: "wxhub_gateway_retries_total",
		Help: "Calls to WeChat the gateway repeated, by client and reason (token: rejected token; transient: -1, 5xx or network on an idempotent GET).",
	}, []string{"client", "reason"})
)

// Clients that are not (yet) known.
const (
	clientUnknown   = "unknown"   // failed authentication or bad request
	clientAnonymous = "anonymous" // user-token /sns calls: no wxhub credential
)

// maxPathLabels bounds the path label's values; paths seen after that are
// counted as "other" (a client calling random paths cannot blow up the
// metrics).
const maxPathLabels = 200

type pathLabels struct {
	mu   sync.Mutex
	seen map[string]bool
}

// label is path when it has a label already, or when claim is set and
// fewer than maxPathLabels paths have one (it then takes one); else
// "other".
func (p *pathLabels) label(path string, claim bool) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen == nil {
		p.seen = map[string]bool{}
	}
	if p.seen[path] {
		return path
	}
	if !claim || len(p.seen) >= maxPathLabels || len(path) > 128 {
		return "other"
	}
	p.seen[path] = true
	return path
}

func errcodeLabel(code int) string {
	return strconv.Itoa(code)
}
