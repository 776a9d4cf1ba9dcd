package gateway_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// TestAnonymousCallsHaveASmallBodyLimit: a call without a wxhub
// credential (a /sns call with the user's own token) may carry at most
// 64 KiB; more is refused with 45001 before anything is forwarded, whether
// its length is announced or not. WeChat's /sns endpoints take no body.
func TestAnonymousCallsHaveASmallBodyLimit(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	hc := &http.Client{}
	target := e.url + wechatsim.PathSNSUserInfo + "?access_token=user-token&openid=o1"
	tests := []struct {
		name      string
		size      int
		chunked   bool
		forwarded bool
	}{
		{"announced, over the limit", 64<<10 + 1, false, false},
		{"chunked, over the limit", 64<<10 + 1, true, false},
		{"far over the limit", 8 << 20, false, false},
		{"at the limit", 64 << 10, false, true},
		{"small", 100, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.relayed())
			var body io.Reader = bytes.NewReader(bytes.Repeat([]byte("x"), tt.size))
			if tt.chunked {
				body = io.MultiReader(body) // no length: sent chunked
			}
			resp, err := hc.Post(target, "application/octet-stream", body)
			if err != nil {
				t.Fatal(err)
			}
			a := decodeAnswer(t, resp)
			forwarded := len(e.relayed()) > before
			if forwarded != tt.forwarded || (!tt.forwarded && a.ErrCode != 45001) {
				t.Fatalf("answer %s, forwarded %v; want forwarded %v, else 45001", a.raw, forwarded, tt.forwarded)
			}
		})
	}
	if n := len(e.callLines("anonymous", "45001")); n != 3 {
		t.Errorf("%d refusals logged under the anonymous client, want 3", n)
	}
}

// TestSlowRequestBodyIsCut: the gateway waits at most 2 × CallTimeout for
// a request's body, then answers and closes the connection, instead of
// holding it (and a buffer) for as long as the sender dribbles; also when
// the handler does not read the body.
func TestSlowRequestBodyIsCut(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(c *gateway.Config) { c.CallTimeout = 300 * time.Millisecond })
	h := get(t, &http.Client{}, tokenURL(e.url, appA, keyShop)).AccessToken
	tests := []struct {
		name, head, part string
		code             int
		msg              string
	}{
		{"relayed call", "POST " + wechatsim.PathUserInfoBatch + "?access_token=" + h, `{"user_list":`, -1, "request body not received in time"},
		{"stable_token", "POST /cgi-bin/stable_token", `{"grant_type":`, -1, "request body not received in time"},
		{"a body the handler does not read", "GET /cgi-bin/token?grant_type=client_credential&appid=" + appA + "&secret=" + keyShop, "x", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			if _, err = io.WriteString(c, tt.head+" HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"+tt.part); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Second)) // the test's own bound, far above the gateway's
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer to a stalled body: %v", err)
			}
			a := decodeAnswer(t, resp)
			if a.ErrCode != tt.code || !strings.Contains(a.ErrMsg, tt.msg) {
				t.Fatalf("answer %s, want errcode %d %q", a.raw, tt.code, tt.msg)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("after the answer: %v, want the connection closed", err)
			}
			if d := time.Since(start); d < 600*time.Millisecond {
				t.Errorf("cut after %v, before 2 × CallTimeout", d)
			}
		})
	}
	t.Cleanup(func() {
		for _, r := range e.relayed() {
			if r.Path == wechatsim.PathUserInfoBatch {
				t.Error("the partial call reached WeChat")
			}
		}
	})
}

// TestAnswerCutPartWayIsCounted: an answer that goes over
// MaxResponseBody part-way (no Content-Length to refuse it by) is cut:
// the proxy aborts the handler with http.ErrAbortHandler. The call is
// counted all the same, as transport, and the client sees a broken
// answer, never a complete-looking one.
func TestAnswerCutPartWayIsCounted(t *testing.T) {
	t.Parallel()
	const key = "client-key-cut-0123456789"
	e := startEnv(t, func(c *gateway.Config) {
		c.MaxResponseBody = 1 << 20 // the download is 3 MiB, sent chunked
		c.Clients = append(c.Clients, gateway.Client{Name: "cut", Key: key, AppIDs: []string{appA}})
	})
	const series = `wxhub_gateway_calls_total{client="cut",errcode="transport",path="/cgi-bin/media/get"}`
	before := seriesValue(scrapeMetrics(t), series) // -count=N runs share the registry
	hc := &http.Client{}
	h := get(t, hc, tokenURL(e.url, appA, key)).AccessToken
	resp, err := hc.Get(e.url + "/cgi-bin/media/get?media_id=m1&access_token=" + h)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil || n > 1<<20 {
		t.Fatalf("read %d bytes, err %v: want a cut answer of at most 1 MiB", n, err)
	}
	// The server cut the connection after the handler returned, so the
	// call was counted before the client saw the cut.
	m := scrapeMetrics(t)
	if got := seriesValue(m, series) - before; got != 1 {
		t.Fatalf("%s grew by %v, want 1", series, got)
	}
	if strings.Contains(m, `client="cut",errcode="0",path="/cgi-bin/media/get"`) {
		t.Error("the cut call was counted as a success")
	}
	e.assertNoLeak("the metrics", m)
}

