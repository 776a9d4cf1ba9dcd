package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// TestClientGoneIsNotWeChatUnreachable: a relayed call that fails on
// the client's side, a client that hangs up in the middle of a download
// (closing or resetting its connection) or cancels its request while
// WeChat is slow to answer, is counted under errcode client_gone and
// logged at info, never as transport: transport says WeChat could not be
// reached, and the WxhubGatewayWeChatUnreachable alert watches it, so any
// client could fire the alert by hanging up. A WeChat that cannot be
// reached, or that does not answer within the gateway's own CallTimeout
// while the client waits, is still counted as transport.
func TestClientGoneIsNotWeChatUnreachable(t *testing.T) {
	t.Parallel()
	const download = "/cgi-bin/media/get/jssdk" // 24 MiB: more than the sockets in between buffer
	// hangUp asks for the download over a raw connection, reads a little
	// of the answer, then goes away (resetting the connection when reset).
	hangUp := func(reset bool) func(t *testing.T, e *env, target string) {
		return func(t *testing.T, e *env, target string) {
			c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.ReadFull(c, make([]byte, 256<<10)); err != nil {
				t.Fatalf("the first bytes of the download: %v", err)
			}
			if reset {
				if err := c.(*net.TCPConn).SetLinger(0); err != nil { // Close sends a RST
					t.Fatal(err)
				}
			}
		}
	}
	const upload = "/cgi-bin/media/upload"
	// abandonUpload announces an 8 MiB body on an upload, sends 64 KiB of
	// it, waits until the gateway reads the body (it took the announced
	// length from MaxBufferedBytes), then goes away long before the
	// gateway's body deadline, closing the connection ("close") or
	// resetting it ("reset"), or waits for the gateway's answer ("stall").
	abandonUpload := func(how string) func(t *testing.T, e *env, target string) {
		return func(t *testing.T, e *env, target string) {
			const announced = 8 << 20
			c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			head := "POST " + target + " HTTP/1.1\r\nHost: gw\r\nContent-Type: application/octet-stream\r\n" +
				"Content-Length: " + strconv.Itoa(announced) + "\r\n\r\n"
			if _, err := io.WriteString(c, head+strings.Repeat("x", 64<<10)); err != nil {
				t.Fatal(err)
			}
			wxhubtest.Eventually(t, 10*time.Second, "the gateway reading the body", func() bool {
				return gateway.BufferedBytes(e.gw) == announced
			})
			switch how {
			case "reset":
				if err := c.(*net.TCPConn).SetLinger(0); err != nil { // Close sends a RST
					t.Fatal(err)
				}
			case "stall": // the client waits: the gateway's body deadline cuts it
				c.SetReadDeadline(time.Now().Add(20 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("no answer to a stalled body: %v", err)
				}
				if a := decodeAnswer(t, resp); a.ErrCode != -1 || !strings.Contains(a.ErrMsg, "request body not received in time") {
					t.Fatalf("answer %s, want -1 request body not received in time", a.raw)
				}
			}
			t.Cleanup(func() {
				for _, a := range e.relayed() {
					if a.Path == upload {
						t.Error("the partial upload reached WeChat")
					}
				}
			})
		}
	}
	tests := []struct {
		name string
		opt  envOption // on top of the row's client
		slow bool      // WeChat takes 25 s to answer the call (a delay fault)
		path string
		// label is the call's path label, when not path: a call that is
		// not relayed takes no new one.
		label string
		// call makes the call; target is the path with the query.
		call func(t *testing.T, e *env, target string)
		want string
	}{
		{name: "download, the connection closed after a little", path: download, call: hangUp(false), want: "client_gone"},
		{name: "download, the connection reset after a little", path: download, call: hangUp(true), want: "client_gone"},
		{name: "upload, the connection closed part-way through the body", path: upload, label: "other",
			call: abandonUpload("close"), want: "client_gone"},
		{name: "upload, the connection reset part-way through the body", path: upload, label: "other",
			call: abandonUpload("reset"), want: "client_gone"},
		{name: "upload stalled part-way until the body deadline, the client waiting", path: upload, label: "other",
			opt:  func(c *gateway.Config) { c.CallTimeout = 300 * time.Millisecond },
			call: abandonUpload("stall"), want: "-1"},
		{name: "request cancelled while WeChat is slow", slow: true, path: wechatsim.PathUserInfo, want: "client_gone",
			call: func(t *testing.T, e *env, target string) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, "GET", e.url+target, nil)
				done := make(chan error, 1)
				go func() {
					resp, err := http.DefaultClient.Do(req)
					if err == nil {
						resp.Body.Close()
					}
					done <- err
				}()
				wxhubtest.Eventually(t, 10*time.Second, "the call at WeChat", func() bool {
					for _, a := range e.relayed() {
						if a.Path == wechatsim.PathUserInfo {
							return true
						}
					}
					return false
				})
				cancel()
				if err := <-done; err == nil {
					t.Fatal("the cancelled request was answered")
				}
			}},
		{name: "WeChat unreachable", path: wechatsim.PathUserInfo, want: "transport",
			opt: func(c *gateway.Config) { c.BaseURL = closedURL(t) },
			call: func(t *testing.T, e *env, target string) {
				if a := get(t, http.DefaultClient, e.url+target); a.ErrCode != -1 {
					t.Fatalf("answer %s, want -1", a.raw)
				}
			}},
		{name: "WeChat slower than CallTimeout, the client waiting", slow: true, path: wechatsim.PathUserInfo, want: "transport",
			opt: func(c *gateway.Config) { c.CallTimeout = 500 * time.Millisecond },
			call: func(t *testing.T, e *env, target string) {
				if a := get(t, http.DefaultClient, e.url+target); a.ErrCode != -1 {
					t.Fatalf("answer %s, want -1", a.raw)
				}
			}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client := "gone" + string(rune('a'+i))
			key := "client-key-" + client + "-0123456789"
			e := startEnv(t, func(c *gateway.Config) {
				c.Clients = append(c.Clients, gateway.Client{Name: client, Key: key, AppIDs: []string{appA}})
				if tt.opt != nil {
					tt.opt(c)
				}
			})
			label := tt.path
			if tt.label != "" {
				label = tt.label
			}
			series := func(errcode string) string {
				return `wxhub_gateway_calls_total{client="` + client + `",errcode="` + errcode + `",path="` + label + `"}`
			}
			labels := []string{"client_gone", "transport", "answer_timeout", "-1", "0"}
			before := map[string]float64{} // -count=N runs share the registry
			m := scrapeMetrics(t)
			for _, l := range labels {
				before[l] = seriesValue(m, series(l))
			}
			h := get(t, http.DefaultClient, tokenURL(e.url, appA, key)).AccessToken
			if tt.slow {
				if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathUserInfo, DelayMS: 25000, Count: 1}); err != nil {
					t.Fatal(err)
				}
			}
			target := tt.path + "?media_id=m1&access_token=" + h
			if tt.path == wechatsim.PathUserInfo {
				target = tt.path + "?openid=" + openID + "&access_token=" + h
			}
			tt.call(t, e, target)

			wxhubtest.Eventually(t, 20*time.Second, "the call counted", func() bool {
				m := scrapeMetrics(t)
				n := 0.0
				for _, l := range labels {
					n += seriesValue(m, series(l)) - before[l]
				}
				return n >= 1
			})
			m = scrapeMetrics(t)
			for _, l := range labels {
				want := 0.0
				if l == tt.want {
					want = 1
				}
				if got := seriesValue(m, series(l)) - before[l]; got != want {
					t.Errorf("%s grew by %v, want %v", series(l), got, want)
				}
			}

			logs := e.logs.String()
			var info, warn []map[string]any
			for _, line := range strings.Split(logs, "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(line), &m) != nil || m["role"] != "gateway" {
					continue
				}
				switch m["level"] {
				case "INFO":
					if msg, _ := m["msg"].(string); strings.HasPrefix(msg, "gateway: the client went away") {
						info = append(info, m)
					}
				case "WARN":
					warn = append(warn, m)
				}
			}
			if tt.want == "client_gone" {
				if len(info) != 1 || info[0]["client"] != client || !strings.Contains(info[0]["query"].(string), "access_token=%5Bredacted%5D") {
					t.Errorf("logged at info as %v, want one line with the client and the query scrubbed", info)
				}
				if len(warn) != 0 {
					t.Errorf("a client gone logged at warn: %v", warn)
				}
			} else if len(info) != 0 {
				t.Errorf("WeChat's failure logged as the client gone: %v", info)
			}
			if strings.Contains(logs, h) {
				t.Error("the log holds the handle")
			}
			e.assertNoLeak("the logs", logs)
			e.assertNoLeak("the metrics", m)
		})
	}
}

