package worker_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

// coreLog is a core NATS subscriber: what a business system that just
// subscribes sees.
type coreLog struct {
	mu      sync.Mutex
	msgs    []*nats.Msg
	changed chan struct{}
}

func (h *harness) subscribeCore(subjects ...string) *coreLog {
	h.t.Helper()
	l := &coreLog{changed: make(chan struct{})}
	nc := h.env.Conn(h.t)
	for _, s := range subjects {
		if _, err := nc.Subscribe(s, func(m *nats.Msg) {
			l.mu.Lock()
			l.msgs = append(l.msgs, m)
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		}); err != nil {
			h.t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		h.t.Fatal(err)
	}
	return l
}

func (l *coreLog) wait(t *testing.T, n int, d time.Duration) []*nats.Msg {
	t.Helper()
	deadline := time.After(d)
	for {
		l.mu.Lock()
		got, ch := append([]*nats.Msg(nil), l.msgs...), l.changed
		l.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("core subscriber: %d of %d messages", len(got), n)
		}
	}
}

// A result stored twice under one Nats-Msg-Id (a redelivery after the
// worker died between publishing and acking) reaches a core subscriber
// once: the stream republishes only what it stored. With a prefix too.
func TestCoreSubscriberGetsOnlyStoredResults(t *testing.T) {
	for _, prefix := range []string{"", "wx."} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			h := newHarness(t, 0)
			ctx := context.Background()
			if prefix != "" {
				if err := broker.Provision(ctx, broker.LocalJetStreams(h.env.JS, grants.Provision), broker.Topology{Prefix: prefix}); err != nil {
					t.Fatal(err)
				}
			}
			s := events.NewSubjects(prefix)
			core := h.subscribeCore(s.Results()...)
			for range 3 {
				m := nats.NewMsg(s.StoredUserProfile)
				m.Header.Set(events.HeaderMsgID, "job-1")
				m.Data = []byte(`{"job_id":"job-1"}`)
				if _, err := h.env.JS.PublishMsg(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			m := nats.NewMsg(s.StoredUserProfileFailed)
			m.Header.Set(events.HeaderMsgID, "job-2")
			m.Data = []byte(`{"job_id":"job-2"}`)
			if _, err := h.env.JS.PublishMsg(ctx, m); err != nil {
				t.Fatal(err)
			}
			got := core.wait(t, 2, 5*time.Second)
			// Anything the stream republished more would arrive before a
			// round trip on a fresh request; flush one through.
			if err := h.env.NC.Flush(); err != nil {
				t.Fatal(err)
			}
			got = core.wait(t, 2, time.Second)
			bySubject := map[string]int{}
			for _, m := range got {
				bySubject[m.Subject]++
			}
			if len(got) != 2 || bySubject[s.UserProfile] != 1 || bySubject[s.UserProfileFailed] != 1 {
				t.Fatalf("core subscriber got %d messages: %v", len(got), bySubject)
			}
			stream, err := h.env.JS.Stream(ctx, events.StreamResults)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := stream.GetLastMsgForSubject(ctx, s.UserProfile)
			if err != nil || string(raw.Data) != `{"job_id":"job-1"}` {
				t.Fatalf("stored under %s: %v %v", s.UserProfile, raw, err)
			}
		})
	}
}

