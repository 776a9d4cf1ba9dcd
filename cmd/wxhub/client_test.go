package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// storeResult stores a result in WX_RESULTS as a worker does (the
// internal subject, Nats-Msg-Id = job_id) and returns its sequence.
func storeResult(t *testing.T, env *brokertest.Env, subject string, result any, jobID string) uint64 {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data, _ = json.Marshal(result)
	m.Header.Set(events.HeaderMsgID, jobID)
	ack, err := env.JS.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// storeDone writes the done record a worker writes once a job's result is
// stored.
func storeDone(t *testing.T, env *brokertest.Env, jobID, jobSubject, resultSubject string, seq uint64) {
	t.Helper()
	done, err := env.JS.KeyValue(context.Background(), events.BucketDone)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(events.DoneRecord{JobID: jobID, JobSubject: jobSubject, ResultSubject: resultSubject, ResultSeq: seq, DoneAt: time.Now().UTC()})
	if _, err := done.Put(context.Background(), events.DoneKey(jobID), rec); err != nil {
		t.Fatal(err)
	}
}

// A client command given the id of a job that already ran prints that
// job's stored result instead of waiting for one the worker never sends
// (past the duplicate window it acks the new job at its done record):
// from the done record without publishing, else, when no result came in
// time, from WX_RESULTS. A failed job and no result both exit 1, and
// stderr says which. No worker runs here.
func TestClientCommandOfAJobThatAlreadyRan(t *testing.T) {
	subs := events.NewSubjects("")
	profile := func(id string) events.UserProfile {
		return events.UserProfile{JobID: id, AppID: "wxapp", OpenID: "o1", Source: events.SourceUserInfo, CompletedAt: time.Now().UTC()}
	}
	failure := func(id string) events.UserProfileFailed {
		return events.UserProfileFailed{JobID: id, JobSubject: events.SubjectOAuthCodeReceived, AppID: "wxapp",
			Error: events.FailureError{Kind: "wechat", ErrCode: 40163, ErrMsg: "code been used"}, Attempts: 1, FailedAt: time.Now().UTC()}
	}
	tests := []struct {
		name      string
		setup     func(t *testing.T, env *brokertest.Env, id string)
		args      []string
		code      int
		stdout    string // regexp
		stderr    string // regexp
		published uint64 // jobs in WX_JOBS afterwards
	}{
		{"lookup: done record and result",
			func(t *testing.T, env *brokertest.Env, id string) {
				storeDone(t, env, id, events.SubjectUserLookup, events.SubjectUserProfile, storeResult(t, env, subs.StoredUserProfile, profile(id), id))
			},
			[]string{"lookup", "--appid", "wxapp", "--openid", "o1", "--timeout", "3s"},
			exitOK, `"job_id": "old-job"`, `job old-job already ran; its stored result`, 0},
		{"oauth: done record and failure",
			func(t *testing.T, env *brokertest.Env, id string) {
				storeDone(t, env, id, events.SubjectOAuthCodeReceived, events.SubjectUserProfileFailed, storeResult(t, env, subs.StoredUserProfileFailed, failure(id), id))
			},
			[]string{"oauth", "--appid", "wxapp", "--code", "C0DE", "--timeout", "3s"},
			exitFailure, `"errcode": 40163`, `job old-job already ran(.|\n)*job old-job failed \(wechat, errcode 40163: code been used\); its user.profile.failed result is above`, 0},
		{"lookup: done record, result no longer stored",
			func(t *testing.T, env *brokertest.Env, id string) {
				storeDone(t, env, id, events.SubjectUserLookup, events.SubjectUserProfile, 999)
			},
			[]string{"lookup", "--appid", "wxapp", "--openid", "o1", "--timeout", "3s"},
			exitFailure, `^$`, `job old-job already ran \(it has a done record\) but its result is no longer stored`, 0},
		{"lookup: result stored but not seen, no done record",
			func(t *testing.T, env *brokertest.Env, id string) {
				storeResult(t, env, subs.StoredUserProfile, profile(id), id)
			},
			[]string{"lookup", "--appid", "wxapp", "--openid", "o1", "--timeout", "1s"},
			exitOK, `"job_id": "old-job"`, `^$`, 1},
		{"result: a failure",
			func(t *testing.T, env *brokertest.Env, id string) {
				storeDone(t, env, id, events.SubjectOAuthCodeReceived, events.SubjectUserProfileFailed, storeResult(t, env, subs.StoredUserProfileFailed, failure(id), id))
			},
			[]string{"result"},
			exitFailure, `"errcode": 40163`, `^wxhub: job old-job failed \(wechat, errcode 40163: code been used\)`, 0},
		{"result: none",
			func(t *testing.T, env *brokertest.Env, id string) {},
			[]string{"result"},
			exitFailure, `^$`, `^wxhub result: no result for job old-job in WX_RESULTS`, 0},
		{"lookup: no result at all",
			func(t *testing.T, env *brokertest.Env, id string) {},
			[]string{"lookup", "--appid", "wxapp", "--openid", "o1", "--timeout", "1s"},
			exitFailure, `^$`, `no result for job old-job within 1s, and none stored in WX_RESULTS`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := brokertest.Start(t)
			tt.setup(t, env, "old-job")
			code, stdout, stderr := cliAt(env.URL)(append(tt.args, "--job-id", "old-job")...)
			if code != tt.code || !regexp.MustCompile(tt.stdout).MatchString(stdout) || !regexp.MustCompile(tt.stderr).MatchString(stderr) {
				t.Errorf("exit %d (want %d)\nstdout (want %s):\n%s\nstderr (want %s):\n%s", code, tt.code, tt.stdout, stdout, tt.stderr, stderr)
			}
			if n := jobsStored(t, env); n != tt.published {
				t.Errorf("%d jobs published, want %d", n, tt.published)
			}
		})
	}
}

