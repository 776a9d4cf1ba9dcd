package harness

import (
	"encoding/json"
	"math"
	"slices"
	"time"
)

// Millis is a duration that marshals to JSON as milliseconds (a float).
type Millis time.Duration

// MarshalJSON writes the duration in milliseconds with microsecond
// precision.
func (m Millis) MarshalJSON() ([]byte, error) {
	ms := float64(m) / float64(time.Millisecond)
	return json.Marshal(math.Round(ms*1000) / 1000)
}

// String formats the duration in milliseconds, e.g. "1.25ms".
func (m Millis) String() string { return FormatMs(time.Duration(m)) }

// FormatMs formats d in milliseconds with a precision that suits its size.
func FormatMs(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms >= 100:
		return formatFloat(ms, 0) + "ms"
	case ms >= 10:
		return formatFloat(ms, 1) + "ms"
	default:
		return formatFloat(ms, 2) + "ms"
	}
}

// Summary describes a set of latencies. The zero value (N == 0) means no
// samples.
type Summary struct {
	N    int    `json:"n"`
	Min  Millis `json:"min_ms"`
	Mean Millis `json:"mean_ms"`
	P50  Millis `json:"p50_ms"`
	P90  Millis `json:"p90_ms"`
	P99  Millis `json:"p99_ms"`
	Max  Millis `json:"max_ms"`
}

// Summarize returns the summary of samples. It does not modify samples.
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Summary{
		N:    len(s),
		Min:  Millis(s[0]),
		Mean: Millis(sum / time.Duration(len(s))),
		P50:  Millis(Percentile(s, 50)),
		P90:  Millis(Percentile(s, 90)),
		P99:  Millis(Percentile(s, 99)),
		Max:  Millis(s[len(s)-1]),
	}
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted samples
// by the nearest-rank method: the smallest sample such that at least p% of
// the samples are less than or equal to it. It returns 0 for no samples;
// p <= 0 gives the minimum and p >= 100 the maximum.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	if p >= 100 {
		return sorted[n-1]
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

// Rate returns n events over d per second; 0 when d is not positive.
func Rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