// Results and dead letters carry only the documented headers, and reach
// core subscribers without a reply subject.
func TestPublicMessagesCarryOnlyPublicHeaders(t *testing.T) {
	h := newHarness(t, 1)
	h.holder.rotate()
	s := events.NewSubjects("")
	core := h.subscribeCore(append(s.Results(), s.DeadLetterPrefix+">")...)
	h.startWorker("w", nil)
	h.publishJob(events.SubjectUserLookup, []byte(`not json`), "bad-1", map[string]string{events.HeaderCorrelationID: "c1"})
	h.lookup("good-1", 0)
	got := core.wait(t, 3, 20*time.Second) // a dead letter, its failure, a profile
	allowed := map[string]bool{events.HeaderMsgID: true, events.HeaderCorrelationID: true, events.HeaderDeadLetterReason: true,
		"Nats-Stream": true, "Nats-Subject": true, "Nats-Sequence": true, "Nats-Time-Stamp": true, "Nats-Last-Sequence": true}
	subjects := map[string]bool{}
	for _, m := range got {
		subjects[m.Subject] = true
		if m.Reply != "" {
			t.Errorf("%s reached a core subscriber with reply subject %q", m.Subject, m.Reply)
		}
		for k := range m.Header {
			if !allowed[k] {
				t.Errorf("%s carries the header %s=%q", m.Subject, k, m.Header.Get(k))
			}
		}
	}
	if !subjects[s.UserProfile] || !subjects[s.UserProfileFailed] || !subjects[s.DeadLetter(events.SubjectUserLookup)] {
		t.Fatalf("subjects seen: %v", subjects)
	}
}

// A job far larger than a job may be (plain core publish, no JetStream
// ack to tell the publisher anything) is stored anyway and ends with a
// failure and a dead letter under its Nats-Msg-Id.
func TestOversizedJobEndsWithFailureAndDeadLetter(t *testing.T) {
	h := newHarness(t, 1)
	h.holder.rotate()
	res := h.follow(events.StreamResults)
	dead := h.follow(events.StreamDeadLetters)
	h.startWorker("w", nil)
	big := `{"job_id":"huge-1","appid":"` + testApp + `","openid":"` + strings.Repeat("o", 900<<10) + `"}`
	m := nats.NewMsg(events.SubjectUserLookup)
	m.Header.Set(events.HeaderMsgID, "huge-1")
	m.Data = []byte(big)
	nc := h.env.Conn(t)
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	res.waitIDs(t, 1, 20*time.Second)
	dead.waitIDs(t, 1, 20*time.Second)
	got := res.get("huge-1")
	if len(got) != 1 || got[0].Subject != events.SubjectUserProfileFailed {
		t.Fatalf("results: %+v", got)
	}
	if f := failureOf(t, got[0]); f.JobID != "huge-1" || f.Error.Kind != events.KindInvalidJob || !strings.Contains(f.Error.ErrMsg, "limit 16384") {
		t.Fatalf("failure %+v", f)
	}
	if dl := dead.get("huge-1"); len(dl) != 1 || string(dl[0].Data) != big {
		t.Fatalf("dead letter: %d kept", len(dl))
	}
}

