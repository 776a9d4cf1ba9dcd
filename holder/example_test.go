package holder_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/holder"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// A holder keeps an app's token in wx_tokens; a service reads it with a KV
// watch and reports a rejected token on token.invalidated, after which the
// holder stores a newer version.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// NATS (embedded here) with wxhub's streams and buckets, and the WeChat
	// simulator standing in for api.weixin.qq.com.
	dir, err := os.MkdirTemp("", "wxhub-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	srv, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: dir})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := broker.Provision(ctx, broker.LocalJetStreams(js, grants.Provision), broker.Topology{}); err != nil {
		panic(err)
	}
	sim := wechatsim.New(wechatsim.WithLogger(slog.New(slog.DiscardHandler)))
	sim.AddApp("wx0123456789abcdef", "the-app-secret")
	api := httptest.NewServer(sim)
	defer api.Close()
	wc, _ := wechat.NewClient(wechat.Config{BaseURL: api.URL})

	// The holder.
	h, err := holder.New(holder.Config{
		Conn:   nc,
		WeChat: wc,
		Apps:   []holder.App{{AppID: "wx0123456789abcdef", Secret: "the-app-secret"}},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()

	// A service: keep the current token from a watch of wx_tokens.
	tokens, _ := js.KeyValue(ctx, events.BucketTokens)
	w, _ := tokens.Watch(ctx, "wx0123456789abcdef")
	defer w.Stop()
	next := func() events.TokenRecord {
		for ent := range w.Updates() {
			if ent == nil || ent.Operation() != jetstream.KeyValuePut {
				continue // nil marks the end of the initial values
			}
			var rec events.TokenRecord
			if err := json.Unmarshal(ent.Value(), &rec); err == nil {
				return rec
			}
		}
		panic("watch closed")
	}
	rec := next()
	fmt.Println("token version", rec.Version, "works:", sim.ValidToken("wx0123456789abcdef") == rec.AccessToken)

	// WeChat rejected it (40001): report the version that failed. Any
	// number of such reports cause one refresh.
	report, _ := json.Marshal(events.TokenInvalidated{
		AppID: rec.AppID, Version: rec.Version, ErrCode: 40001, Reporter: "example-service",
	})
	if err := nc.Publish(events.NewSubjects("").TokenInvalidated, report); err != nil {
		panic(err)
	}
	rec = next()
	fmt.Println("token version", rec.Version, "works:", sim.ValidToken("wx0123456789abcdef") == rec.AccessToken)

	cancel()
	<-done
	// Output:
	// token version 1 works: true
	// token version 2 works: true
}