// closedURL is the URL of a local port nothing listens on (connections
// to it are refused).
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// TestStableTokenClientGoneMidBody: a client that goes away part-way
// through sending its stable_token body (closing or resetting its
// connection) is counted like every other hang-up: errcode client_gone,
// logged at info, under the client unknown (its key is in the body it
// did not finish), never as 47001 data format error, which says the
// client sent a bad body.
func TestStableTokenClientGoneMidBody(t *testing.T) {
	t.Parallel()
	e := startEnv(t)
	const series = `wxhub_gateway_calls_total{client="unknown",errcode="client_gone",path="` + wechatsim.PathStableToken + `"}`
	for _, reset := range []bool{false, true} { // one after the other: the rows share their series
		name := "closed"
		if reset {
			name = "reset"
		}
		t.Run("the connection "+name+" part-way through the body", func(t *testing.T) {
			before := seriesValue(scrapeMetrics(t), series) // -count=N runs share the registry
			logsBefore := len(e.logs.String())
			c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Expect: 100-continue: the server says "100 Continue" when the
			// handler starts reading the body, so the client goes away
			// while the gateway reads it, not before the request came in.
			if _, err := io.WriteString(c, "POST "+wechatsim.PathStableToken+" HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"+
				"Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			br := bufio.NewReader(c)
			if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
				t.Fatalf("status line %q, %v: want 100 Continue", line, err)
			}
			if _, err := io.WriteString(c, `{"grant_type":"client_credential","appid":"`+appA+`","secret":"`+keyShop[:8]); err != nil {
				t.Fatal(err)
			}
			if reset {
				if err := c.(*net.TCPConn).SetLinger(0); err != nil { // Close sends a RST
					t.Fatal(err)
				}
			}
			c.Close()
			wxhubtest.Eventually(t, 10*time.Second, "the call counted", func() bool {
				return strings.Contains(e.logs.String()[logsBefore:], `"msg":"gateway call"`)
			})
			if got := seriesValue(scrapeMetrics(t), series) - before; got != 1 {
				t.Errorf("%s grew by %v, want 1", series, got)
			}
			logs := e.logs.String()[logsBefore:]
			var info int
			for _, line := range strings.Split(logs, "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(line), &m) != nil {
					continue
				}
				switch {
				case m["msg"] == "gateway call" && m["errcode"] != "client_gone":
					t.Errorf("counted as %v", m["errcode"])
				case m["level"] == "WARN" || m["level"] == "ERROR":
					t.Errorf("logged as a failure: %s", line)
				case m["level"] == "INFO" && m["msg"] == "gateway: the client went away while sending its request body" &&
					m["client"] == "unknown" && m["path"] == wechatsim.PathStableToken:
					info++
				}
			}
			if info != 1 {
				t.Errorf("%d info lines for the client gone, want 1", info)
			}
			e.assertNoLeak("the logs", logs)
		})
	}
}
