package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
)

// readyz is one answer of a /readyz.
type readyz struct {
	code int
	body string
}

func getReadyz(t *testing.T, url string) readyz {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return readyz{resp.StatusCode, string(b)}
}

// waitReadyz asks url until its answer satisfies ok, or fails the test
// after d with the last answer. (Nothing announces a change of
// readiness: the process is asked, as a probe would.)
func waitReadyz(t *testing.T, url, what string, d time.Duration, ok func(readyz) bool) readyz {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		r := getReadyz(t, url)
		if ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s still answers %d %q after %v", what, url, r.code, r.body, d)
		}
		<-tick.C
	}
}

// natsDown is the ops port's answer while the process has no NATS
// connection: 503, the nats line failing.
func natsDown(r readyz) bool {
	return r.code == http.StatusServiceUnavailable && strings.Contains(r.body, "nats: ") && !strings.Contains(r.body, "nats: ok")
}

// During a NATS outage `wxhub gateway` keeps serving its cached token: the
// front's /readyz, which the load balancer and the Kubernetes readiness
// probe ask (docs/gateway.md, deploy/kubernetes), stays 200 and a token
// request is answered, while the ops port's /readyz answers 503 naming
// nats. Once NATS is back both are 200 again.
func TestGatewayFrontStaysReadyThroughANATSOutage(t *testing.T) {
	t.Parallel()
	bin := wxhubBinary(t)
	nats := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := nats.JS.KeyValue(ctx, events.BucketTokens)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := json.Marshal(events.TokenRecord{AppID: "wxout", AccessToken: "OUTAGE-TOKEN", Version: 1, Mode: "active",
		FetchedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "wxout", rec); err != nil {
		t.Fatal(err)
	}

	const key = "outage-client-key-0123"
	cmd := exec.Command(bin, "gateway", "--nats-url", nats.URL, "--http-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0",
		"--app", "appid=wxout", "--client", "name=shop,appids=wxout", "--log-format", "json")
	cmd.Env = append(os.Environ(), "WXHUB_CLIENT_KEY_SHOP="+key)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	log := newLineWaiter(stderr, nil)
	front := log.wait(t, regexp.MustCompile(`"msg":"gateway serving".*"url":"(http://[^"]+)"`), 30*time.Second)[1]
	ops := "http://" + log.wait(t, regexp.MustCompile(`"msg":"started".*"ops":"([^"]+)"`), 30*time.Second)[1]

	token := func(when string) {
		t.Helper()
		resp, err := http.Get(front + "/cgi-bin/token?grant_type=client_credential&appid=wxout&secret=" + key)
		if err != nil {
			t.Fatalf("%s: token request: %v", when, err)
		}
		defer resp.Body.Close()
		var tok struct {
			AccessToken string `json:"access_token"`
			ExpiresIn   int    `json:"expires_in"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != http.StatusOK ||
			!strings.HasPrefix(tok.AccessToken, "wxh1_") || tok.ExpiresIn <= 0 {
			t.Fatalf("%s: token answer %d %+v (%v), want a handle", when, resp.StatusCode, tok, err)
		}
	}
	ready := func(r readyz) bool { return r.code == http.StatusOK }
	frontReady := func(when string) {
		t.Helper()
		if r := getReadyz(t, front+"/readyz"); !ready(r) {
			t.Errorf("front /readyz %s: %d %q, want 200 (it holds a token)", when, r.code, r.body)
		}
	}
	waitReadyz(t, front+"/readyz", "before the outage", 10*time.Second, ready)
	waitReadyz(t, ops+"/readyz", "before the outage", 10*time.Second, ready)
	token("before the outage")

	nats.Stop()
	down := waitReadyz(t, ops+"/readyz", "NATS stopped", 10*time.Second, natsDown)
	if !strings.Contains(down.body, "gateway: ok") {
		t.Errorf("ops /readyz during the outage: %q, want the gateway itself ok", down.body)
	}
	frontReady("during the outage")
	token("during the outage")
	frontReady("during the outage, after a token request")
	if r := getReadyz(t, ops+"/readyz"); !natsDown(r) {
		t.Errorf("ops /readyz turned %d %q while NATS was still stopped", r.code, r.body)
	}

	nats.Restart(t)
	back := waitReadyz(t, ops+"/readyz", "NATS restarted", 10*time.Second, ready)
	if !strings.Contains(back.body, "nats: ok") {
		t.Errorf("ops /readyz after the restart: %q, want nats: ok", back.body)
	}
	frontReady("after the restart")
	token("after the restart")
}
