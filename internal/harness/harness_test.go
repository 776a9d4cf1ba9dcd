package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = ms(i + 1)
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample", []time.Duration{ms(7)}, 99, ms(7)},
		{"median of odd", []time.Duration{ms(1), ms(2), ms(3)}, 50, ms(2)},
		{"median of even takes lower", []time.Duration{ms(1), ms(2), ms(3), ms(4)}, 50, ms(2)},
		{"p99 of 100", hundred, 99, ms(99)},
		{"p99.5 of 100 rounds up", hundred, 99.5, ms(100)},
		{"p1 of 100", hundred, 1, ms(1)},
		{"p0 is min", hundred, 0, ms(1)},
		{"p100 is max", hundred, 100, ms(100)},
		{"p99 of 10 is max", hundred[:10], 99, ms(10)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.sorted, tc.p); got != tc.want {
				t.Fatalf("Percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	in := []time.Duration{ms(5), ms(1), ms(3), ms(2), ms(4)}
	s := Summarize(in)
	want := Summary{N: 5, Min: Millis(ms(1)), Mean: Millis(ms(3)), P50: Millis(ms(3)), P90: Millis(ms(5)), P99: Millis(ms(5)), Max: Millis(ms(5))}
	if s != want {
		t.Fatalf("Summarize = %+v, want %+v", s, want)
	}
	if in[0] != ms(5) {
		t.Fatal("Summarize sorted its input in place")
	}
	if (Summarize(nil) != Summary{}) {
		t.Fatal("Summarize(nil) is not the zero Summary")
	}
	b, err := json.Marshal(Summary{N: 1, P50: Millis(1500 * time.Microsecond)})
	if err != nil || !strings.Contains(string(b), `"p50_ms":1.5`) {
		t.Fatalf("JSON = %s, %v; want p50_ms 1.5", b, err)
	}
}

func TestFormat(t *testing.T) {
	tests := []struct{ got, want string }{
		{FormatMs(1234 * time.Microsecond), "1.23ms"},
		{FormatMs(ms(52)), "52.0ms"},
		{FormatMs(ms(2500)), "2500ms"},
		{FormatRate(5123.4), "5123/s"},
		{FormatRate(19.94), "19.9/s"},
		{FormatBytes(3 << 20), "3.0MiB"},
		{FormatPct(0.915), "92%"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestParseProc(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    time.Duration
		wantErr bool
	}{
		{"plain", "42 (wxhub) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1000 0 0", 3 * time.Second, false},
		{"name with spaces and parens", "42 (a b) c)) R 1 42 42 0 -1 0 0 0 0 0 7 3 0 0", 100 * time.Millisecond, false},
		{"truncated", "42 (x) S 1 2", 0, true},
		{"no name", "garbage", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tc.stat))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseStatCPU = %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
	rss, err := parseStatusRSS([]byte("Name:\tx\nVmPeak:\t 9 kB\nVmRSS:\t   1024 kB\n"))
	if err != nil || rss != 1<<20 {
		t.Fatalf("parseStatusRSS = %d, %v; want 1 MiB", rss, err)
	}
	if _, err := parseStatusRSS([]byte("Name:\tx\n")); err == nil {
		t.Fatal("parseStatusRSS without VmRSS: want an error")
	}
	if r, err := ReadRSS(os.Getpid()); err != nil || r <= 0 {
		t.Fatalf("ReadRSS(self) = %d, %v", r, err)
	}
	if _, err := ReadCPU(os.Getpid()); err != nil {
		t.Fatalf("ReadCPU(self): %v", err)
	}
}

func TestTable(t *testing.T) {
	tb := Table{Title: "demo", Header: []string{"a", "long header"}}
	tb.Add("wide cell", 1)
	tb.Note("n=%d", 2)
	want := "\n== demo ==\n" +
		"a          long header\n" +
		"---------  -----------\n" +
		"wide cell  1\n" +
		"  n=2\n"
	if got := tb.String(); got != want {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestNodeConfig(t *testing.T) {
	cfg := NATSConfig{Dir: "/tmp/x", Nodes: 3}
	c := nodeConfig(cfg, 1, 4222, []int{6001, 6002, 6003})
	for _, want := range []string{"server_name: n1", "listen: 127.0.0.1:4222", "name: wxhub", "listen: 127.0.0.1:6002", "nats-route://127.0.0.1:6001", "nats-route://127.0.0.1:6003", `store-n1"`} {
		if !strings.Contains(c, want) {
			t.Errorf("config lacks %q:\n%s", want, c)
		}
	}
	if strings.Contains(c, "nats-route://127.0.0.1:6002") {
		t.Errorf("node routes to itself:\n%s", c)
	}
	if single := nodeConfig(NATSConfig{Dir: "/tmp/x", Nodes: 1}, 0, 4222, []int{6001}); strings.Contains(single, "cluster") {
		t.Errorf("single node has a cluster block:\n%s", single)
	}
}

func TestProcKillAndLog(t *testing.T) {
	p, err := StartProc(ProcConfig{Name: "sleeper", Path: "/bin/sh", Args: []string{"-c", "echo started; exec sleep 30"}, LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(context.Background(), 5*time.Second, 10*time.Millisecond, func() bool { return strings.Contains(p.LogTail(100), "started") }); err != nil {
		t.Fatal(err)
	}
	if p.Exited() {
		t.Fatal("exited early")
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if !p.Exited() || p.Err() == nil {
		t.Fatalf("after Kill: exited=%v err=%v, want exited with an error", p.Exited(), p.Err())
	}
}

func TestSimServerAttributesCallsToWorkers(t *testing.T) {
	s, err := StartSim(wechatsim.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const appid, secret = "wxharness0000001", "harness-secret"
	s.Sim.AddApp(appid, secret)
	if err := s.Sim.AddFollower(appid, wechatsim.Follower{OpenID: "o1"}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	holder, _ := wechat.NewClient(wechat.Config{BaseURL: s.URL})
	tok, err := holder.Token(ctx, appid, secret)
	if err != nil {
		t.Fatal(err)
	}
	issued := s.Issued()
	if len(issued) != 1 || issued[0].FP != wechat.Fingerprint(tok.Token) {
		t.Fatalf("issued = %+v, want the one token fetched", issued)
	}
	for _, w := range []int{0, 3} {
		c, _ := wechat.NewClient(wechat.Config{BaseURL: s.WorkerURL(w)})
		for range 2 {
			if _, err := c.UserInfo(ctx, tok.Token, "o1", ""); err != nil {
				t.Fatalf("worker %d: %v", w, err)
			}
		}
	}
	use := s.FirstUse(issued[0].FP)
	if len(use) != 2 || use[0].IsZero() || use[3].IsZero() || use[3].Before(use[0]) {
		t.Fatalf("first use = %v, want workers 0 then 3", use)
	}
	if n := s.TokenCalls(appid); n != 1 {
		t.Fatalf("token calls = %d, want 1", n)
	}
}

// respond answers every user.lookup job like a worker would: one result
// per job_id, or a failure for openid "bad", nothing for "lost", and
// two results (the second without Nats-Msg-Id) for "twice", a second
// publish the stream drops as a duplicate for "dedupe", and a stray core
// publish of the result on the public subject for "core-twice".
func respond(t *testing.T, nc *nats.Conn, js jetstream.JetStream) {
	t.Helper()
	s := events.NewSubjects("")
	_, err := nc.Subscribe(s.UserLookup, func(m *nats.Msg) {
		var job events.UserLookup
		if err := json.Unmarshal(m.Data, &job); err != nil {
			t.Errorf("job: %v", err)
			return
		}
		ctx := context.Background()
		switch job.OpenID {
		case "lost":
		case "bad":
			b, _ := json.Marshal(events.UserProfileFailed{JobID: job.JobID, JobSubject: s.UserLookup, AppID: job.AppID,
				Error: events.FailureError{Kind: events.KindWeChat, ErrCode: 40003}, Attempts: 1, FailedAt: time.Now()})
			_, _ = js.Publish(ctx, s.StoredUserProfileFailed, b, jetstream.WithMsgID(job.JobID))
		default:
			b, _ := json.Marshal(events.UserProfile{JobID: job.JobID, AppID: job.AppID, OpenID: job.OpenID, Source: events.SourceUserInfo, CompletedAt: time.Now()})
			_, _ = js.Publish(ctx, s.StoredUserProfile, b, jetstream.WithMsgID(job.JobID))
			switch job.OpenID {
			case "twice": // stored twice: both readers count a duplicate
				_, _ = js.Publish(ctx, s.StoredUserProfile, b)
			case "dedupe": // dropped by the stream: nobody sees it
				_, _ = js.Publish(ctx, s.StoredUserProfile, b, jetstream.WithMsgID(job.JobID))
			case "core-twice": // a stray core publish: only the core subscriber sees it
				_ = nc.Publish(s.UserProfile, b)
			}
		}
	})
	if err == nil {
		err = nc.Flush() // subscribed before the first job
	}
	if err != nil {
		t.Fatal(err)
	}
}

func lookup(openid string) func(string) []byte {
	return func(id string) []byte {
		b, _ := json.Marshal(events.UserLookup{JobID: id, AppID: "wxharness0000001", OpenID: openid})
		return b
	}
}

func TestTrackerCountsOutcomes(t *testing.T) {
	env := brokertest.Start(t)
	respond(t, env.Conn(t), env.JS)
	_, js, err := Connect(env.URL, "tracker", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Results of an earlier run stay out of the count.
	old := NewTracker(js, "", "old")
	if _, err := old.Publish(ctx, events.SubjectUserLookup, 5*time.Second, lookup("o1")); err != nil {
		t.Fatal(err)
	}
	tr := NewTracker(js, "", "run1")
	if err := tr.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer tr.Stop()
	for _, o := range []string{"o1", "o2", "bad", "twice", "lost", "dedupe", "core-twice"} {
		if _, err := tr.Publish(ctx, events.SubjectUserLookup, 5*time.Second, lookup(o)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.WaitResolved(ctx, 300*time.Millisecond); err == nil {
		t.Fatal("WaitResolved succeeded with a lost job")
	}
	if err := tr.CatchUp(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := tr.WaitCore(ctx, 8, 10*time.Second); err != nil {
		t.Fatalf("%v: %+v %+v", err, tr.Outcome(), tr.Jobs())
	}
	got := tr.Outcome()
	want := Outcome{Published: 7, Results: 7, Resolved: 6, Duplicates: 1, Lost: 1, ByOutcome: map[string]int{OutcomeOK: 5, events.KindWeChat: 1},
		CoreResults: 8, CoreDuplicates: 2, CoreMissed: 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("outcome = %+v, want %+v", got, want)
	}
	if f := got.Failures(); len(f) != 3 || !strings.Contains(f[0], "1 duplicate results in WX_RESULTS") ||
		!strings.Contains(f[1], "1 lost") || !strings.Contains(f[2], "2 duplicate results seen by a core subscriber") {
		t.Fatalf("failures = %q", f)
	}
	if f := (Outcome{Published: 3, Resolved: 3, CoreMissed: 2}).Failures(); len(f) != 0 {
		t.Fatalf("a core subscriber that missed results is not a failure: %q", f)
	}
	// Reading the stream again gives the same counts.
	if err := tr.Recount(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if again := tr.Outcome(); fmt.Sprint(again) != fmt.Sprint(want) {
		t.Fatalf("outcome after Recount = %+v, want %+v", again, want)
	}
	jobs := tr.Jobs()
	if jobs[0].ID != "run1-0" || jobs[0].Latency() <= 0 || jobs[4].Latency() != 0 || jobs[0].Core != 1 || jobs[6].Core != 2 {
		t.Fatalf("jobs = %+v", jobs)
	}
}

func TestClosedLoop(t *testing.T) {
	env := brokertest.Start(t)
	respond(t, env.Conn(t), env.JS)
	_, js, err := Connect(env.URL, "load", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tr := NewTracker(js, "", "loop")
	if err := tr.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer tr.Stop()
	res, err := ClosedLoop(ctx, tr, LoadConfig{Subject: events.SubjectUserLookup, Payload: lookup("o1"), Window: 8,
		Warmup: 100 * time.Millisecond, Measure: 400 * time.Millisecond, Drain: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Jobs == 0 || res.Throughput <= 0 || res.Latency.N == 0 || res.Latency.P50 <= 0 {
		t.Fatalf("result = %+v, want jobs, throughput and latencies", res)
	}
	if o := res.Outcome; o.Lost != 0 || o.Duplicates != 0 || o.Resolved != o.Published || o.Published < res.Jobs {
		t.Fatalf("outcome = %+v", o)
	}
}
