// Command tokenwatch is a service that calls WeChat itself with the token
// wxhub's holder keeps: it watches the app's record in the wx_tokens
// bucket, and when WeChat rejects the token it reports the version it used
// on token.invalidated and waits for the holder's newer token. It needs
// nothing but nats.go, and runs as is against `make run`:
//
//	go run ./docs/examples/tokenwatch           # print each new token version
//	go run ./docs/examples/tokenwatch -report   # also report the current one as rejected, once
//
// NATS_URL selects another server (default nats://127.0.0.1:4222). Only
// trusted services may read wx_tokens; business systems publish jobs.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// tokenRecord is the value under the appid key in wx_tokens.
type tokenRecord struct {
	AppID       string    `json:"appid"`
	AccessToken string    `json:"access_token"`
	ExpiresAt   time.Time `json:"expires_at"`
	Version     uint64    `json:"version"`
}

func main() {
	report := flag.Bool("report", false, "report the current token as rejected (errcode 40001) once, and exit when a newer one arrives")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	url := os.Getenv("NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	// The demo app `make run` configures; use your own here.
	if err := watch(ctx, url, "wxdemo0000000001", *report, func(r *tokenRecord) {
		fmt.Printf("token version %d, expires %s\n", r.Version, r.ExpiresAt.Format(time.RFC3339))
	}); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "tokenwatch:", err)
		os.Exit(1)
	}
}

// watch keeps appid's current token in memory and calls onNew for each
// version. With report, it reports the first version it sees as rejected
// and returns once a newer version arrives.
func watch(ctx context.Context, url, appid string, report bool, onNew func(*tokenRecord)) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, "wx_tokens")
	if err != nil {
		return err
	}
	w, err := kv.Watch(ctx, appid)
	if err != nil {
		return err
	}
	defer w.Stop()

	var current atomic.Pointer[tokenRecord] // what your WeChat calls read
	var reported uint64
	for {
		var ent jetstream.KeyValueEntry
		select {
		case ent = <-w.Updates():
		case <-ctx.Done():
			return ctx.Err()
		}
		if ent == nil || ent.Operation() != jetstream.KeyValuePut {
			continue // nil marks the end of the stored values
		}
		var rec tokenRecord
		if err := json.Unmarshal(ent.Value(), &rec); err != nil {
			return fmt.Errorf("wx_tokens %s: %w", appid, err)
		}
		current.Store(&rec)
		onNew(&rec)
		switch {
		case report && reported == 0:
			// WeChat answered 40001, 40014 or 42001 to a call made with
			// this token: report the version that failed. Any number of
			// reports for one version cause one refresh.
			if err := reportRejected(nc, &rec, 40001); err != nil {
				return err
			}
			reported = rec.Version
		case report && rec.Version > reported:
			return nil // the holder's new token: retry the call with it
		}
	}
}

// reportRejected publishes token.invalidated for rec's version.
func reportRejected(nc *nats.Conn, rec *tokenRecord, errcode int) error {
	data, err := json.Marshal(map[string]any{
		"appid": rec.AppID, "version": rec.Version, "errcode": errcode, "reporter": "tokenwatch",
	})
	if err != nil {
		return err
	}
	if err := nc.Publish("token.invalidated", data); err != nil {
		return err
	}
	return nc.Flush()
}
