package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/redact"
	"github.com/wxhub/wxhub/wechat"
)

// An oauth.code.received job that a real worker rejected (its app is not
// configured) is a dead letter holding the user's OAuth code: `deadletters
// show` prints the job with the code as its fingerprint, and a broken job
// (cut inside its code) not at all, only its size and fingerprint.
// `deadletters replay` still publishes the original code.
func TestDeadLetterShowPrintsTheOAuthCodeAsAFingerprint(t *testing.T) {
	const (
		code       = "071CODE-shown-nowhere-Xy9"
		brokenCode = "081CODE-of-a-broken-job-Qz7"
	)
	natsURL, _ := startWxhubRun(t)
	wx := cliAt(natsURL)
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// WX_DEADLETTERS republishes each dead letter once stored.
	stored := make(chan *nats.Msg, 8)
	sub, err := nc.ChanSubscribe(events.SubjectDeadLetterPrefix+">", stored)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	next := func() (uint64, []byte) {
		t.Helper()
		select {
		case m := <-stored:
			seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
			if err != nil {
				t.Fatalf("republished dead letter without its sequence: %v", m.Header)
			}
			return seq, m.Data
		case <-time.After(30 * time.Second):
			t.Fatal("no dead letter stored")
			return 0, nil
		}
	}

	if c, o, e := wx("oauth", "--appid", "wxnotconfigured", "--code", code, "--job-id", "dl-code"); c != exitFailure || strings.Contains(o+e, code) {
		t.Fatalf("oauth for an unknown app: exit %d\n%s\n%s", c, o, e)
	}
	seq, orig := next()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	broken := nats.NewMsg(events.SubjectOAuthCodeReceived)
	broken.Header.Set(events.HeaderMsgID, "dl-broken")
	broken.Data = []byte(`{"job_id":"dl-broken","appid":"wxnotconfigured","code":"` + brokenCode)
	if _, err := js.PublishMsg(ctx, broken); err != nil {
		t.Fatal(err)
	}
	brokenSeq, _ := next()

	c, o, e := wx("deadletters", "show", "--seq", strconv.FormatUint(seq, 10))
	if c != exitOK || strings.Contains(o+e, code) || !strings.Contains(o, `"code": "`+redact.FingerprintPrefix+wechat.Fingerprint(code)+`"`) ||
		!strings.Contains(o, `"job_id": "dl-code"`) || !strings.Contains(o, `"appid": "wxnotconfigured"`) || !strings.Contains(o, "reason:      config:") {
		t.Fatalf("show of the oauth dead letter: exit %d\n%s\n%s", c, o, e)
	}
	c, o, e = wx("deadletters", "show", "--seq", strconv.FormatUint(brokenSeq, 10))
	if c != exitOK || strings.Contains(o+e, brokenCode) || !strings.Contains(o, "job not shown") ||
		!strings.Contains(o, strconv.Itoa(len(broken.Data))+" bytes, fingerprint "+wechat.Fingerprint(string(broken.Data))) ||
		!strings.Contains(o, "job id:      dl-broken") {
		t.Fatalf("show of the broken dead letter: exit %d\n%s\n%s", c, o, e)
	}

	// Replayed without --body, the job is the original one under a new
	// job_id: the worker rejects it again and its dead letter holds the
	// same code.
	c, o, e = wx("deadletters", "replay", "--seq", strconv.FormatUint(seq, 10), "--timeout", "30s")
	if c != exitFailure || strings.Contains(o+e, code) {
		t.Fatalf("replay: exit %d\n%s\n%s", c, o, e)
	}
	_, replayed := next()
	var was, is map[string]any
	if err := json.Unmarshal(orig, &was); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(replayed, &is); err != nil {
		t.Fatal(err)
	}
	if is["job_id"] != "dl-code.replay-"+strconv.FormatUint(seq, 10) || is["code"] != code {
		t.Fatalf("replayed job %s", replayed)
	}
	delete(was, "job_id")
	delete(is, "job_id")
	if w, i := mustJSON(t, was), mustJSON(t, is); w != i {
		t.Fatalf("replay changed the job: %s, was %s", i, w)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A dead letter replayed longer ago than the jobs' duplicate window (the
// replay job's id is no longer in WX_JOBS' dedupe state) but whose done
// record still lives: `deadletters replay` prints the stored result and
// publishes nothing, instead of a job the worker would end silently at
// its done record.
func TestReplayOfAJobThatAlreadyRanPrintsItsStoredResult(t *testing.T) {
	env := brokertest.Start(t)
	subs := events.NewSubjects("")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	publish := func(subject, msgID string, data []byte, hdr map[string]string) uint64 {
		t.Helper()
		m := nats.NewMsg(subject)
		m.Data = data
		m.Header.Set(events.HeaderMsgID, msgID)
		for k, v := range hdr {
			m.Header.Set(k, v)
		}
		ack, err := env.JS.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	dlSeq := publish(subs.StoredDeadLetter(events.SubjectUserLookup), "old-1",
		[]byte(`{"job_id":"old-1","appid":"wxnotconfigured","openid":"o1"}`),
		map[string]string{events.HeaderDeadLetterReason: "config: unknown appid"})
	replayID := "old-1.replay-" + strconv.FormatUint(dlSeq, 10)
	// What the worker stored when it ran the replay job long ago.
	resSeq := storeResult(t, env, subs.StoredUserProfile, events.UserProfile{JobID: replayID, AppID: "wxnotconfigured", OpenID: "o1", Source: events.SourceUserInfo, CompletedAt: time.Now().UTC()}, replayID)
	storeDone(t, env, replayID, events.SubjectUserLookup, events.SubjectUserProfile, resSeq)

	code, stdout, stderr := cliAt(env.URL)("deadletters", "replay", "--seq", strconv.FormatUint(dlSeq, 10), "--timeout", "3s")
	if code != exitOK || !strings.Contains(stdout, `"job_id": "`+replayID+`"`) || !strings.Contains(stderr, "replayed before") {
		t.Fatalf("replay: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if n := jobsStored(t, env); n != 0 {
		t.Fatalf("%d jobs published to %s, want none", n, events.StreamJobs)
	}
}

func jobsStored(t *testing.T, env *brokertest.Env) uint64 {
	t.Helper()
	s, err := env.JS.Stream(context.Background(), events.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}
