package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers"
	"github.com/wxhub/wxhub/internal/metrics"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

// WeChat errors: transient ones are retried (within the job, then by
// redelivery) and end in a retryable failure after MaxDeliver; permanent
// ones fail at once.
func TestWeChatErrors(t *testing.T) {
	tests := []struct {
		name         string
		fault        wechatsim.Fault
		wantSubject  string
		wantKind     string
		wantCode     int
		wantRetry    bool
		wantAttempts int
	}{
		{"-1 three times then success", wechatsim.Fault{Path: "/cgi-bin/user/info", ErrCode: -1, Count: 3}, events.SubjectUserProfile, "", 0, false, 1},
		{"-1 forever", wechatsim.Fault{Path: "/cgi-bin/user/info", ErrCode: -1}, events.SubjectUserProfileFailed, events.KindWeChat, -1, true, 3},
		{"HTTP 502 forever", wechatsim.Fault{Path: "/cgi-bin/user/info", HTTPStatus: 502}, events.SubjectUserProfileFailed, events.KindWeChat, 0, true, 3},
		{"40003 invalid openid", wechatsim.Fault{Path: "/cgi-bin/user/info", ErrCode: 40003}, events.SubjectUserProfileFailed, events.KindWeChat, 40003, false, 1},
		{"45009 daily quota", wechatsim.Fault{Path: "/cgi-bin/user/info", ErrCode: 45009}, events.SubjectUserProfileFailed, events.KindQuota, 45009, true, 1},
		{"40164 ip whitelist", wechatsim.Fault{Path: "/cgi-bin/user/info", ErrCode: 40164}, events.SubjectUserProfileFailed, events.KindConfig, 40164, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, 1)
			h.holder.rotate()
			res := h.follow(events.StreamResults)
			if err := h.sim.AddFault(tt.fault); err != nil {
				t.Fatal(err)
			}
			w := h.startWorker("w", func(c *worker.Config) { c.MaxDeliver = 3; c.Concurrency = 1 })
			h.lookup("job-1", 0)
			res.waitIDs(t, 1, 20*time.Second)
			got := res.get("job-1")
			if len(got) != 1 || got[0].Subject != tt.wantSubject {
				t.Fatalf("results %+v, want one on %s", got, tt.wantSubject)
			}
			if tt.wantSubject == events.SubjectUserProfile {
				if p := profileOf(t, got[0]); p.OpenID != openID(0) || p.Source != events.SourceUserInfo {
					t.Fatalf("profile %+v", p)
				}
				return
			}
			f := failureOf(t, got[0])
			if f.Error.Kind != tt.wantKind || f.Error.ErrCode != tt.wantCode || f.Error.Retryable != tt.wantRetry || f.Attempts != tt.wantAttempts {
				t.Fatalf("failure %+v, want kind %s errcode %d retryable %v attempts %d", f, tt.wantKind, tt.wantCode, tt.wantRetry, tt.wantAttempts)
			}
			if f.JobID != "job-1" || f.AppID != testApp || f.JobSubject != events.SubjectUserLookup {
				t.Fatalf("failure identity %+v", f)
			}
			if st := w.Stats(); tt.wantAttempts > 1 && st.Retried != int64(tt.wantAttempts-1) {
				t.Errorf("retried %d deliveries, want %d", st.Retried, tt.wantAttempts-1)
			}
			if strings.Contains(string(got[0].Data), testSecret) {
				t.Fatal("secret in result")
			}
		})
	}
}

