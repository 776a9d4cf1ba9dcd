package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxhub/wxhub/gateway"
)

// echoUpstream stands for what may sit between the gateway and WeChat (an
// egress proxy) misbehaving: it answers with the URL it was sent, which
// holds the real token or, on a code exchange, the AppSecret. It records
// the queries it got, to prove the credentials were in them.
type echoUpstream struct {
	mu      sync.Mutex
	queries []string
	cuts    atomic.Int32 // calls to /cut so far
}

func (u *echoUpstream) got() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return strings.Join(u.queries, "\n")
}

func (u *echoUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.queries = append(u.queries, r.URL.RawQuery)
	u.mu.Unlock()
	echo := "http://wechat.example" + r.URL.RequestURI()
	switch r.URL.Path {
	case "/cgi-bin/user/info", "/sns/oauth2/access_token":
		w.Header().Set("Location", "http://egress.example/blocked?url="+echo)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusFound)
		fmt.Fprintf(w, `<a href="%s">moved</a>`, echo)
	case "/cgi-bin/getcallbackip", "/cgi-bin/message/custom/send":
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("X-Upstream-Url", echo)
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprintf(w, "<html>bad gateway fetching %s</html>", echo)
	case "/cgi-bin/get_api_domain_ip", "/sns/jscode2session":
		w.Header().Set("Trailer", "X-Echo-Trailer")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream-Url", echo)
		json.NewEncoder(w).Encode(map[string]any{"ip_list": []string{"1.2.3.4"}, "url": echo})
		w.Header().Set("X-Echo-Trailer", echo)
	case "/cgi-bin/media/get": // binary: streamed, never read by the gateway
		w.Header().Set("Trailer", "X-Echo-Trailer")
		w.Header().Set("Content-Type", "image/jpeg")
		w.Header().Set("X-Upstream-Url", echo)
		w.Write(mediaBytes[:1<<20])
		w.Header().Set("X-Echo-Trailer", echo)
	case "/cut":
		if u.cuts.Add(1) == 1 {
			// The first attempt: headers, half of the body, then the
			// connection goes away.
			conn, buf, err := http.NewResponseController(w).Hijack()
			if err != nil {
				panic(err)
			}
			writeCut(buf)
			conn.Close()
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ip_list":["1.2.3.4","5.6.7.8"]}`)
	default:
		http.NotFound(w, r)
	}
}

func writeCut(buf *bufio.ReadWriter) {
	fmt.Fprint(buf, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"ip_list\":[\"1.2.")
	buf.Flush()
}

func withUpstream(h http.Handler, t *testing.T) envOption {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return func(c *gateway.Config) { c.BaseURL = srv.URL; c.RetryInitial = 5 * time.Millisecond }
}

// TestUpstreamNeverEchoesCredentials: WeChat answers HTTP 200; a
// redirect or an error page comes from something in between, and may
// show the URL the gateway sent, with the real token in it or, on a code
// exchange, the AppSecret. Such an answer is replaced by -1 (HTTP 200,
// no Location, nothing of the upstream's body), after the repeats a GET
// is allowed; a 2xx answer passes with the credentials taken out of its
// headers, trailers and (JSON, small) body. No byte of any answer holds
// a real token or an AppSecret.
func TestUpstreamNeverEchoesCredentials(t *testing.T) {
	t.Parallel()
	up := &echoUpstream{}
	e := startEnv(t, withUpstream(up, t))
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	h := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken
	exchange := "/sns/oauth2/access_token?appid=" + appA + "&secret=" + keyShop + "&code=c1&grant_type=authorization_code"
	tests := []struct {
		name, method, target string
		calls                int // upstream calls made
		wantMinusOne         bool
	}{
		{"a 302 to a GET", "GET", "/cgi-bin/user/info?access_token=" + h + "&openid=" + openID, 1, true},
		{"a 302 to a code exchange", "GET", exchange, 1, true},
		{"a 502 to a GET, after the repeats", "GET", "/cgi-bin/getcallbackip?access_token=" + h, 3, true},
		{"a 502 to a POST", "POST", "/cgi-bin/message/custom/send?access_token=" + h, 1, true},
		{"a 200 echoing the URL", "GET", "/cgi-bin/get_api_domain_ip?access_token=" + h, 1, false},
		{"a 200 to a code exchange echoing the URL", "GET", "/sns/jscode2session?appid=" + appA + "&secret=" + keyShop + "&js_code=j1&grant_type=authorization_code", 1, false},
		{"a 200 download echoing the URL", "GET", "/cgi-bin/media/get?access_token=" + h + "&media_id=m1", 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up.mu.Lock()
			up.queries = nil
			up.mu.Unlock()
			var body io.Reader
			if tt.method == "POST" {
				body = strings.NewReader(`{"touser":"o1"}`)
			}
			req, _ := http.NewRequest(tt.method, e.url+tt.target, body)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			dump, err := httputil.DumpResponse(resp, true)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			got := up.got()
			if !strings.Contains(got, e.sim.ValidToken(appA)) && !strings.Contains(got, secretA) {
				t.Fatalf("the upstream got neither the real token nor the AppSecret: %q", got)
			}
			if n := strings.Count(got, "\n") + 1; n != tt.calls {
				t.Errorf("the upstream got %d calls, want %d", n, tt.calls)
			}
			e.assertNoLeak("the answer", string(dump))
			var a wxAnswer
			answer := dump[strings.Index(string(dump), "\r\n\r\n")+4:]
			if tt.wantMinusOne {
				if resp.StatusCode != 200 || resp.Header.Get("Location") != "" || strings.Contains(string(dump), "wechat.example") {
					t.Fatalf("answer %q, want the gateway's own -1", dump)
				}
				if err := json.Unmarshal(answer, &a); err != nil || a.ErrCode != -1 || !strings.HasPrefix(a.ErrMsg, "system error (wxhub gateway: WeChat answered HTTP ") {
					t.Fatalf("body %q, want -1 system error", answer)
				}
				return
			}
			if resp.StatusCode != 200 || !strings.Contains(string(dump), "=[redacted]") ||
				resp.Header.Get("X-Upstream-Url") == "" || resp.Trailer.Get("X-Echo-Trailer") == "" {
				t.Fatalf("answer %q, want it passed with the token taken out", dump)
			}
		})
	}
	e.assertNoLeak("the logs", e.logs.String())
}