// seriesValue is the value of one series in a metrics scrape (0 when
// absent).
func seriesValue(scrape, series string) float64 {
	for _, line := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// TestUnreadableBodyIsAnswered: a request whose body cannot be read while
// its client is still there (a chunked body that breaks its framing) gets
// WeChat's shape, HTTP 200 and 47001 with the reason, never an empty
// answer; the connection is closed after it (what follows on the wire is
// not a request), nothing reaches WeChat, and the call is counted under
// errcode bad_body and logged at info, the query scrubbed.
func TestUnreadableBodyIsAnswered(t *testing.T) {
	t.Parallel()
	const client, key = "badbody", "client-key-badbody-0123456789"
	e := startEnv(t, func(c *gateway.Config) {
		c.Clients = append(c.Clients, gateway.Client{Name: client, Key: key, AppIDs: []string{appA}})
	})
	h := get(t, &http.Client{}, tokenURL(e.url, appA, key)).AccessToken
	relayed := "POST " + wechatsim.PathUserInfoBatch + "?access_token=" + h
	stable := "POST " + wechatsim.PathStableToken
	const (
		badSize  = "zz\r\n{}\r\n0\r\n\r\n"     // not a hex chunk length
		noCRLF   = "2\r\n{}XX\r\n0\r\n\r\n"    // chunk data not followed by CRLF
		tooLarge = "fffffffffffffffffff\r\n{}" // a chunk length over 64 bits
	)
	tests := []struct {
		name, head, body string
		client, label    string // the call's labels
	}{
		{"relayed call, a chunk length that is not hex", relayed, badSize, client, "other"},
		{"relayed call, chunk data without its CRLF", relayed, noCRLF, client, "other"},
		{"relayed call, a chunk length over 64 bits", relayed, tooLarge, client, "other"},
		{"stable_token, a chunk length that is not hex", stable, badSize, "unknown", wechatsim.PathStableToken},
		{"stable_token, chunk data without its CRLF", stable, noCRLF, "unknown", wechatsim.PathStableToken},
	}
	for _, tt := range tests { // one after the other: the stable_token rows share their series
		t.Run(tt.name, func(t *testing.T) {
			series := `wxhub_gateway_calls_total{client="` + tt.client + `",errcode="bad_body",path="` + tt.label + `"}`
			before := seriesValue(scrapeMetrics(t), series) // -count=N runs share the registry
			logsBefore := len(e.logs.String())
			c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err = io.WriteString(c, tt.head+" HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"+tt.body); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Second)) // the test's own bound
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer to an unreadable body: %v", err)
			}
			a := decodeAnswer(t, resp) // HTTP 200 and JSON, or it fails
			if a.ErrCode != 47001 || !strings.HasPrefix(a.ErrMsg, "data format error (wxhub gateway: request body could not be read: ") ||
				!strings.Contains(a.ErrMsg, " rid: ") {
				t.Fatalf("answer %s, want 47001 data format error, the reason and a rid", a.raw)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("after the answer: %v, want the connection closed", err)
			}
			if got := seriesValue(scrapeMetrics(t), series) - before; got != 1 {
				t.Errorf("%s grew by %v, want 1", series, got)
			}
			logs := e.logs.String()[logsBefore:]
			var info []map[string]any
			for _, line := range strings.Split(logs, "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(line), &m) != nil {
					continue
				}
				if m["level"] == "WARN" || m["level"] == "ERROR" {
					t.Errorf("logged as a failure: %s", line)
				}
				if m["level"] == "INFO" && m["msg"] == "gateway: the request body could not be read" {
					info = append(info, m)
				}
			}
			if len(info) != 1 || info[0]["client"] != tt.client || info[0]["err"] == "" {
				t.Fatalf("logged at info as %v, want one line with the client and the error", info)
			}
			if q, _ := info[0]["query"].(string); tt.client == client && !strings.Contains(q, "access_token=%5Bredacted%5D") {
				t.Errorf("query logged as %q, want the handle redacted", q)
			}
			if strings.Contains(logs, h) {
				t.Error("the log holds the handle")
			}
		})
	}
	for _, r := range e.relayed() {
		if r.Path == wechatsim.PathUserInfoBatch {
			t.Error("a call with an unreadable body reached WeChat")
		}
	}
	e.assertNoLeak("the logs", e.logs.String())
	e.assertNoLeak("the metrics", scrapeMetrics(t))
}