// stealDelivery plays a worker that takes one job and dies with it: it
// creates the durable consumer as the workers do, fetches one delivery and
// never acks it.
func (h *harness) stealDelivery(bare string, ackWait time.Duration, maxDeliver int) jetstream.Msg {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	subject := events.NewSubjects("").Jobs()[0]
	if bare == events.SubjectOAuthCodeReceived {
		subject = events.NewSubjects("").Jobs()[1]
	}
	c, err := h.env.JS.CreateOrUpdateConsumer(ctx, events.StreamJobs, jetstream.ConsumerConfig{
		Durable: worker.ConsumerName(bare), FilterSubject: subject, DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait, MaxDeliver: maxDeliver, MaxAckPending: 1024,
		MaxWaiting: worker.MaxWaiting,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		h.t.Fatal(err)
	}
	for m := range batch.Messages() {
		return m
	}
	h.t.Fatalf("no delivery to steal: %v", batch.Error())
	return nil
}

func (h *harness) putOAuth(key string, rec handlers.OAuthRecord) {
	h.t.Helper()
	ctx := context.Background()
	kv, err := h.env.JS.KeyValue(ctx, events.BucketOAuth)
	if err != nil {
		h.t.Fatal(err)
	}
	b, _ := json.Marshal(rec)
	if _, err := kv.Put(ctx, key, b); err != nil {
		h.t.Fatal(err)
	}
}

// The job that owns a code claim, redelivered after its worker died
// between the exchange and the result, finishes from the identity it
// stored: no second exchange, no "being exchanged elsewhere" failure.
func TestOAuthOwnerRedeliveryFinishesFromStoredIdentity(t *testing.T) {
	h := newHarness(t, 1)
	res := h.follow(events.StreamResults)
	code, err := h.sim.IssueCode(testApp, openID(0), wechatsim.ScopeUserInfo)
	if err != nil {
		t.Fatal(err)
	}
	job, _ := json.Marshal(events.OAuthCodeReceived{JobID: "oauth-1", AppID: testApp, Code: code})
	h.publishJob(events.SubjectOAuthCodeReceived, job, "oauth-1", nil)
	h.stealDelivery(events.SubjectOAuthCodeReceived, 2*time.Second, 2)
	// What the dying delivery stored after exchanging the code.
	h.putOAuth(handlers.OAuthKey(testApp, code), handlers.OAuthRecord{State: handlers.OAuthExchanged, ClaimedBy: "dead-worker",
		ClaimedAt: time.Now().UTC(), JobID: "oauth-1", OpenID: openID(0), Scope: "snsapi_userinfo", UnionID: "u00000"})
	h.startWorker("w", func(c *worker.Config) {
		c.AckWait, c.JobTimeout, c.MaxDeliver = 2*time.Second, 1500*time.Millisecond, 2
	})
	res.waitIDs(t, 1, 20*time.Second)
	got := res.get("oauth-1")
	if len(got) != 1 || got[0].Subject != events.SubjectUserProfile {
		t.Fatalf("results: %+v", got)
	}
	if p := profileOf(t, got[0]); p.OpenID != openID(0) || p.Source != events.SourceSNSOAuth2 || p.UnionID != "u00000" || p.JobID != "oauth-1" {
		t.Fatalf("profile %+v", p)
	}
	if n := h.sim.Stats().CallCount(wechatsim.PathOAuthToken, testApp); n != 0 {
		t.Fatalf("%d code exchanges, want 0", n)
	}
}

// A second job with the same code waits for the owner's outcome (no nak,
// no redelivery delay: the nak delay here is longer than the test allows)
// and publishes a copy under its own job_id; one exchange in all.
func TestOAuthSecondJobWaitsForTheOwnersOutcome(t *testing.T) {
	h := newHarness(t, 1)
	res := h.follow(events.StreamResults)
	code, err := h.sim.IssueCode(testApp, openID(0), wechatsim.ScopeBase)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathOAuthToken, DelayMS: 700, Count: 1}); err != nil {
		t.Fatal(err)
	}
	h.startWorker("w", func(c *worker.Config) { c.NakDelayMin, c.NakDelayMax = 20*time.Second, 20*time.Second })
	for _, id := range []string{"owner-1", "second-1"} {
		job, _ := json.Marshal(events.OAuthCodeReceived{JobID: id, AppID: testApp, Code: code})
		h.publishJob(events.SubjectOAuthCodeReceived, job, id, nil)
	}
	res.waitIDs(t, 2, 8*time.Second)
	for _, id := range []string{"owner-1", "second-1"} {
		got := res.get(id)
		if len(got) != 1 || got[0].Subject != events.SubjectUserProfile {
			t.Fatalf("%s: %+v", id, got)
		}
		if p := profileOf(t, got[0]); p.JobID != id || p.OpenID != openID(0) {
			t.Fatalf("%s: profile %+v", id, p)
		}
	}
	if n := h.sim.Stats().CallCount(wechatsim.PathOAuthToken, testApp); n != 1 {
		t.Fatalf("%d code exchanges, want 1", n)
	}
}

