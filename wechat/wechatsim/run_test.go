package wechatsim

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out bytes.Buffer
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, RunConfig{Seed: true, Out: &out, Logger: quiet, Ready: func(addr string) { ready <- addr }})
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run never became ready")
	}
	for _, want := range []string{DemoAppID, "demo secret: fingerprint " + fingerprint(DemoSecret) + " (wechatsim.DemoSecret)", demoFollowers[0].OpenID, addr} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("seed summary lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), DemoSecret) {
		t.Errorf("seed summary prints the demo AppSecret:\n%s", out.String())
	}
	base := "http://" + addr
	resp, err := http.Get(base + PathToken + "?" + url.Values{"grant_type": {"client_credential"}, "appid": {DemoAppID}, "secret": {DemoSecret}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	var tok tokenAnswer
	err = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if err != nil || tok.AccessToken == "" {
		t.Fatalf("token from the demo app: %v %+v", err, tok)
	}
	resp, err = http.Get(base + PathUserInfo + "?" + url.Values{"access_token": {tok.AccessToken}, "openid": {demoFollowers[0].OpenID}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	var info map[string]any
	err = json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	if err != nil || info["unionid"] != demoFollowers[0].UnionID {
		t.Fatalf("demo follower: %v %v", err, info)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func TestRunConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  RunConfig
		ok   bool
	}{
		{"zero", RunConfig{}, true},
		{"negative latency", RunConfig{Latency: -time.Second}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
	if err := Run(context.Background(), RunConfig{Addr: "256.0.0.1:1", Logger: quiet}); err == nil {
		t.Fatal("Run on a bad address succeeded")
	}
}

func TestSeedDemo(t *testing.T) {
	sim := New(WithLogger(quiet))
	d := sim.SeedDemo()
	d2 := sim.SeedDemo()
	if d.AppID != DemoAppID || len(d.OpenIDs) < 3 || len(d2.OpenIDs) != len(d.OpenIDs) {
		t.Fatalf("demo %+v", d)
	}
	withUnion := 0
	for _, f := range demoFollowers {
		if f.UnionID != "" {
			withUnion++
		}
	}
	if withUnion == 0 {
		t.Fatal("no demo follower has a unionid")
	}
}
