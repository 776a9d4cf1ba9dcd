//go:build unix

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
)

// `wxhub lookup` keeps its own result when 2000 other jobs' results
// arrive just before it, and prints none of theirs. To make the burst
// land at once and deterministically, the command runs on one CPU
// (GOMAXPROCS=1, a busy host) and is stopped (SIGSTOP) while the results
// are published, then continued: it reads them all in one go. A client
// that queues every result for a decoding loop through a small buffer
// drops most of them, nats.go reports the slow consumer, and its own
// result (the last one) is lost.
func TestLookupKeepsItsResultInABurstOfOthers(t *testing.T) {
	bin := wxhubBinary(t)
	env := brokertest.Start(t)
	const id = "burst-job-1"
	jobs, err := env.NC.SubscribeSync(events.SubjectUserLookup)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "lookup", "--nats-url", env.URL, "--appid", "wxapp", "--openid", "o1", "--job-id", id, "--timeout", "10s")
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	p := startProc(t, cmd)
	// Its job is published: it has subscribed to the results by now.
	if _, err := jobs.NextMsg(20 * time.Second); err != nil {
		t.Fatalf("no job from lookup: %v\n%s", err, p.stderr.String())
	}
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	publish := func(jobID string, p events.UserProfile) {
		m := nats.NewMsg(events.SubjectUserProfile)
		m.Data, _ = json.Marshal(p)
		m.Header.Set(events.HeaderMsgID, jobID)
		if err := env.NC.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2000 {
		other := fmt.Sprintf("other-%d", i)
		publish(other, events.UserProfile{JobID: other, AppID: "wxapp", OpenID: "o2", Nickname: "someone-else", Source: events.SourceUserInfo, CompletedAt: time.Now().UTC()})
	}
	publish(id, events.UserProfile{JobID: id, AppID: "wxapp", OpenID: "o1", Nickname: "me", Source: events.SourceUserInfo, CompletedAt: time.Now().UTC()})
	if err := env.NC.Flush(); err != nil { // the server has queued them all for lookup
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	err = p.exit(t, 60*time.Second)
	out := p.stdout.String()
	if err != nil || !strings.Contains(out, `"job_id": "`+id+`"`) || strings.Contains(out, "someone-else") {
		t.Errorf("lookup: %v\nstdout:\n%s\nstderr:\n%s", err, out, p.stderr.String())
	}
	if strings.Contains(p.stderr.String(), "slow consumer") {
		t.Errorf("lookup dropped results (slow consumer):\n%s", p.stderr.String())
	}
}

// A wait for a result that ends at its --timeout looks the result up in
// WX_RESULTS and says so ("none stored"); one interrupted (Ctrl-C) says
// only that no result came: it looked for nothing after the signal. The
// second lookup re-runs the first's job id (its job still queued: no
// worker runs), so its publish is a duplicate and it first searches
// WX_RESULTS for a stored result. The signal is sent once that search's
// fetch is on the wire: from then on nothing the command does waits on
// the signal's context but the wait itself, whatever the scheduling.
func TestInterruptedLookupDoesNotClaimItLookedForTheResult(t *testing.T) {
	bin := wxhubBinary(t)
	env := brokertest.Start(t)
	const id = "interrupted-job-1"
	lookup := func(timeout string) *exec.Cmd {
		return exec.Command(bin, "lookup", "--nats-url", env.URL, "--appid", "wxapp", "--openid", "o1", "--job-id", id, "--timeout", timeout)
	}

	out, err := lookup("1s").CombinedOutput()
	var ee *exec.ExitError
	timedOut := "no result for job " + id + " within 1s, and none stored in " + events.StreamResults
	if !errors.As(err, &ee) || ee.ExitCode() != exitFailure || !strings.Contains(string(out), timedOut) {
		t.Fatalf("lookup timing out: %v, want exit %d saying %q:\n%s", err, exitFailure, timedOut, out)
	}

	fetches, err := env.NC.SubscribeSync("$JS.API.CONSUMER.MSG.NEXT." + events.StreamResults + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, lookup("1m"))
	if _, err := fetches.NextMsg(20 * time.Second); err != nil {
		t.Fatalf("the duplicate lookup did not search %s: %v\n%s", events.StreamResults, err, p.stderr.String())
	}
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err = p.exit(t, 20*time.Second)
	want := "wxhub lookup: no result for job " + id + ": context canceled\n"
	if !errors.As(err, &ee) || ee.ExitCode() != exitFailure || p.stderr.String() != want || p.stdout.String() != "" {
		t.Errorf("interrupted lookup: %v, want exit %d\nstderr: %q\nwant:   %q\nstdout: %q", err, exitFailure, p.stderr.String(), want, p.stdout.String())
	}
}
