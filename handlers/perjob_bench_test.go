package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// The per-job benchmarks (make bench reads them with -benchmem):
// BenchmarkPerJobUserLookup runs the whole handler path of one user.lookup
// job (decode and validate, token from memory, user/info over real HTTP to
// the in-process simulator, result encoding and publish);
// BenchmarkPerJobSimUserInfo is the same HTTP call alone. The difference
// is what the handler path adds per job. The publisher here only counts:
// the JetStream publish is measured end to end by make bench.

const benchAppID, benchSecret = "wxperjob00000001", "perjob-secret"

type staticTokens struct{ rec events.TokenRecord }

func (s staticTokens) Current(string) (events.TokenRecord, bool) { return s.rec, true }
func (s staticTokens) WaitNewer(ctx context.Context, _ string, v uint64) (events.TokenRecord, error) {
	if s.rec.Version > v {
		return s.rec, nil
	}
	<-ctx.Done()
	return events.TokenRecord{}, ctx.Err()
}

type noInvalidate struct{}

func (noInvalidate) Invalidate(context.Context, string, uint64, int) error { return nil }

type countingPublisher struct{ n, failed int }

func (p *countingPublisher) Publish(_ context.Context, subject string, _ []byte, _ handlers.Header) (handlers.Stored, error) {
	if subject != events.NewSubjects("").StoredUserProfile {
		p.failed++
	}
	p.n++
	return handlers.Stored{Seq: uint64(p.n)}, nil
}

// noDone: no job is ever done before; records are dropped.
type noDone struct{}

func (noDone) Done(context.Context, string) (events.DoneRecord, bool, error) {
	return events.DoneRecord{}, false, nil
}
func (noDone) MarkDone(context.Context, events.DoneRecord) error { return nil }

// unusedOAuth satisfies handlers.OAuthStore; user.lookup never calls it.
type unusedOAuth struct{}

func (unusedOAuth) Get(context.Context, string) (handlers.OAuthRecord, uint64, error) {
	return handlers.OAuthRecord{}, 0, handlers.ErrOAuthNotFound
}
func (unusedOAuth) Create(context.Context, string, handlers.OAuthRecord) (uint64, error) {
	return 0, fmt.Errorf("unused")
}
func (unusedOAuth) Update(context.Context, string, handlers.OAuthRecord, uint64) (uint64, error) {
	return 0, fmt.Errorf("unused")
}
func (unusedOAuth) Delete(context.Context, string, uint64) error { return fmt.Errorf("unused") }
func (unusedOAuth) Wait(context.Context, string, uint64) error   { return fmt.Errorf("unused") }

func perJobSim(b *testing.B) (*httptest.Server, string) {
	b.Helper()
	sim := wechatsim.New(wechatsim.WithLogger(slog.New(slog.DiscardHandler)))
	sim.AddApp(benchAppID, benchSecret)
	if err := sim.AddFollower(benchAppID, wechatsim.Follower{OpenID: "operjob1", SubscribeTime: 1700000000}); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	b.Cleanup(srv.Close)
	wc, err := wechat.NewClient(wechat.Config{BaseURL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	tok, err := wc.Token(context.Background(), benchAppID, benchSecret)
	if err != nil {
		b.Fatal(err)
	}
	return srv, tok.Token
}

func BenchmarkPerJobUserLookup(b *testing.B) {
	srv, token := perJobSim(b)
	wc, err := wechat.NewClient(wechat.Config{BaseURL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	pub := &countingPublisher{}
	h, err := handlers.New(handlers.Config{
		WeChat: wc, Publisher: pub, OAuth: unusedOAuth{}, Done: noDone{}, Invalidator: noInvalidate{},
		Tokens: staticTokens{rec: events.TokenRecord{AppID: benchAppID, AccessToken: token, Version: 1, ExpiresAt: time.Now().Add(time.Hour)}},
		Apps:   []handlers.App{{AppID: benchAppID, Secret: benchSecret}},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	payload, _ := json.Marshal(events.UserLookup{JobID: "job-1", AppID: benchAppID, OpenID: "operjob1", Lang: "zh_CN"})
	b.ReportAllocs()
	for b.Loop() {
		msg := message.NewMessage(watermill.NewUUID(), payload)
		msg.Metadata.Set(handlers.MetaSubject, events.SubjectUserLookup)
		msg.Metadata.Set(handlers.MetaDelivered, "1")
		if err := h.UserLookup(msg); err != nil {
			b.Fatal(err)
		}
	}
	if pub.failed > 0 || pub.n != b.N {
		b.Fatalf("published %d results (%d not user.profile), want %d profiles", pub.n, pub.failed, b.N)
	}
}

func BenchmarkPerJobSimUserInfo(b *testing.B) {
	srv, token := perJobSim(b)
	wc, err := wechat.NewClient(wechat.Config{BaseURL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := wc.UserInfo(ctx, token, "operjob1", "zh_CN"); err != nil {
			b.Fatal(err)
		}
	}
}
