package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/worker"
)

// tokenAccounts is the token path of wxhub's accounts layout and nothing
// more: wx_tokens lives in HOLDER; WORKER imports exactly the stream info
// and the direct get of that bucket under $JS.HOLDER.API, and the
// token.refreshed events. The worker user may publish only those calls
// and subscribe only to its inbox and the events: no consumer create, so
// no KV watch.
const tokenAccounts = `
listen: 127.0.0.1:-1
accounts: {
  HOLDER: {
    jetstream: enabled
    users: [{user: holder, password: holder-pw}]
    exports: [
      {service: "$JS.API.STREAM.INFO.KV_wx_tokens", accounts: [WORKER]}
      {service: "$JS.API.DIRECT.GET.KV_wx_tokens.>", accounts: [WORKER]}
      {stream: "token.refreshed", accounts: [WORKER]}
    ]
  }
  WORKER: {
    jetstream: enabled
    users: [{user: worker, password: worker-pw, permissions: {
      publish: {allow: ["$JS.HOLDER.API.STREAM.INFO.KV_wx_tokens", "$JS.HOLDER.API.DIRECT.GET.KV_wx_tokens.>"]}
      subscribe: {allow: ["_INBOX_worker.>", "token.refreshed"]}
    }}]
    imports: [
      {service: {account: HOLDER, subject: "$JS.API.STREAM.INFO.KV_wx_tokens"}, to: "$JS.HOLDER.API.STREAM.INFO.KV_wx_tokens"}
      {service: {account: HOLDER, subject: "$JS.API.DIRECT.GET.KV_wx_tokens.>"}, to: "$JS.HOLDER.API.DIRECT.GET.KV_wx_tokens.>"}
      {stream: {account: HOLDER, subject: "token.refreshed"}}
    ]
  }
}
`

// TestTokenCacheFollowsAcrossAccounts: a worker in its own account keeps
// the holders' tokens (wx_tokens in HOLDER) with only the stream info and
// direct get it imports and the token.refreshed events: the first record
// at start, a refresh through its event, a refresh whose event was lost
// through WaitNewer. A KV watch, which needs a consumer in HOLDER
// delivering into HOLDER, is impossible there. And a worker started
// without --nats-accounts is told to set it.
func TestTokenCacheFollowsAcrossAccounts(t *testing.T) {
	t.Parallel()
	url := brokertest.StartConfig(t, tokenAccounts)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	connect := func(user string, opts ...nats.Option) *nats.Conn {
		t.Helper()
		// The denied calls below are expected: keep their async errors quiet.
		opts = append(opts, nats.UserInfo(user, user+"-pw"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		nc, err := nats.Connect(url, opts...)
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}

	holderNC := connect("holder")
	holderJS, err := jetstream.New(holderNC)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := holderJS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: events.BucketTokens, History: 5})
	if err != nil {
		t.Fatal(err)
	}
	store := func(v uint64, event bool) {
		t.Helper()
		rec, _ := json.Marshal(events.TokenRecord{AppID: testApp, AccessToken: tokenOf(testApp, v), Version: v, ExpiresAt: time.Now().Add(time.Hour), Mode: events.ModeToken})
		if _, err := tokens.Put(ctx, testApp, rec); err != nil {
			t.Fatal(err)
		}
		if !event {
			return
		}
		ev, _ := json.Marshal(events.TokenRefreshed{AppID: testApp, Version: v, Reason: "test"})
		if err := holderNC.Publish(events.SubjectTokenRefreshed, ev); err != nil {
			t.Fatal(err)
		}
		if err := holderNC.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	store(1, true)

	workerNC := connect("worker", nats.CustomInboxPrefix(grants.Worker.InboxPrefix()))
	streams, err := broker.NewJetStreams(workerNC, grants.Worker, true)
	if err != nil {
		t.Fatal(err)
	}
	c := worker.NewTokenCache(testLogger(t))
	fctx, stopFeed := context.WithCancel(ctx)
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		c.FollowBucket(fctx, streams.Bucket(events.BucketTokens), workerNC, events.SubjectTokenRefreshed, []string{testApp}, time.Hour)
	}()
	defer func() { stopFeed(); <-fed }()
	waitReady(t, c)
	if rec, ok := c.Current(testApp); !ok || rec.Version != 1 {
		t.Fatalf("at start across accounts: %+v %v", rec, ok)
	}

	store(2, true) // the poll is an hour away: only the event can bring it
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	rec, err := worker.WaitVersion(wctx, c, testApp, 2)
	wcancel()
	if err != nil || rec.AccessToken != tokenOf(testApp, 2) {
		t.Fatalf("refresh through its event across accounts: %+v %v", rec, err)
	}

	store(3, false) // the event is lost
	wctx, wcancel = context.WithTimeout(ctx, 10*time.Second)
	rec, err = c.WaitNewer(wctx, testApp, 2)
	wcancel()
	if err != nil || rec.Version != 3 {
		t.Fatalf("lost event, WaitNewer across accounts: %+v %v", rec, err)
	}

	// What the feed replaced: a watch needs a consumer in HOLDER, whose
	// deliveries would be HOLDER's subjects. Neither granted nor imported.
	kv, err := streams.Bucket(events.BucketTokens).KeyValue(ctx, events.BucketTokens)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel = context.WithTimeout(ctx, time.Second)
	w, err := kv.WatchAll(wctx)
	if err == nil {
		select {
		case e := <-w.Updates():
			if e != nil {
				t.Errorf("a KV watch across accounts delivered %s", e.Key())
			}
		case <-wctx.Done():
		}
		_ = w.Stop()
	}
	wcancel()

	// Without --nats-accounts the worker looks in its own account, finds
	// nothing, and is told which flag it lacks.
	local, err := broker.NewJetStreams(workerNC, grants.Worker, false)
	if err != nil {
		t.Fatal(err)
	}
	bctx, bcancel := context.WithTimeout(ctx, 3*time.Second)
	err = broker.Bind(bctx, local)
	bcancel()
	if !errors.Is(err, broker.ErrWrongLayout) || !strings.Contains(err.Error(), "set --nats-accounts") || !strings.Contains(err.Error(), "bucket wx_tokens") {
		t.Fatalf("bind without --nats-accounts: %v", err)
	}
}
