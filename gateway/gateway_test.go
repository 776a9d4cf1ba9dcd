package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// sdk is what an SDK does: fetch a token from /cgi-bin/token, use it,
// and fetch it again when a call answers 40001 (then repeat the call).
type sdk struct {
	t     *testing.T
	hc    *http.Client
	base  string
	appid string
	key   string

	mu       sync.Mutex
	token    string
	fetches  atomic.Int64
	refetch  atomic.Int64
	answers  []string
	keepRaws bool
}

func (s *sdk) fetchToken() error {
	a := get(s.t, s.hc, tokenURL(s.base, s.appid, s.key))
	s.fetches.Add(1)
	if a.ErrCode != 0 || a.AccessToken == "" || a.ExpiresIn <= 0 {
		return fmt.Errorf("token: %s", a.raw)
	}
	s.mu.Lock()
	s.token = a.AccessToken
	if s.keepRaws {
		s.answers = append(s.answers, a.raw)
	}
	s.mu.Unlock()
	return nil
}

// do calls path with the token, refetching it once on 40001 as SDKs do.
func (s *sdk) do(method, path, query, body string) (wxAnswer, error) {
	for try := 0; ; try++ {
		s.mu.Lock()
		u := s.base + path + "?access_token=" + s.token + query
		s.mu.Unlock()
		var a wxAnswer
		if method == http.MethodGet {
			a = get(s.t, s.hc, u)
		} else {
			a = post(s.t, s.hc, u, "application/json", body)
		}
		if s.keepRaws {
			s.mu.Lock()
			s.answers = append(s.answers, a.raw)
			s.mu.Unlock()
		}
		if a.ErrCode == 40001 && try == 0 {
			s.refetch.Add(1)
			if err := s.fetchToken(); err != nil {
				return a, err
			}
			continue
		}
		if a.ErrCode != 0 {
			return a, fmt.Errorf("%s %s: %s", method, path, a.ErrMsg)
		}
		return a, nil
	}
}

// TestFiftySDKsCostNoTokenFetches: 50 SDK processes fetch the token and
// call user/info and a POST through the gateway, while the token rotates
// and WeChat rejects a token with 40001: every call succeeds, and WeChat
// saw no token fetch but the holder's.
func TestFiftySDKsCostNoTokenFetches(t *testing.T) {
	e := startEnv(t)
	if err := e.gw.Ready(); err != nil {
		t.Fatalf("not ready with a token for both apps: %v", err)
	}
	const clients, rounds = 50, 6
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}, Timeout: 30 * time.Second}
	var failed atomic.Int64
	var calls atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	halfway := make(chan struct{})
	var reached atomic.Int64
	sdks := make([]*sdk, clients)
	for i := range sdks {
		sdks[i] = &sdk{t: t, hc: hc, base: e.url, appid: appA, key: keyShop, keepRaws: true}
	}
	for _, s := range sdks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fail := func(err error) {
				failed.Add(1)
				firstErr.Do(func() { t.Errorf("a client call failed: %v", err) })
			}
			if err := s.fetchToken(); err != nil {
				fail(err)
				return
			}
			for r := 0; r < rounds; r++ {
				if r == rounds/2 {
					if reached.Add(1) == clients {
						close(halfway)
					}
					<-halfway // the faults happen while everybody is mid-run
				}
				if a, err := s.do(http.MethodGet, wechatsim.PathUserInfo, "&openid="+openID+"&lang=zh_CN", ""); err != nil || a.OpenID != openID {
					fail(fmt.Errorf("user/info: %v %s", err, a.raw))
				}
				body := `{"user_list":[{"openid":"` + openID + `","lang":"zh_CN"}]}`
				if a, err := s.do(http.MethodPost, wechatsim.PathUserInfoBatch, "", body); err != nil || !strings.Contains(a.raw, openID) {
					fail(fmt.Errorf("batchget: %v %s", err, a.raw))
				}
				calls.Add(2)
			}
		}()
	}
	<-halfway
	// A rotation (the holder fetches a new token) and WeChat rejecting the
	// token in use, during the run.
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathUserInfo, ErrCode: 40001, Count: 3}); err != nil {
		t.Fatal(err)
	}
	before, _ := e.tokens.Current(appA)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.holder.Refresh(ctx, appA); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Logf("manual refresh: %v (a report-driven refresh may have just happened)", err)
	}
	wg.Wait()
	after, _ := e.tokens.Current(appA)

	if failed.Load() != 0 {
		t.Fatalf("%d client calls failed", failed.Load())
	}
	if after.Version <= before.Version {
		t.Fatalf("no rotation happened: version %d → %d", before.Version, after.Version)
	}
	st := e.sim.Stats()
	var holderFetches int64
	for _, a := range e.holder.Status() {
		holderFetches += a.FetchesToday
	}
	wechatFetches := st.TotalCalls(wechatsim.PathToken) + st.TotalCalls(wechatsim.PathStableToken)
	var sdkFetches, refetches int64
	for _, s := range sdks {
		sdkFetches += s.fetches.Load()
		refetches += s.refetch.Load()
	}
	t.Logf("%d clients, %d calls, %d token requests to the gateway (%d after a 40001), WeChat token fetches %d (holder %d), rejected tokens answered 40001: %d",
		clients, calls.Load(), sdkFetches, refetches, wechatFetches, holderFetches, st.ErrCodes["40001"])
	if wechatFetches != holderFetches {
		t.Fatalf("WeChat saw %d token fetches, the holder made %d", wechatFetches, holderFetches)
	}
	if wechatFetches > 4 {
		t.Fatalf("%d token fetches for 2 apps, one rotation and one rejection", wechatFetches)
	}
	if st.ErrCodes["40001"] != 3 {
		t.Fatalf("the injected 40001 fired %d times, want 3", st.ErrCodes["40001"])
	}
	if refetches != 0 {
		t.Fatalf("%d clients saw a 40001: the gateway should have retried with the newer token", refetches)
	}
	var texts []string
	for _, s := range sdks {
		texts = append(texts, s.answers...)
	}
	e.assertNoLeak("an answer to a handle client", texts...)
	e.assertNoLeak("the logs", e.logs.String())
	e.assertNoLeak("the metrics", scrapeMetrics(t))
}
