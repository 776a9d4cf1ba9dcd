//go:build unix

package main

import (
	"encoding/json"
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
	"github.com/wxhub/wxhub/internal/wxhubtest"
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
	var stdout, stderr wxhubtest.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	// Its job is published: it has subscribed to the results by now.
	if _, err := jobs.NextMsg(20 * time.Second); err != nil {
		t.Fatalf("no job from lookup: %v\n%s", err, stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
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
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-exited:
		exited <- err
	case <-time.After(60 * time.Second):
		t.Fatal("lookup did not exit")
	}
	out := stdout.String()
	if err != nil || !strings.Contains(out, `"job_id": "`+id+`"`) || strings.Contains(out, "someone-else") {
		t.Errorf("lookup: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	if strings.Contains(stderr.String(), "slow consumer") {
		t.Errorf("lookup dropped results (slow consumer):\n%s", stderr.String())
	}
}
