package holder

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// One holder keeps several apps (inline secret, secret file, stable_token);
// neither AppSecrets nor tokens ever show up in logs, events, leases or
// quota records, even when fetches fail.
func TestManyAppsSecretsNeverLeak(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	inline := e.newApp(events.ModeToken)
	fromFile := e.newApp(events.ModeToken)
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte(fromFile.Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fileSecret := fromFile.Secret
	fromFile.Secret, fromFile.SecretFile = "", file
	stable := e.newApp(events.ModeStableToken)
	apps := []App{inline, fromFile, stable}
	secrets := []string{inline.Secret, fileSecret, stable.Secret}

	// The first fetch of each app fails with an error that names nothing
	// secret by itself, then one app reports an invalid secret once.
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathToken, ErrCode: -1, Count: 2}); err != nil {
		t.Fatal(err)
	}
	if err := e.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathStableToken, HTTPStatus: 500, Count: 1}); err != nil {
		t.Fatal(err)
	}
	r := e.start(e.config("h1", apps...), nil)
	for _, a := range apps {
		waitRefreshed(t, e, a.AppID, 1)
	}
	if !r.h.Ready() {
		t.Error("Ready() = false with every token stored")
	}
	for _, a := range apps {
		if err := r.h.Refresh(ctx, a.AppID); err != nil {
			t.Fatalf("refresh %s: %v", a.AppID, err)
		}
	}
	if err := r.h.Refresh(ctx, "wxunknown"); err == nil {
		t.Error("refresh of an unknown app succeeded")
	}
	e.report(inline.AppID, 2, 1)
	e.clock.Advance(time.Minute)
	e.report(inline.AppID, 2, 1)
	waitRefreshed(t, e, inline.AppID, 3)

	// Gather every token ever stored.
	var tokens []string
	for _, a := range apps {
		hist, err := e.tokens.History(ctx, a.AppID)
		if err != nil {
			t.Fatal(err)
		}
		for _, ent := range hist {
			var rec events.TokenRecord
			if json.Unmarshal(ent.Value(), &rec) == nil && rec.AccessToken != "" {
				tokens = append(tokens, rec.AccessToken)
			}
		}
		if fetches := e.fetches(a.AppID); fetches < 2 {
			t.Errorf("%s: %d fetches, want >= 2", a.AppID, fetches)
		}
	}
	if len(tokens) < 6 {
		t.Fatalf("only %d tokens in history", len(tokens))
	}
	r.stop(t)

	var places []string
	places = append(places, "logs:"+e.logs.String())
	for _, ev := range e.events.raw() {
		places = append(places, "event:"+string(ev))
	}
	for _, bucket := range []string{events.BucketLeases, events.BucketQuota} {
		kv, err := e.nats.JS.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		lister, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for k := range lister.Keys() {
			hist, err := kv.History(ctx, k)
			if err != nil && err != jetstream.ErrKeyNotFound {
				t.Fatal(err)
			}
			for _, ent := range hist {
				places = append(places, bucket+":"+k+"="+string(ent.Value()))
			}
		}
	}
	for _, p := range places {
		for _, s := range secrets {
			if strings.Contains(p, s) {
				t.Errorf("an AppSecret appears in %.80s", p)
			}
		}
		for _, tok := range tokens {
			if strings.Contains(p, tok) {
				t.Errorf("an access_token appears in %.80s", p)
			}
		}
	}
	if !strings.Contains(e.logs.String(), "fingerprint") {
		t.Error("logs carry no token fingerprint")
	}
}