// A second job whose code is owned by a job that never finishes (its
// claim long abandoned) never exchanges the code: it ends, on its last
// delivery, with a failure naming the owner.
func TestOAuthSecondJobNeverExchangesAnAbandonedClaim(t *testing.T) {
	h := newHarness(t, 1)
	res := h.follow(events.StreamResults)
	code, err := h.sim.IssueCode(testApp, openID(0), wechatsim.ScopeBase)
	if err != nil {
		t.Fatal(err)
	}
	h.putOAuth(handlers.OAuthKey(testApp, code), handlers.OAuthRecord{State: handlers.OAuthClaimed, ClaimedBy: "dead-worker",
		ClaimedAt: time.Now().Add(-time.Hour).UTC(), JobID: "owner-1"})
	h.startWorker("w", func(c *worker.Config) {
		c.AckWait, c.JobTimeout, c.MaxDeliver = 2*time.Second, 500*time.Millisecond, 2
	})
	job, _ := json.Marshal(events.OAuthCodeReceived{JobID: "second-1", AppID: testApp, Code: code})
	h.publishJob(events.SubjectOAuthCodeReceived, job, "second-1", nil)
	res.waitIDs(t, 1, 20*time.Second)
	got := res.get("second-1")
	if len(got) != 1 || got[0].Subject != events.SubjectUserProfileFailed {
		t.Fatalf("results: %+v", got)
	}
	if f := failureOf(t, got[0]); f.Error.Kind != events.KindInternal || !strings.Contains(f.Error.ErrMsg, "owner-1") || f.Attempts != 2 {
		t.Fatalf("failure %+v", f)
	}
	if n := h.sim.Stats().CallCount(wechatsim.PathOAuthToken, testApp); n != 0 {
		t.Fatalf("%d code exchanges, want 0", n)
	}
}

// An exchange that answers -1 is not retried (WeChat counts the code as
// used): one exchange, and a failure that says the code was spent and
// carries -1, not the 40163 a retry would get.
func TestOAuthExchangeAnsweringMinusOneIsNotRetried(t *testing.T) {
	h := newHarness(t, 1)
	res := h.follow(events.StreamResults)
	code, err := h.sim.IssueCode(testApp, openID(0), wechatsim.ScopeBase)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.sim.AddFault(wechatsim.Fault{Path: wechatsim.PathOAuthToken, ErrCode: -1, Count: 1}); err != nil {
		t.Fatal(err)
	}
	h.startWorker("w", nil)
	job, _ := json.Marshal(events.OAuthCodeReceived{JobID: "oauth-1", AppID: testApp, Code: code})
	h.publishJob(events.SubjectOAuthCodeReceived, job, "oauth-1", nil)
	res.waitIDs(t, 1, 20*time.Second)
	got := res.get("oauth-1")
	if len(got) != 1 || got[0].Subject != events.SubjectUserProfileFailed {
		t.Fatalf("results: %+v", got)
	}
	if f := failureOf(t, got[0]); f.Error.Kind != events.KindWeChat || f.Error.ErrCode != -1 || f.Error.Retryable || !strings.Contains(f.Error.ErrMsg, "spent") {
		t.Fatalf("failure %+v", f)
	}
	if n := h.sim.Stats().CallCount(wechatsim.PathOAuthToken, testApp); n != 1 {
		t.Fatalf("%d code exchanges, want 1", n)
	}
}