// After a slow consumer dropped results, the waiter looks for the job's
// done record at once and then every second, and returns the result it
// names as soon as there is one.
func TestResultWaiterLooksUpTheDoneRecordAfterADrop(t *testing.T) {
	var stderr wxhubtest.Buffer
	w := &resultWaiter{jobID: "j1", found: make(chan *nats.Msg, 1), dropped: make(chan struct{}, 1), stderr: &stderr}
	w.dropped <- struct{}{}
	calls := 0
	want := &nats.Msg{Subject: events.SubjectUserProfile}
	got, err := w.wait(context.Background(), func(context.Context) (*nats.Msg, error) {
		calls++
		if calls < 2 {
			return nil, nil // the job is still running: no done record yet
		}
		return want, nil
	})
	if err != nil || got != want || calls != 2 || !strings.Contains(stderr.String(), "slow consumer") {
		t.Fatalf("wait = %v, %v after %d lookups; stderr %q", got, err, calls, stderr.String())
	}
}

// A client command interrupted (Ctrl-C: its context cancelled) while it
// waits for the stream's ack of its job says that the job may or may not
// be stored and that a rerun with the same --job-id is safe, and does not
// ask whether wxhub runs at the URL; a --timeout that ends the same wait
// still asks. The server here has JetStream but no streams: a core
// subscriber on user.lookup that never answers is the stream whose ack
// has not come.
func TestClientCommandInterruptedBeforeTheAck(t *testing.T) {
	url := brokertest.StartConfig(t, "listen: 127.0.0.1:-1\n")
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	arrived := make(chan struct{}, 8)
	if _, err := nc.Subscribe(events.SubjectUserLookup, func(*nats.Msg) { arrived <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	lookup := func(ctx context.Context, timeout string) (int, string) {
		var o, e wxhubtest.Buffer
		env := &cmdEnv{stdout: &o, stderr: &e, getenv: func(k string) string { return map[string]string{"NATS_URL": url}[k] }}
		code := run(ctx, env, []string{"lookup", "--appid", "wxapp", "--openid", "o1", "--job-id", "j-int", "--timeout", timeout})
		return code, o.String() + e.String()
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	published := make(chan bool, 1)
	go func() {
		select {
		case <-arrived: // the job is published, no ack yet: Ctrl-C
			published <- true
		case <-time.After(30 * time.Second):
			published <- false
		}
		cancel()
	}()
	code, out := lookup(ctx, "60s")
	if !<-published {
		t.Fatalf("the job never reached the server within 30 s:\n%s", out)
	}
	if code != exitFailure || !strings.Contains(out, "interrupted before JetStream acknowledged it") ||
		!strings.Contains(out, "job j-int may or may not be stored") || !strings.Contains(out, "running again with --job-id j-int is safe") ||
		strings.Contains(out, "is wxhub running") {
		t.Errorf("interrupted before the ack: exit %d, want 1 saying the job may be stored, without asking whether wxhub runs:\n%s", code, out)
	}

	code, out = lookup(context.Background(), "200ms")
	if code != exitFailure || !strings.Contains(out, "context deadline exceeded (is wxhub running at "+url+"?)") {
		t.Errorf("no ack within --timeout: exit %d, want 1 asking whether wxhub runs at %s:\n%s", code, url, out)
	}
}

// TestJobRefusedByJetStreamSaysNatsOnce: a job JetStream refuses (here
// larger than WX_JOBS's max_msg_size) fails with nats.go's API error
// said once, "nats: API error: ...", not "nats: nats: API error: ...",
// and without the hint for an unreachable NATS (JetStream answered).
func TestJobRefusedByJetStreamSaysNatsOnce(t *testing.T) {
	env := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := env.JS.Stream(ctx, events.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	cfg.MaxMsgSize = 16
	if _, err := env.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := cliAt(env.URL)("lookup", "--appid", "wxapp", "--openid", "o1", "--job-id", "too-big", "--timeout", "3s")
	want := regexp.MustCompile(`^wxhub lookup: publish user\.lookup: nats: API error: code=\d+ err_code=10054 description=message size exceeds maximum allowed\n$`)
	if code != exitFailure || stdout != "" || !want.MatchString(stderr) || strings.Contains(stderr, "nats: nats:") {
		t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr (want %v):\n%s", code, exitFailure, stdout, want, stderr)
	}
}
