package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
)

// TestResultAndDeadLetters: against a real `wxhub run`, `wxhub result`
// prints past results (from the done record, and by scanning when there
// is none), `deadletters list/show` show the rejected jobs with their
// reasons, and `deadletters replay --body` runs a fixed job under a new
// job_id.
func TestResultAndDeadLetters(t *testing.T) {
	natsURL, out := startWxhubRun(t)
	demo := out.wait(t, regexp.MustCompile(`demo app (\S+) \(followers: \[(\S+)`), 5*time.Second)
	appid, openid := demo[1], demo[2]
	wx := cliAt(natsURL)
	if code, o, e := wx("lookup", "--appid", appid, "--openid", openid, "--job-id", "ops-ok"); code != exitOK {
		t.Fatalf("lookup: %d %s %s", code, o, e)
	}
	if code, o, e := wx("lookup", "--appid", "wxnotconfigured", "--openid", openid, "--job-id", "ops-unknown-app"); code != exitFailure {
		t.Fatalf("lookup for an unknown app: %d %s %s", code, o, e)
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bad := nats.NewMsg(events.SubjectUserLookup)
	bad.Header.Set(events.HeaderMsgID, "ops-not-json")
	bad.Data = []byte(`{"job_id":"ops-not-json",`)
	if _, err := js.PublishMsg(ctx, bad); err != nil {
		t.Fatal(err)
	}

	// result: from the done record.
	code, o, e := wx("result", "--job-id", "ops-ok")
	if code != exitOK || !strings.Contains(o, `"openid": "`+openid+`"`) {
		t.Fatalf("result ops-ok: %d\n%s\n%s", code, o, e)
	}
	code, o, _ = wx("result", "--job-id", "ops-unknown-app")
	if code != exitFailure || !strings.Contains(o, `"kind": "config"`) {
		t.Fatalf("result ops-unknown-app: %d\n%s", code, o)
	}
	if code, _, e := wx("result", "--job-id", "ops-never"); code != exitFailure || !strings.Contains(e, "no result for job ops-never") {
		t.Fatalf("result of a job never published: %d %s", code, e)
	}
	if code, _, e := wx("result"); code != exitUsage {
		t.Fatalf("result without --job-id: %d %s", code, e)
	}
	// result: by scanning, with no done record to lead the way.
	done, err := js.KeyValue(ctx, events.BucketDone)
	if err != nil {
		t.Fatal(err)
	}
	if err := done.Purge(ctx, events.DoneKey("ops-ok")); err != nil {
		t.Fatal(err)
	}
	m, err := findResult(ctx, broker.LocalJetStreams(js, grants.Provision), events.NewSubjects(""), "ops-ok", time.Hour)
	if err != nil || m == nil || m.Subject != events.SubjectUserProfile || jobIDOf(m.Data) != "ops-ok" {
		t.Fatalf("scan for ops-ok: %v %+v", err, m)
	}

	// deadletters list: both rejected jobs, with reasons.
	var dls []deadLetter
	waitDeadLetters := time.Now().Add(20 * time.Second)
	for tick := time.NewTicker(100 * time.Millisecond); len(dls) < 2 && time.Now().Before(waitDeadLetters); <-tick.C {
		code, o, e = wx("deadletters", "list", "--json")
		if code != exitOK {
			t.Fatalf("deadletters list: %d %s", code, e)
		}
		dls = nil
		for _, line := range strings.Split(strings.TrimSpace(o), "\n") {
			var d deadLetter
			if json.Unmarshal([]byte(line), &d) == nil {
				dls = append(dls, d)
			}
		}
	}
	byID := map[string]deadLetter{}
	for _, d := range dls {
		byID[d.JobID] = d
	}
	unknown, notJSON := byID["ops-unknown-app"], byID["ops-not-json"]
	if !strings.HasPrefix(unknown.Reason, "config:") || unknown.JobSubject != events.SubjectUserLookup || !strings.HasPrefix(notJSON.Reason, "invalid_job:") {
		t.Fatalf("dead letters %+v", dls)
	}
	code, o, _ = wx("deadletters", "list")
	if code != exitOK || !regexp.MustCompile(`(?m)^`+strconv.FormatUint(unknown.Seq, 10)+`\s+\S+\s+user\.lookup\s+ops-unknown-app\s+wxnotconfigured\s+config:`).MatchString(o) {
		t.Fatalf("deadletters list table:\n%s", o)
	}
	code, o, _ = wx("deadletters", "show", "--seq", strconv.FormatUint(unknown.Seq, 10))
	if code != exitOK || !strings.Contains(o, "reason:      config:") || !strings.Contains(o, `"appid": "wxnotconfigured"`) {
		t.Fatalf("deadletters show: %d\n%s", code, o)
	}
	if code, _, e := wx("deadletters", "show", "--seq", "999999"); code != exitFailure || !strings.Contains(e, "no dead letter with sequence 999999") {
		t.Fatalf("show of a missing seq: %d %s", code, e)
	}

	// replay: not JSON and no fix is a usage error; the fixed job runs.
	if code, _, e := wx("deadletters", "replay", "--seq", strconv.FormatUint(notJSON.Seq, 10)); code != exitUsage || !strings.Contains(e, "--body") {
		t.Fatalf("replay of a broken job without --body: %d %s", code, e)
	}
	// A `null` job (a business published null; the worker dead-letters it)
	// is no object to replay either, passed as is or as the fix.
	nullBody := filepath.Join(t.TempDir(), "null.json")
	os.WriteFile(nullBody, []byte("null"), 0o600)
	if code, _, e := wx("deadletters", "replay", "--seq", strconv.FormatUint(notJSON.Seq, 10), "--body", nullBody); code != exitUsage || !strings.Contains(e, "not a JSON object (it is null)") {
		t.Fatalf("replay with a null body: %d %s", code, e)
	}
	fixed := filepath.Join(t.TempDir(), "fixed.json")
	os.WriteFile(fixed, []byte(`{"job_id":"ops-unknown-app","appid":"`+appid+`","openid":"`+openid+`"}`), 0o600)
	code, o, e = wx("deadletters", "replay", "--seq", strconv.FormatUint(unknown.Seq, 10), "--body", fixed)
	if code != exitOK || !strings.Contains(o, `"job_id": "ops-unknown-app.replay-`+strconv.FormatUint(unknown.Seq, 10)+`"`) {
		t.Fatalf("replay with a fixed body: %d\n%s\n%s", code, o, e)
	}
	// Replaying the same dead letter again is the same job: same result.
	code, o2, e := wx("deadletters", "replay", "--seq", strconv.FormatUint(unknown.Seq, 10), "--body", fixed)
	if code != exitOK || o2 != o {
		t.Fatalf("second replay: %d\n%s\n%s", code, o2, e)
	}
}

// startWxhubRun starts `wxhub run` (embedded NATS, simulator, every role)
// and returns its NATS URL and its output.
func startWxhubRun(t *testing.T) (string, *lineWaiter) {
	t.Helper()
	proc := exec.Command(wxhubBinary(t), "run", "--nats-listen", "127.0.0.1:0", "--sim-listen", "127.0.0.1:0", "--http-listen", "", "--gateway-listen", "127.0.0.1:0",
		"--data-dir", filepath.Join(t.TempDir(), "data"))
	stdout, _ := proc.StdoutPipe()
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Process.Kill(); proc.Wait() })
	out := newLineWaiter(stdout, nil)
	return out.wait(t, regexp.MustCompile(`NATS: (nats://\S+)`), 60*time.Second)[1], out
}

// cliAt runs wxhub commands in-process against natsURL: exit status,
// stdout, stderr.
func cliAt(natsURL string) func(args ...string) (int, string, string) {
	return func(args ...string) (int, string, string) {
		var o, e bytes.Buffer
		env := &cmdEnv{stdout: &o, stderr: &e, getenv: func(k string) string { return map[string]string{"NATS_URL": natsURL}[k] }}
		code := run(context.Background(), env, args)
		return code, o.String(), e.String()
	}
}
