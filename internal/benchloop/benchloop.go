// Package benchloop is the in-process user.lookup benchmark that
// `wxhub worker` and the hand-written nats.go peer (cmd/wxbench) are both
// measured with: one embedded, provisioned nats-server, the in-process
// WeChat simulator with an added latency, a token record in wx_tokens,
// and a closed loop that keeps a bounded number of jobs unresolved.
//
// Everything runs in the benchmark's process, so its CPU per job (the
// cpu-µs/job metric) is the worker's plus the server's, the simulator's
// and the load's: the difference between two workers' figures is the
// difference between the workers. Back-to-back runs agree within a few
// percent, steadier than wxbench's multi-process runs, but on a shared
// host the level drifts by up to ±10% over minutes: compare two builds
// by alternating their test binaries for 8 or more rounds.
//
//	go test -run '^$' -bench Throughput -benchtime 20000x -count 6 ./worker ./cmd/wxbench
package benchloop

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/harness"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// The benchmark's app and its followers.
const (
	AppID     = "wxbenchloop00001"
	Secret    = "benchloop-secret-not-real"
	followers = 100
)

// Case is one benchmark cell.
type Case struct {
	Latency     time.Duration // added by the simulator to every answer
	Concurrency int           // the worker's jobs in flight
}

// Cases are the cells both workers are measured in: CPU-bound (no
// latency) and WeChat-bound (50 ms).
var Cases = []Case{{0, 64}, {50 * time.Millisecond, 256}}

// Name is the sub-benchmark name of c.
func (c Case) Name() string {
	return fmt.Sprintf("latency=%v/concurrency=%d", c.Latency, c.Concurrency)
}

// Env is what a worker under test is given.
type Env struct {
	NATSURL     string         // the embedded server (default topology provisioned)
	WeChat      *wechat.Client // a client of the simulator
	WeChatURL   string         // the simulator's base URL
	Concurrency int
}

// Start starts the worker under test and returns once it takes jobs;
// stop must end it and return its error.
type Start func(ctx context.Context, tb testing.TB, env Env) (stop func() error)

// Run measures one case: b.N user.lookup jobs published with at most
// 2 × Concurrency unresolved, one op per job from publish to its
// user.profile. It reports jobs/s and cpu-µs/job (the whole process).
func Run(b *testing.B, c Case, start Start) {
	srv := brokertest.Start(b)
	sim := wechatsim.New(wechatsim.WithLogger(slog.New(slog.DiscardHandler)), wechatsim.WithLatency(c.Latency))
	sim.AddApp(AppID, Secret)
	for i := range followers {
		if err := sim.AddFollower(AppID, wechatsim.Follower{OpenID: openID(i), SubscribeTime: 1700000000}); err != nil {
			b.Fatal(err)
		}
	}
	hs := httptest.NewServer(sim)
	b.Cleanup(hs.Close)
	wc, err := wechat.NewClient(wechat.Config{BaseURL: hs.URL})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := putToken(ctx, srv.JS, wc); err != nil {
		b.Fatal(err)
	}
	stop := start(ctx, b, Env{NATSURL: srv.URL, WeChat: wc, WeChatURL: hs.URL, Concurrency: c.Concurrency})
	b.Cleanup(func() {
		if err := stop(); err != nil {
			b.Errorf("worker: %v", err)
		}
	})

	// Results are counted on a core subscription of the result subject;
	// each frees a place in the window.
	window := make(chan struct{}, 2*c.Concurrency)
	var got atomic.Int64
	want := int64(b.N)
	all := make(chan struct{})
	resNC := srv.Conn(b)
	sub, err := resNC.Subscribe(events.SubjectUserProfile, func(*nats.Msg) {
		<-window
		if got.Add(1) == want {
			close(all)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	sub.SetPendingLimits(-1, -1)
	failed, err := resNC.Subscribe(events.SubjectUserProfileFailed, func(m *nats.Msg) {
		b.Errorf("job failed: %s", m.Data)
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = failed.Unsubscribe() }()
	if err := resNC.Flush(); err != nil {
		b.Fatal(err)
	}
	pubJS, err := jetstream.New(srv.Conn(b), jetstream.WithPublishAsyncMaxPending(1024))
	if err != nil {
		b.Fatal(err)
	}

	b.ReportAllocs()
	b.ResetTimer()
	startAt := time.Now()
	cpuStart, err := harness.ReadCPU(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	published := make(chan error, 1)
	go func() {
		for i := range b.N {
			window <- struct{}{}
			m := nats.NewMsg(events.SubjectUserLookup)
			id := fmt.Sprintf("bench-%d", i)
			m.Data, _ = json.Marshal(events.UserLookup{JobID: id, AppID: AppID, OpenID: openID(i % followers)})
			m.Header.Set(events.HeaderMsgID, id)
			if _, err := pubJS.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
				published <- fmt.Errorf("publish: %w", err)
				return
			}
		}
		published <- nil
	}()
	select {
	case <-all:
	case err := <-published:
		if err != nil {
			b.Fatal(err)
		}
		select {
		case <-all:
		case <-time.After(5 * time.Minute):
			b.Fatalf("%d of %d results", got.Load(), want)
		}
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d results", got.Load(), want)
	}
	b.StopTimer()
	cpuEnd, err := harness.ReadCPU(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(startAt).Seconds(), "jobs/s")
	b.ReportMetric(float64((cpuEnd-cpuStart).Microseconds())/float64(b.N), "cpu-µs/job")
}

// putToken stores a fresh token of the simulator's app in wx_tokens, as a
// holder would.
func putToken(ctx context.Context, js jetstream.JetStream, wc *wechat.Client) error {
	tok, err := wc.Token(ctx, AppID, Secret)
	if err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, events.BucketTokens)
	if err != nil {
		return err
	}
	now := time.Now()
	rec, err := json.Marshal(events.TokenRecord{AppID: AppID, AccessToken: tok.Token, ExpiresAt: now.Add(tok.ExpiresIn),
		FetchedAt: now, Version: 1, Mode: events.ModeToken, Holder: "benchloop"})
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, AppID, rec)
	return err
}

func openID(i int) string { return fmt.Sprintf("o%05d", i) }