// Bad input: a failure with the right kind and a message saying what is
// wrong, the original bytes on the dead-letter subject, and the worker
// carries on with the next job.
func TestBadInput(t *testing.T) {
	big := fmt.Sprintf(`{"job_id":"big-1","appid":%q,"openid":"o00000","pad":%q}`, testApp, strings.Repeat("x", events.MaxJobSize))
	tests := []struct {
		name     string
		payload  string
		msgID    string // the job's Nats-Msg-Id header
		wantID   string // Nats-Msg-Id of the failure and dead letter, and job_id in the failure
		wantKind string
		wantMsg  string // substring of errmsg
	}{
		{"not JSON", `{"job_id": "bad-1", oops`, "", "invalid-1", events.KindInvalidJob, "not JSON"},
		{"not JSON with a Nats-Msg-Id", `{"job_id": "bad-1", oops`, "hdr-1", "hdr-1", events.KindInvalidJob, "not JSON"},
		{"unusable Nats-Msg-Id", `oops`, "a b", "invalid-1", events.KindInvalidJob, "not JSON"},
		{"body job_id wins over Nats-Msg-Id", `{"job_id":"bad-2","appid":"` + testApp + `"}`, "hdr-2", "bad-2", events.KindInvalidJob, "openid"},
		{"missing openid", `{"job_id":"bad-2","appid":"` + testApp + `"}`, "", "bad-2", events.KindInvalidJob, "openid"},
		{"wrong type", `{"job_id":"bad-3","appid":"` + testApp + `","openid":42}`, "", "bad-3", events.KindInvalidJob, "/openid"},
		{"unknown appid", `{"job_id":"bad-4","appid":"wxffffffffffffffff","openid":"o00000"}`, "", "bad-4", events.KindConfig, "wxffffffffffffffff"},
		{"oversized", big, "", "invalid-1", events.KindInvalidJob, "bytes"},
		{"oversized with a Nats-Msg-Id", big, "big-hdr", "big-hdr", events.KindInvalidJob, "bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, 1)
			h.holder.rotate()
			res := h.follow(events.StreamResults)
			dead := h.follow(events.StreamDeadLetters)
			h.startWorker("w", nil)
			// Jobs with a Nats-Msg-Id are sent without a correlation id:
			// their result's is the result id.
			hdr, wantCorr := map[string]string{events.HeaderCorrelationID: "corr-1"}, "corr-1"
			if tt.msgID != "" {
				hdr, wantCorr = nil, tt.wantID
			}
			h.publishJob(events.SubjectUserLookup, []byte(tt.payload), tt.msgID, hdr)
			h.lookup("good-1", 0) // the worker carries on
			res.waitIDs(t, 2, 20*time.Second)
			dead.waitIDs(t, 1, 20*time.Second)

			got := res.get(tt.wantID)
			if len(got) != 1 || got[0].Subject != events.SubjectUserProfileFailed {
				t.Fatalf("results for %s: %+v", tt.wantID, got)
			}
			f := failureOf(t, got[0])
			if f.Error.Kind != tt.wantKind || f.Error.Retryable || f.JobID != tt.wantID || !strings.Contains(f.Error.ErrMsg, tt.wantMsg) {
				t.Fatalf("failure %+v, want kind %s job_id %q errmsg containing %q", f, tt.wantKind, tt.wantID, tt.wantMsg)
			}
			if err := events.Validate(events.SubjectUserProfileFailed, got[0].Data); err != nil {
				t.Fatalf("failure does not match its schema: %v", err)
			}
			if c := got[0].Header.Get(events.HeaderCorrelationID); c != wantCorr {
				t.Errorf("correlation id %q, want %s", c, wantCorr)
			}
			dl := dead.get(tt.wantID)
			if len(dl) != 1 || dl[0].Subject != "deadletter."+events.SubjectUserLookup || string(dl[0].Data) != tt.payload {
				t.Fatalf("dead letter %+v", dl)
			}
			if r := dl[0].Header.Get(events.HeaderDeadLetterReason); !strings.HasPrefix(r, tt.wantKind+": ") {
				t.Fatalf("dead letter reason %q", r)
			}
			if g := res.get("good-1"); len(g) != 1 || g[0].Subject != events.SubjectUserProfile {
				t.Fatalf("good job after the bad one: %+v", g)
			}
		})
	}
}

