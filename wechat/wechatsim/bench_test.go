package wechatsim

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

// BenchmarkUserInfo measures /cgi-bin/user/info over real HTTP on loopback
// with keep-alive connections and no added latency.
func BenchmarkUserInfo(b *testing.B) {
	sim := New(WithLogger(quiet))
	d := sim.SeedDemo()
	srv := httptest.NewServer(sim)
	defer srv.Close()
	tr := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	tokURL := srv.URL + PathToken + "?" + url.Values{"grant_type": {"client_credential"}, "appid": {d.AppID}, "secret": {d.Secret}}.Encode()
	resp, err := client.Get(tokURL)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	u := srv.URL + PathUserInfo + "?" + url.Values{"access_token": {sim.ValidToken(d.AppID)}, "openid": {d.OpenIDs[0]}, "lang": {"zh_CN"}}.Encode()

	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 4096)
		for pb.Next() {
			resp, err := client.Get(u)
			if err != nil {
				b.Error(err)
				return
			}
			n, _ := io.ReadFull(resp.Body, buf)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || n < 100 {
				b.Errorf("HTTP %d, %d bytes", resp.StatusCode, n)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	if n := sim.Stats().CallCount(PathUserInfo, d.AppID); n < int64(b.N) {
		b.Fatalf("counted %d calls, made %d", n, b.N)
	}
}

type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// BenchmarkUserInfoHandler measures the handler alone (no network): what
// the simulator itself costs per user/info call.
func BenchmarkUserInfoHandler(b *testing.B) {
	sim := New(WithLogger(quiet))
	d := sim.SeedDemo()
	rec := httptest.NewRecorder()
	sim.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, PathToken+"?"+url.Values{"grant_type": {"client_credential"}, "appid": {d.AppID}, "secret": {d.Secret}}.Encode(), nil))
	req := httptest.NewRequest(http.MethodGet, PathUserInfo+"?"+url.Values{"access_token": {sim.ValidToken(d.AppID)}, "openid": {d.OpenIDs[0]}}.Encode(), nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{h: http.Header{}}
		for pb.Next() {
			sim.ServeHTTP(w, req)
		}
	})
}