// A job that used all its deliveries but has a done record (its result
// is stored; its worker died before the ack) is deleted by the
// max-deliveries handling without a timeout failure or a dead letter.
func TestMaxDeliveriesSkipsDoneJobs(t *testing.T) {
	h := newHarness(t, 1)
	res := h.follow(events.StreamResults)
	dead := h.follow(events.StreamDeadLetters)
	ctx := context.Background()
	kv, err := h.env.JS.KeyValue(ctx, events.BucketDone)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(events.DoneRecord{JobID: "job-1", JobSubject: events.SubjectUserLookup, ResultSubject: events.SubjectUserProfile, DoneAt: time.Now()})
	if _, err := kv.Put(ctx, events.DoneKey("job-1"), rec); err != nil {
		t.Fatal(err)
	}
	h.lookup("job-1", 0)
	h.stealDelivery(events.SubjectUserLookup, 2*time.Second, 1) // and die with it
	h.startWorker("w", func(c *worker.Config) {
		c.AckWait, c.JobTimeout, c.MaxDeliver, c.SweepInterval = 2*time.Second, 1500*time.Millisecond, 1, 100*time.Millisecond
	})
	stream, err := h.env.JS.Stream(ctx, events.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	wxhubtest.Eventually(t, 20*time.Second, "the given-up job deleted", func() bool {
		info, err := stream.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
	h.lookup("job-2", 0) // a later job's result: the worker has caught up
	res.waitIDs(t, 1, 20*time.Second)
	if byID, total := res.snapshot(); total != 1 || len(byID["job-2"]) != 1 {
		t.Fatalf("results: %v", byID)
	}
	if _, total := dead.snapshot(); total != 0 {
		t.Fatalf("%d dead letters, want 0", total)
	}
}

// Settings under which a job can be redelivered after what keeps it to
// one result is gone are refused.
func TestConfigRefusesUnprotectedRedeliverySpans(t *testing.T) {
	h := newHarness(t, 0)
	base := func() worker.Config {
		return worker.Config{Conn: h.env.NC, WeChat: h.wc, Apps: []worker.App{{AppID: testApp, Secret: testSecret}},
			AckWait: 10 * time.Second, JobTimeout: 8 * time.Second}
	}
	tests := []struct {
		name string
		mod  func(*worker.Config)
		want string // "" means valid
	}{
		{"defaults", func(*worker.Config) {}, ""},
		{"job and finish over AckWait", func(c *worker.Config) { c.FinishTimeout = 2 * time.Second }, "FinishTimeout"},
		{"job timeout at AckWait", func(c *worker.Config) { c.JobTimeout = 10 * time.Second }, "AckWait"},
		{"duplicate window not above AckWait", func(c *worker.Config) { c.Topology.DuplicateWindow = 10 * time.Second }, "duplicate window"},
		{"deliveries outlive the jobs' max age", func(c *worker.Config) {
			c.Topology.JobMaxAge, c.MaxDeliver = 10*time.Minute, 20
		}, "max age"},
		{"short window above AckWait", func(c *worker.Config) { c.Topology.DuplicateWindow = 11 * time.Second }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base()
			tt.mod(&cfg)
			_, err := worker.New(cfg)
			if tt.want == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("err = %v, want one naming %q", err, tt.want)
			}
		})
	}
}

// A duplicate window above AckWait but within the span of a job's
// deliveries is accepted (a test may shorten it on purpose) and warned
// about, naming the span; one longer than the span is not.
func TestConfigWarnsOfAShortDuplicateWindow(t *testing.T) {
	h := newHarness(t, 0)
	tests := []struct {
		name   string
		window time.Duration
		warn   bool
	}{
		{"above AckWait, within the span", 11 * time.Second, true},
		{"at the span", 5 * (10*time.Second + 30*time.Second), true},
		{"beyond the span", 5*(10*time.Second+30*time.Second) + time.Second, false},
		{"the default (10 min)", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs strings.Builder
			cfg := worker.Config{Conn: h.env.NC, WeChat: h.wc, Apps: []worker.App{{AppID: testApp, Secret: testSecret}},
				AckWait: 10 * time.Second, JobTimeout: 8 * time.Second, MaxDeliver: 5,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			cfg.Topology.DuplicateWindow = tt.window
			if _, err := worker.New(cfg); err != nil {
				t.Fatalf("refused: %v", err)
			}
			warned := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "MaxDeliver × (AckWait + NakDelayMax) = 3m20s")
			if warned != tt.warn {
				t.Fatalf("warned %v, want %v:\n%s", warned, tt.warn, logs.String())
			}
		})
	}
}