// The same OAuth job delivered twice: one code exchange at the
// simulator, one result.
func TestOAuthDeliveredTwice(t *testing.T) {
	tests := []struct {
		scope        string
		wantSource   string
		wantUserinfo int64
	}{
		{wechatsim.ScopeUserInfo, events.SourceSNSUserInfo, 1},
		{wechatsim.ScopeBase, events.SourceSNSOAuth2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.scope, func(t *testing.T) {
			h := newHarness(t, 1)
			res := h.follow(events.StreamResults)
			code, err := h.sim.IssueCode(testApp, openID(0), tt.scope)
			if err != nil {
				t.Fatal(err)
			}
			job, _ := json.Marshal(events.OAuthCodeReceived{JobID: "oauth-1", AppID: testApp, Code: code, State: "xyz"})
			w := h.startWorker("w", func(c *worker.Config) { c.Concurrency = 4 })
			// Two stream messages for the same job (no Nats-Msg-Id):
			// the second is a redelivery as far as the worker can tell.
			h.publishJob(events.SubjectOAuthCodeReceived, job, "", nil)
			h.publishJob(events.SubjectOAuthCodeReceived, job, "", nil)
			// A third job with the same code but its own job_id gets the
			// stored outcome too.
			job2, _ := json.Marshal(events.OAuthCodeReceived{JobID: "oauth-2", AppID: testApp, Code: code})
			h.publishJob(events.SubjectOAuthCodeReceived, job2, "", nil)
			res.waitIDs(t, 2, 20*time.Second)
			wxhubtest.Eventually(t, 20*time.Second, "three deliveries handled", func() bool {
				st := w.Stats()
				return st.Succeeded+st.Failed+st.AlreadyDone == 3
			})
			st := h.sim.Stats()
			if n := st.CallCount("/sns/oauth2/access_token", testApp); n != 1 {
				t.Fatalf("code exchanges: %d, want 1", n)
			}
			if n := st.CallCount("/sns/userinfo", testApp); n != tt.wantUserinfo {
				t.Fatalf("sns/userinfo calls: %d, want %d", n, tt.wantUserinfo)
			}
			byID, total := res.snapshot()
			if total != 2 || len(byID["oauth-1"]) != 1 || len(byID["oauth-2"]) != 1 {
				t.Fatalf("results: %d stored: %v", total, byID)
			}
			p1, p2 := profileOf(t, byID["oauth-1"][0]), profileOf(t, byID["oauth-2"][0])
			if p1.OpenID != openID(0) || p1.Source != tt.wantSource || p2.OpenID != p1.OpenID || p2.JobID != "oauth-2" {
				t.Fatalf("profiles %+v / %+v", p1, p2)
			}
			if tt.wantSource == events.SourceSNSUserInfo && p1.Nickname != "user 0" {
				t.Fatalf("nickname %q", p1.Nickname)
			}
			for _, s := range []string{string(byID["oauth-1"][0].Data), code} {
				if strings.Contains(string(byID["oauth-1"][0].Data), "access_token") || strings.Contains(s, testSecret) {
					t.Fatal("credential in the result")
				}
			}
			if strings.Contains(string(byID["oauth-1"][0].Data), code) {
				t.Fatal("code in the result")
			}
			if err := events.Validate(events.SubjectUserProfile, byID["oauth-1"][0].Data); err != nil {
				t.Fatalf("profile does not match its schema: %v", err)
			}
		})
	}
}

// A used or unknown code with no stored outcome is a permanent failure.
func TestOAuthBadCode(t *testing.T) {
	h := newHarness(t, 1)
	res := h.follow(events.StreamResults)
	h.startWorker("w", nil)
	job, _ := json.Marshal(events.OAuthCodeReceived{JobID: "oauth-bad", AppID: testApp, Code: "nosuchcode"})
	h.publishJob(events.SubjectOAuthCodeReceived, job, "", nil)
	res.waitIDs(t, 1, 20*time.Second)
	f := failureOf(t, res.get("oauth-bad")[0])
	if f.Error.Kind != events.KindWeChat || f.Error.ErrCode != 40029 || f.Error.Retryable {
		t.Fatalf("failure %+v", f)
	}
}

// TestWorkerWithoutSecret: a worker given no AppSecret serves user.lookup,
// and ends an OAuth job for the app as kind config naming the missing
// setting, without calling WeChat.
func TestWorkerWithoutSecret(t *testing.T) {
	h := newHarness(t, 1)
	h.holder.rotate()
	res := h.follow(events.StreamResults)
	h.startWorker("w", func(c *worker.Config) { c.Apps[0].Secret = "" })
	code, err := h.sim.IssueCode(testApp, openID(0), "snsapi_base")
	if err != nil {
		t.Fatal(err)
	}
	job, _ := json.Marshal(events.OAuthCodeReceived{JobID: "oauth-nosecret", AppID: testApp, Code: code})
	h.publishJob(events.SubjectOAuthCodeReceived, job, "", nil)
	h.lookup("lookup-nosecret", 0)
	res.waitIDs(t, 2, 20*time.Second)
	f := failureOf(t, res.get("oauth-nosecret")[0])
	if f.Error.Kind != events.KindConfig || f.Error.Retryable || !strings.Contains(f.Error.ErrMsg, "WXHUB_SECRET_"+strings.ToUpper(testApp)) {
		t.Fatalf("failure %+v, want kind config naming WXHUB_SECRET_%s", f, strings.ToUpper(testApp))
	}
	if p := profileOf(t, res.get("lookup-nosecret")[0]); p.OpenID != openID(0) {
		t.Fatalf("lookup profile %+v", p)
	}
	if n := h.sim.Stats().TotalCalls("/sns/oauth2/access_token"); n != 0 {
		t.Fatalf("%d code exchanges without a secret", n)
	}
}

