package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/worker"
)

// peerCommand is the argument that makes wxbench run as the peer worker
// (wxbench re-executes itself with it).
const peerCommand = "peer-worker"

// The peer is the bar `wxhub worker` is measured against: a user.lookup
// worker written directly on nats.go's jetstream package, as lean as it
// can be while keeping the guarantees wxhub gives:
//
//   - it binds to the same durable pull consumer (explicit acks, the
//     consumer's AckWait and MaxDeliver);
//   - one result per job: the user.profile is published with
//     Nats-Msg-Id = job_id and the stream's PubAck is awaited before the
//     job is acked, so a redelivery after a lost ack is deduplicated;
//   - the contract's done record: a job whose wx_done record exists is
//     acked without a WeChat call, and the record is written after the
//     result is stored (what makes a redelivery past the duplicate window
//     harmless);
//   - the job is acked only after its result and done record are stored
//     (a plain Ack: a lost ack costs one redelivery that ends at the
//     done record);
//   - SIGTERM stops pulling, lets the jobs in hand finish and acks them.
//
// It pulls in batches: one MessagesContext per process with
// PullMaxMessages(2 × concurrency) (nats.go pulls again when half of that
// is left, so a pull is always open for every goroutine that may free up),
// and `concurrency` goroutines (a fixed pool, no goroutine per message)
// run jobs; up to 2 × concurrency jobs can wait in the client buffer. One
// keep-alive HTTP client is shared.
// It handles user.lookup only (wxbench publishes nothing else), has no
// retries, metrics, logs or token-invalidation reports: a failed job is
// nak'd after 1 s.
type peer struct {
	js      jetstream.JetStream
	done    jetstream.KeyValue
	client  *http.Client
	base    string
	appid   string
	results string
	token   atomic.Pointer[string]
}

// runPeerCommand parses the peer's flags and runs it until SIGTERM.
func runPeerCommand(args []string) int {
	fs := flag.NewFlagSet(peerCommand, flag.ExitOnError)
	natsURL := fs.String("nats-url", "", "NATS `url`")
	base := fs.String("wechat-base-url", "", "simulator base `url`")
	appid := fs.String("appid", benchApp.AppID, "the app whose token the peer watches")
	conc := fs.Int("concurrency", 64, "jobs run at once")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := runPeer(ctx, *natsURL, *base, *appid, *conc); err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
		return 1
	}
	return 0
}

func runPeer(ctx context.Context, natsURL, base, appid string, conc int) error {
	nc, err := nats.Connect(natsURL, nats.Name("wxbench peer"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	p := &peer{js: js, client: wechat.NewHTTPClient(), base: base + wechat.PathUserInfo + "?access_token=", appid: appid,
		results: events.NewSubjects("").StoredUserProfile}
	kv, err := js.KeyValue(ctx, events.BucketTokens)
	if err != nil {
		return err
	}
	if p.done, err = js.KeyValue(ctx, events.BucketDone); err != nil {
		return err
	}
	watch, err := kv.Watch(ctx, appid)
	if err != nil {
		return err
	}
	defer watch.Stop()
	haveToken := make(chan struct{})
	go func() {
		var once sync.Once
		for e := range watch.Updates() {
			var rec events.TokenRecord
			if e == nil || e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &rec) != nil {
				continue
			}
			tok := url.QueryEscape(rec.AccessToken)
			p.token.Store(&tok)
			once.Do(func() { close(haveToken) })
		}
	}()
	select {
	case <-haveToken:
	case <-ctx.Done():
		return nil
	}

	cons, err := js.Consumer(ctx, events.StreamJobs, worker.ConsumerName(events.SubjectUserLookup))
	if err != nil {
		return err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * conc))
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				m, err := it.Next()
				if err != nil {
					return // drained or stopped
				}
				p.handle(m)
			}
		}()
	}
	<-ctx.Done()
	it.Drain() // no more pulls; the goroutines finish what is buffered
	wg.Wait()
	return nil
}

// userInfoAnswer is user/info's answer: the profile or an error code.
type userInfoAnswer struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
	wechat.UserInfo
}

func (p *peer) handle(m jetstream.Msg) {
	if err := p.run(m); err != nil {
		_ = m.NakWithDelay(time.Second)
		return
	}
	_ = m.Ack()
}

func (p *peer) run(m jetstream.Msg) error {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	lk, err := events.DecodeUserLookup(m.Data())
	if err != nil {
		return err
	}
	key := events.DoneKey(lk.JobID)
	if _, err := p.done.Get(ctx, key); err == nil {
		return nil // finished before: ack, no second result
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	lang := lk.Lang
	if lang == "" {
		lang = "zh_CN"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+*p.token.Load()+"&openid="+url.QueryEscape(lk.OpenID)+"&lang="+lang, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	var a userInfoAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return err
	}
	if a.ErrCode != 0 || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("user/info: %d %s", a.ErrCode, a.ErrMsg)
	}
	sub := a.Subscribe
	out, err := json.Marshal(events.UserProfile{JobID: lk.JobID, AppID: lk.AppID, OpenID: a.OpenID, Source: events.SourceUserInfo,
		UnionID: a.UnionID, Subscribe: &sub, SubscribeTime: a.SubscribeTime, SubscribeScene: a.SubscribeScene, QRScene: a.QRScene,
		QRSceneStr: a.QRSceneStr, Remark: a.Remark, TagIDList: a.TagIDList, Language: a.Language, CompletedAt: time.Now().UTC()})
	if err != nil {
		return err
	}
	nm := &nats.Msg{Subject: p.results, Data: out, Header: nats.Header{events.HeaderMsgID: {lk.JobID}, events.HeaderCorrelationID: {lk.JobID}}}
	ack, err := p.js.PublishMsg(ctx, nm)
	if err != nil {
		return err
	}
	rec, err := json.Marshal(events.DoneRecord{JobID: lk.JobID, JobSubject: m.Subject(), ResultSubject: events.SubjectUserProfile,
		ResultSeq: ack.Sequence, DoneAt: time.Now().UTC(), By: "peer"})
	if err != nil {
		return err
	}
	_, err = p.done.Put(ctx, key, rec)
	return err
}
