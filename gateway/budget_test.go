package gateway_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/gateway"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// uploadAnswer is what the gateway answered stalled upload i (nil: the
// connection ended without an answer).
type uploadAnswer struct {
	i int
	a *wxAnswer
}

// stalledUpload opens a connection, sends an upload's headers announcing
// size bytes and only the first KiB of its body, and sends on answered
// whatever the gateway answers. Closing the connection ends the upload.
func stalledUpload(t *testing.T, base, target string, size, i int, answered chan<- uploadAnswer) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: gw\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", target, size)
	if _, err := io.WriteString(c, head+strings.Repeat("x", 1<<10)); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.SetReadDeadline(time.Now().Add(30 * time.Second)) // the test's own bound
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			answered <- uploadAnswer{i, nil}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var a wxAnswer
		if json.Unmarshal(b, &a) != nil {
			answered <- uploadAnswer{i, nil}
			return
		}
		a.raw = string(b)
		answered <- uploadAnswer{i, &a}
	}()
	return c
}

// TestConcurrentUploadsShareABodyBudget: the request bodies held in
// memory, all calls together, stay within MaxBufferedBytes. Uploads that
// would go over it are answered -1 (busy) within BodyBudgetWait and
// never reach WeChat, instead of waiting or buffering; one announcing no
// length counts as MaxRequestBody; a small one still fits; once the held
// bodies are gone the budget is whole again.
func TestConcurrentUploadsShareABodyBudget(t *testing.T) {
	t.Parallel()
	const (
		bodyLimit = 1 << 20
		budget    = 2 << 20
		upload    = 900 << 10 // two fit in the budget, a third does not
	)
	e := startEnv(t, func(c *gateway.Config) { c.MaxRequestBody, c.MaxBufferedBytes = bodyLimit, budget })
	hc := &http.Client{}
	h := get(t, hc, tokenURL(e.url, appA, keyShop)).AccessToken
	target := "/cgi-bin/media/upload?access_token=" + h + "&type=image"

	answered := make(chan uploadAnswer, 5)
	conns := map[int]net.Conn{}
	for i := range 5 {
		conns[i] = stalledUpload(t, e.url, target, upload, i, answered)
	}
	// Two uploads hold their bodies' bytes; the three others are refused.
	deadline := time.After(15 * time.Second)
	for busy := 0; busy < 3; busy++ {
		select {
		case got := <-answered:
			if got.a == nil || got.a.ErrCode != -1 || !strings.Contains(got.a.ErrMsg, "busy") {
				t.Fatalf("upload %d answered %+v, want -1 busy", got.i, got.a)
			}
			delete(conns, got.i)
		case <-deadline:
			t.Fatalf("%d uploads answered busy in 15 s, want 3", busy)
		}
	}
	wxhubtest.Eventually(t, 10*time.Second, "two uploads holding their bodies", func() bool {
		return gateway.BufferedBytes(e.gw) == 2*upload
	})
	select {
	case got := <-answered:
		t.Fatalf("upload %d answered %+v while its body is on its way", got.i, got.a)
	default:
	}

	tests := []struct {
		name    string
		size    int
		chunked bool
		busy    bool
	}{
		{"announced, over what is left", upload, false, true},
		{"no length: counts as the largest body", 100 << 10, true, true},
		{"announced, within what is left", 100 << 10, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.relayed())
			var body io.Reader = bytes.NewReader(make([]byte, tt.size))
			if tt.chunked {
				body = io.MultiReader(body) // no length: sent chunked
			}
			start := time.Now()
			resp, err := hc.Post(e.url+target, "application/octet-stream", body)
			if err != nil {
				t.Fatal(err)
			}
			a := decodeAnswer(t, resp)
			forwarded := len(e.relayed()) > before
			switch {
			case tt.busy && (a.ErrCode != -1 || !strings.Contains(a.ErrMsg, "busy") || forwarded):
				t.Fatalf("answer %s, forwarded %v; want -1 busy, not forwarded", a.raw, forwarded)
			case !tt.busy && (a.ErrCode != 0 || !forwarded):
				t.Fatalf("answer %s, forwarded %v; want it relayed", a.raw, forwarded)
			case time.Since(start) > 10*time.Second:
				t.Fatalf("answered after %v", time.Since(start))
			}
		})
	}

	for _, c := range conns {
		c.Close()
	}
	wxhubtest.Eventually(t, 10*time.Second, "the budget given back", func() bool {
		return gateway.BufferedBytes(e.gw) == 0
	})
	a := post(t, hc, e.url+target, "application/octet-stream", string(make([]byte, upload)))
	if a.ErrCode != 0 {
		t.Fatalf("an upload once the budget is free: %s", a.raw)
	}
	for _, r := range e.relayed() {
		if r.Path != "/cgi-bin/media/upload" {
			t.Errorf("%s reached WeChat", r.Path)
		}
	}
	if n := len(e.relayed()); n != 2 {
		t.Errorf("%d uploads reached WeChat, want 2 (the small one and the last)", n)
	}
}