// TestEachJobCountsUnderOneOutcome: wxhub_jobs_total counts a bad job
// under invalid only, an unknown appid under invalid only, a permanent
// WeChat error under failed only, a good job under success only.
func TestEachJobCountsUnderOneOutcome(t *testing.T) {
	h := newHarness(t, 1)
	h.holder.rotate()
	res := h.follow(events.StreamResults)
	h.startWorker("w", nil)
	count := func(outcome string) float64 {
		var m dto.Metric
		if err := metrics.JobsTotal.WithLabelValues(events.SubjectUserLookup, outcome).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	outcomes := []string{metrics.OutcomeSuccess, metrics.OutcomeFailed, metrics.OutcomeInvalid, metrics.OutcomeRetry}
	before := map[string]float64{}
	for _, o := range outcomes {
		before[o] = count(o)
	}
	h.lookup("count-ok", 0)
	h.publishJob(events.SubjectUserLookup, []byte(`{"job_id":"count-bad",`), "count-bad", nil)
	unknown, _ := json.Marshal(events.UserLookup{JobID: "count-unknown", AppID: "wxnotconfigured", OpenID: openID(0)})
	h.publishJob(events.SubjectUserLookup, unknown, "count-unknown", nil)
	stranger, _ := json.Marshal(events.UserLookup{JobID: "count-stranger", AppID: testApp, OpenID: "o-not-a-follower"})
	h.publishJob(events.SubjectUserLookup, stranger, "count-stranger", nil)
	res.waitIDs(t, 4, 20*time.Second)
	// The counter moves just after the result is stored: wait for all 4.
	wxhubtest.Eventually(t, 10*time.Second, "4 jobs counted", func() bool {
		n := 0.0
		for _, o := range outcomes {
			n += count(o) - before[o]
		}
		return n >= 4
	})
	want := map[string]float64{metrics.OutcomeSuccess: 1, metrics.OutcomeFailed: 1, metrics.OutcomeInvalid: 2, metrics.OutcomeRetry: 0}
	for _, o := range outcomes {
		if got := count(o) - before[o]; got != want[o] {
			t.Errorf("outcome %s counted %v times, want %v", o, got, want[o])
		}
	}
}

// A job that fills the server's max_payload is stored in WX_JOBS, but its
// dead letter (with Wx-Dead-Letter-Reason added) would not fit: it is
// stored with the body cut to fit and Wx-Dead-Letter-Truncated, and the
// job ends at once as one invalid_job failure (not nak'd until the reaper
// calls it a retryable timeout).
func TestJobAtMaxPayloadIsRejectedWithTruncatedDeadLetter(t *testing.T) {
	h := newHarness(t, 1)
	h.holder.rotate()
	res := h.follow(events.StreamResults)
	dead := h.follow(events.StreamDeadLetters)
	w := h.startWorker("w", func(c *worker.Config) {
		c.MaxDeliver, c.AckWait, c.JobTimeout, c.FinishTimeout = 2, 3*time.Second, 2*time.Second, 500*time.Millisecond
	})
	max := int(h.env.NC.MaxPayload())
	m := nats.NewMsg(events.SubjectUserLookup)
	m.Header.Set(events.HeaderMsgID, "big-1")
	m.Header.Set(events.HeaderCorrelationID, "corr-big")
	prefix, suffix := `{"job_id":"big-1","appid":"`+testApp+`","openid":"`, `"}`
	hdrSize := m.Size() - len(m.Subject)
	m.Data = []byte(prefix + strings.Repeat("o", max-hdrSize-len(prefix)-len(suffix)) + suffix)
	if got := m.Size() - len(m.Subject); got != max {
		t.Fatalf("job is %d bytes on the wire, want max_payload %d", got, max)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.env.JS.PublishMsg(ctx, m); err != nil {
		t.Fatalf("publish job: %v", err)
	}
	res.waitIDs(t, 1, 20*time.Second)
	dead.waitIDs(t, 1, 10*time.Second)
	wxhubtest.Eventually(t, 10*time.Second, "the job acked", func() bool { return jobsInStream(t, h) == 0 })

	got := res.get("big-1")
	if len(got) != 1 || got[0].Subject != events.SubjectUserProfileFailed {
		t.Fatalf("results: %+v, want one failure", got)
	}
	if f := failureOf(t, got[0]); f.Error.Kind != events.KindInvalidJob || f.Error.Retryable || f.Attempts != 1 {
		t.Fatalf("failure %+v, want invalid_job on the first delivery", f)
	}
	dl := dead.get("big-1")
	if _, total := dead.snapshot(); total != 1 || len(dl) != 1 {
		t.Fatalf("%d dead letters stored (%+v), want one", total, dl)
	}
	d := dl[0]
	if v := d.Header.Get(worker.HeaderDeadLetterTruncated); v != strconv.Itoa(len(m.Data)) {
		t.Fatalf("%s = %q, want the job's size %d", worker.HeaderDeadLetterTruncated, v, len(m.Data))
	}
	if len(d.Data) == 0 || len(d.Data) >= len(m.Data) || !bytes.HasPrefix(m.Data, d.Data) {
		t.Fatalf("dead letter keeps %d of %d bytes, want the job's first bytes", len(d.Data), len(m.Data))
	}
	if r := d.Header.Get(events.HeaderDeadLetterReason); !strings.HasPrefix(r, events.KindInvalidJob+": ") {
		t.Fatalf("dead letter reason %q", r)
	}
	if s := w.Stats(); s.Deliveries != 1 || s.Invalid != 1 {
		t.Fatalf("stats %+v: want one delivery, rejected", s)
	}
}

// A used code replayed in another login (a job with a different state:
// for web login, another browser's nonce) never gets the owner's
// outcome: it fails with 40163 like WeChat would answer, and WeChat sees
// one exchange. A job with the owner's state, or with none, still gets
// the stored outcome under its own job_id, but only within the code's
// life (handlers.CodeCopyWindow).
func TestOAuthCodeOfAnotherLoginIsRefused(t *testing.T) {
	h := newHarness(t, 1)
	res := h.follow(events.StreamResults)
	code, err := h.sim.IssueCode(testApp, openID(0), wechatsim.ScopeBase)
	if err != nil {
		t.Fatal(err)
	}
	var ahead atomic.Int64 // the worker's clock runs this far ahead
	h.startWorker("w", func(c *worker.Config) {
		c.Now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	})
	publish := func(id, state string) {
		job, _ := json.Marshal(events.OAuthCodeReceived{JobID: id, AppID: testApp, Code: code, State: state})
		h.publishJob(events.SubjectOAuthCodeReceived, job, id, nil)
	}
	publish("victim-login", "nonceVictim")
	res.waitIDs(t, 1, 20*time.Second)
	publish("attacker-login", "nonceAttacker")
	publish("victim-retry", "nonceVictim")
	publish("business-retry", "")
	res.waitIDs(t, 4, 20*time.Second)
	// Past the code's life: a replay under a new job_id, with the owner's
	// state or none, is refused.
	ahead.Store(int64(handlers.CodeCopyWindow + time.Minute))
	publish("late-business-retry", "")
	publish("late-victim-retry", "nonceVictim")
	res.waitIDs(t, 6, 20*time.Second)

	tests := []struct {
		id, subject string
	}{
		{"victim-login", events.SubjectUserProfile},
		{"attacker-login", events.SubjectUserProfileFailed},
		{"victim-retry", events.SubjectUserProfile},
		{"business-retry", events.SubjectUserProfile},
		{"late-business-retry", events.SubjectUserProfileFailed},
		{"late-victim-retry", events.SubjectUserProfileFailed},
	}
	for _, tt := range tests {
		got := res.get(tt.id)
		if len(got) != 1 || got[0].Subject != tt.subject {
			t.Fatalf("%s: %+v, want one %s", tt.id, got, tt.subject)
		}
		if tt.subject == events.SubjectUserProfileFailed {
			f := failureOf(t, got[0])
			if f.Error.Kind != events.KindWeChat || f.Error.ErrCode != 40163 || f.Error.Retryable {
				t.Fatalf("%s: failure %+v, want a permanent 40163", tt.id, f.Error)
			}
			if strings.Contains(string(got[0].Data), openID(0)) {
				t.Fatalf("%s: the owner's openid in the failure: %s", tt.id, got[0].Data)
			}
			continue
		}
		if p := profileOf(t, got[0]); p.JobID != tt.id || p.OpenID != openID(0) {
			t.Fatalf("%s: profile %+v", tt.id, p)
		}
	}
	if n := h.sim.Stats().CallCount(wechatsim.PathOAuthToken, testApp); n != 1 {
		t.Fatalf("%d code exchanges, want 1", n)
	}
}