// TestGetCutWhilePeekedIsRepeated: a GET whose answer breaks off while
// the gateway reads it for its errcode has sent nothing to the client
// yet: it is a transient failure, repeated with backoff like a -1. A
// POST cut the same way is not repeated (it may have been executed).
func TestGetCutWhilePeekedIsRepeated(t *testing.T) {
	t.Parallel()
	up := &echoUpstream{}
	e := startEnv(t, withUpstream(up, t))
	hc := &http.Client{}
	h := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken

	a := get(t, hc, e.url+"/cut?access_token="+h)
	if a.ErrCode != 0 || !strings.Contains(a.raw, "5.6.7.8") {
		t.Fatalf("GET cut on its first attempt: %s, want the second attempt's answer", a.raw)
	}
	if n := up.cuts.Load(); n != 2 {
		t.Fatalf("the upstream got the GET %d times, want 2", n)
	}

	up.cuts.Store(0)
	resp, err := hc.Post(e.url+"/cut?access_token="+h, "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if n := up.cuts.Load(); n != 1 || !strings.Contains(string(b), `"errcode":-1`) {
		t.Fatalf("POST cut: %d calls, answer %q; want 1 call and -1", n, b)
	}
}

// hintsUpstream answers every call with a 103 Early Hints whose headers
// echo the URL it was sent (the real token in it), then finally with
// status (its body echoing nothing).
func hintsUpstream(status int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		echo := "http://wechat.example" + r.URL.RequestURI()
		w.Header().Set("Link", "<"+echo+">; rel=preload")
		w.Header().Set("X-Upstream-Url", echo)
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Del("X-Upstream-Url")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, `{"ip_list":["1.2.3.4"]}`)
	})
}

// TestInformationalAnswersAreDropped: WeChat's API sends no 1xx
// answers; a 103 Early Hints comes from something in between and may
// echo the URL the gateway sent, with the real token in it. The SDK gets
// no 1xx at all, whatever the final answer, and no byte of the real
// token: ReverseProxy would pass the 103 on as it came, before and
// outside the scrub of final answers.
func TestInformationalAnswersAreDropped(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int // the final answer's
		code   int // the errcode the SDK gets
	}{
		{"a 103, then a 200", http.StatusOK, 0},
		{"a 103, then a 502", http.StatusBadGateway, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := startEnv(t, withUpstream(hintsUpstream(tt.status), t), func(c *gateway.Config) { c.Attempts = 1 })
			h := get(t, http.DefaultClient, tokenURL(e.url, appA, keyShop)).AccessToken
			var (
				mu    sync.Mutex
				hints []string
				codes []int
			)
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, hdr textproto.MIMEHeader) error {
				mu.Lock()
				defer mu.Unlock()
				hints = append(hints, fmt.Sprint(hdr)) // not printed: it may hold the real token
				codes = append(codes, code)
				return nil
			}}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
				"GET", e.url+"/cgi-bin/get_api_domain_ip?access_token="+h, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			dump, err := httputil.DumpResponse(resp, true)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			e.assertNoLeak("the informational answers", hints...)
			if len(hints) != 0 {
				t.Errorf("the client got informational answers %v, want none", codes)
			}
			e.assertNoLeak("the answer", string(dump))
			var a wxAnswer
			if err := json.Unmarshal(dump[strings.Index(string(dump), "\r\n\r\n")+4:], &a); err != nil || a.ErrCode != tt.code ||
				resp.StatusCode != 200 || resp.Header.Get("Link") != "" || resp.Header.Get("X-Upstream-Url") != "" {
				t.Fatalf("answer %q, want HTTP 200, errcode %d and none of the 103's headers", dump, tt.code)
			}
		})
	}
}
