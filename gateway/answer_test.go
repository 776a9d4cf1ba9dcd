package gateway_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// TestAnswerNotReadIsCut: a relayed answer must be written within
// AnswerTimeout from its start. A client that asks for a large download
// and never reads it is cut once the bound is over: its call ends,
// counted under errcode answer_timeout and logged without the handle,
// and a gateway told to stop while such a client holds an answer stops
// at once, not after its drain. An honest reader of the same answer gets
// it whole, and its kept-alive connection serves the next call after the
// bound has passed.
func TestAnswerNotReadIsCut(t *testing.T) {
	t.Parallel()
	const (
		key   = "client-key-stall-0123456789"
		bound = 3 * time.Second // the honest reader takes its 24 MiB within it, even under -race on a busy machine
	)
	e := startEnv(t, func(c *gateway.Config) {
		c.AnswerTimeout = bound
		c.Clients = append(c.Clients, gateway.Client{Name: "stall", Key: key, AppIDs: []string{appA}})
	})
	const series = `wxhub_gateway_calls_total{client="stall",errcode="answer_timeout",path="/cgi-bin/media/get/jssdk"}`
	before := seriesValue(scrapeMetrics(t), series) // -count=N runs share the registry
	hc := &http.Client{Transport: &http.Transport{}}
	h := get(t, hc, tokenURL(e.url, appA, key)).AccessToken
	target := "/cgi-bin/media/get/jssdk?media_id=m1&access_token=" + h
	want := sha(bigMedia())

	// The honest reader: the whole answer.
	resp, err := hc.Get(e.url + target)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.New()
	n, err := io.Copy(s, resp.Body)
	resp.Body.Close()
	if err != nil || n != int64(len(bigMedia())) || hex.EncodeToString(s.Sum(nil)) != want {
		t.Fatalf("honest reader: %d bytes, err %v; want the whole %d-byte answer", n, err, len(bigMedia()))
	}

	reached := func(want int) func() bool {
		return func() bool {
			got := 0
			for _, a := range e.relayed() {
				if a.Path == "/cgi-bin/media/get/jssdk" {
					got++
				}
			}
			return got >= want
		}
	}
	stall := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		return c // never read while the gateway answers
	}

	// A client that never reads: its call ends once the bound is over.
	c1 := stall()
	wxhubtest.Eventually(t, 10*bound, "the call of the client that does not read ended, counted", func() bool {
		return seriesValue(scrapeMetrics(t), series)-before == 1
	})
	got := readAll(t, c1)
	if got >= int64(len(bigMedia())) {
		t.Fatalf("the client that did not read got %d bytes: the whole answer", got)
	}
	logs := e.logs.String()
	var cut map[string]any
	for _, line := range strings.Split(logs, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "gateway: the client did not read the answer in time; connection cut" {
			cut = m
		}
	}
	if q, _ := cut["query"].(string); cut["client"] != "stall" || !strings.Contains(q, "access_token=%5Bredacted%5D") {
		t.Errorf("the cut answer logged as %v, want it with the client and the query scrubbed", cut)
	}
	if strings.Contains(logs, h) {
		t.Error("the log holds the handle")
	}
	e.assertNoLeak("the logs", logs)

	// The honest reader's connection, reused after its answer's bound
	// has passed (the cut above came after it), still serves.
	reused := false
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
	req, _ := http.NewRequestWithContext(ctx, "GET", tokenURL(e.url, appA, key), nil)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatalf("a call on the kept-alive connection after the bound: %v", err)
	}
	if a := decodeAnswer(t, resp); a.AccessToken != h || !reused {
		t.Fatalf("a call on the kept-alive connection after the bound: %s, reused %v", a.raw, reused)
	}

	// Stopping while a client holds an answer unread: Run returns, with
	// no drain error, once that answer's bound is over, long before the
	// drain's end.
	stall()
	wxhubtest.Eventually(t, 10*time.Second, "the second unread call at WeChat", reached(3))
	start := time.Now()
	e.stop()
	select {
	case err := <-e.stopped:
		e.stopped <- err // for the cleanup
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		t.Logf("stopped after %v (drain %v)", time.Since(start), e.gw.DrainTimeout())
	case <-time.After(10 * bound):
		t.Fatalf("the gateway had not stopped %v after it was told to (its drain: %v): an unread answer holds it", 10*bound, e.gw.DrainTimeout())
	}
}

// readAll reads what the gateway sent on c until it closed the
// connection (bounded by the test's own deadline).
func readAll(t *testing.T, c net.Conn) int64 {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the gateway did not close the connection of the client that did not read (%d bytes read)", n)
	}
	return n
}
