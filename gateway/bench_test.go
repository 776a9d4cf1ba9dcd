package gateway_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// BenchmarkAddedLatency measures what the gateway adds to a call:
// user/info through the gateway with a handle against the same call made
// directly to the simulator with the real token, alternating in the same
// run, at 1, 16 and 64 concurrent callers. Reported: p50 and p99 of
// both, and the added p50/p99 (gateway minus direct), in µs.
//
//	go test -run '^$' -bench AddedLatency -benchtime 2000x ./gateway
func BenchmarkAddedLatency(b *testing.B) {
	e := startEnv(b, func(c *gateway.Config) { c.Logger = slog.New(slog.DiscardHandler) })
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxIdleConns: 256}}
	handle := get(b, hc, tokenURL(e.url, appA, keyShop)).AccessToken
	real := e.sim.ValidToken(appA)
	direct := e.api.URL + wechatsim.PathUserInfo + "?access_token=" + real + "&openid=" + openID
	via := e.url + wechatsim.PathUserInfo + "?access_token=" + handle + "&openid=" + openID
	call := func(u string) time.Duration {
		start := time.Now()
		resp, err := hc.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return time.Since(start)
	}
	// CPU per call (the process's user+system time, all sides included):
	// the difference is the gateway's own work, whatever the machine's
	// load does to the latencies.
	b.Run("cpu-per-call", func(b *testing.B) {
		n := max(b.N, 200)
		phase := func(u string) time.Duration {
			c0 := cpuTime()
			var wg sync.WaitGroup
			for w := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < n; i += 16 {
						call(u)
					}
				}()
			}
			wg.Wait()
			return (cpuTime() - c0) / time.Duration(n)
		}
		cd, cg := phase(direct), phase(via)
		b.ReportMetric(us(cd), "direct-cpu-µs/call")
		b.ReportMetric(us(cg), "gateway-cpu-µs/call")
		b.ReportMetric(us(cg-cd), "added-cpu-µs/call")
		b.ReportMetric(0, "ns/op")
	})
	for _, conc := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("concurrent=%d", conc), func(b *testing.B) {
			for range 50 { // warm the connection pools
				call(direct)
				call(via)
			}
			var mu sync.Mutex
			var d, g []time.Duration
			per := max(1, b.N/conc)
			b.ResetTimer()
			var wg sync.WaitGroup
			for range conc {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ld, lg := make([]time.Duration, 0, per), make([]time.Duration, 0, per)
					for i := range per {
						if i%2 == 0 {
							ld = append(ld, call(direct))
							lg = append(lg, call(via))
						} else {
							lg = append(lg, call(via))
							ld = append(ld, call(direct))
						}
					}
					mu.Lock()
					d, g = append(d, ld...), append(g, lg...)
					mu.Unlock()
				}()
			}
			wg.Wait()
			b.StopTimer()
			dp50, dp99 := pct(d, 50), pct(d, 99)
			gp50, gp99 := pct(g, 50), pct(g, 99)
			b.ReportMetric(us(dp50), "direct-p50-µs")
			b.ReportMetric(us(dp99), "direct-p99-µs")
			b.ReportMetric(us(gp50), "gateway-p50-µs")
			b.ReportMetric(us(gp99), "gateway-p99-µs")
			b.ReportMetric(us(gp50-dp50), "added-p50-µs")
			b.ReportMetric(us(gp99-dp99), "added-p99-µs")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, len(s)*p/100)]
}

func us(d time.Duration) float64 { return float64(d.Microseconds()) }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
