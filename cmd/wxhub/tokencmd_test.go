package main

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/nats-io/nats.go/jetstream"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// The README's token steps, run in order against a real holder process —
// look at the token, report it rejected the way a service does, ask for an
// operator's refresh with `wxhub token invalidate`, read `wxhub status` —
// leave no lockout. A second operator refresh at once is refused in one
// line naming the state, and status shows none but what the holder says.
func TestREADMETokenStepsLeaveNoLockout(t *testing.T) {
	bin := wxhubBinary(t)
	nats := brokertest.Start(t)
	sim := wechatsim.New()
	sim.AddApp("wxsteps", "steps-secret")
	api := httptest.NewServer(sim)
	defer api.Close()
	cmd := exec.Command(bin, "holder", "--nats-url", nats.URL, "--wechat-base-url", api.URL,
		"--http-listen", "127.0.0.1:0", "--app", "appid=wxsteps", "--log-format", "json")
	cmd.Env = append(os.Environ(), "WXHUB_SECRET_WXSTEPS=steps-secret")
	stderr, _ := cmd.StderrPipe()
	logs := &wxhubtest.Buffer{}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	newLineWaiter(stderr, logs).wait(t, regexp.MustCompile(`"msg":"token refreshed"`), 30*time.Second)

	run := func(args ...string) (string, string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c := exec.CommandContext(ctx, bin, append(args, "--nats-url", nats.URL)...)
		var out, errOut bytes.Buffer
		c.Stdout, c.Stderr = &out, &errOut
		err := c.Run()
		return out.String(), errOut.String(), err
	}
	// 1. wxhub token get
	out, _, err := run("token", "get", "--appid", "wxsteps")
	if err != nil {
		t.Fatalf("token get: %v", err)
	}
	var tv tokenView
	if err := json.Unmarshal([]byte(out), &tv); err != nil || tv.Version != 1 {
		t.Fatalf("token get: %s (%v)", out, err)
	}
	// 2. a service reports the token rejected (the README's nats pub line)
	kv, err := nats.JS.KeyValue(context.Background(), events.BucketTokens)
	if err != nil {
		t.Fatal(err)
	}
	watch, err := kv.Watch(context.Background(), "wxsteps", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Stop()
	report, _ := json.Marshal(events.TokenInvalidated{AppID: "wxsteps", Version: 1, ErrCode: 40001, Reporter: "me"})
	if err := nats.NC.Publish(events.SubjectTokenInvalidated, report); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(15 * time.Second)
	for version := uint64(1); version != 2; {
		select {
		case e := <-watch.Updates():
			var rec events.TokenRecord
			if e != nil && json.Unmarshal(e.Value(), &rec) == nil {
				version = rec.Version
			}
		case <-timeout:
			t.Fatal("no version 2 after the report")
		}
	}
	// 3. the operator refreshes
	out, errOut, err := run("token", "invalidate", "--appid", "wxsteps")
	if err != nil {
		t.Fatalf("token invalidate after a report: %v\n%s%s", err, out, errOut)
	}
	var reply events.TokenRefreshReply
	if err := json.Unmarshal([]byte(out), &reply); err != nil || reply.Version != 3 {
		t.Fatalf("token invalidate printed %s (%v)", out, err)
	}
	// 4. wxhub status: no lockout
	out, _, err = run("status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st statusReport
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Apps) != 1 {
		t.Fatalf("status: %s (%v)", out, err)
	}
	if l := st.Apps[0].Lockouts; len(l) != 0 {
		t.Errorf("lockouts after the README's steps: %+v", l)
	}
	if strings.Contains(logs.String(), "token conflict") {
		t.Errorf("the holder saw a conflict:\n%s", logs)
	}
	out, _, _ = run("status")
	if !regexp.MustCompile(`wxsteps\s.*\s-\n`).MatchString(out) {
		t.Errorf("status table shows a lockout:\n%s", out)
	}

	// A second operator refresh at once: refused in one line, naming the state.
	_, errOut, err = run("token", "invalidate", "--appid", "wxsteps")
	if err == nil {
		t.Fatal("second token invalidate within 30 s succeeded")
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, "refused: rate_limited until ") {
		t.Errorf("refusal line = %q", last)
	}

	// With the holder gone, the refusal names not_leading.
	_ = cmd.Process.Kill()
	_, _ = cmd.Process.Wait()
	_, errOut, err = run("token", "invalidate", "--appid", "wxsteps", "--timeout", "2s")
	if err == nil || !strings.Contains(errOut, "refused: not_leading: ") {
		t.Errorf("with no holder: %v %q", err, errOut)
	}
	// ... and so does status: the lease names a holder that no longer
	// answers (or, once it lapsed, none).
	out, _, _ = run("status", "--json", "--wait", "100ms")
	st = statusReport{}
	_ = json.Unmarshal([]byte(out), &st)
	if len(st.Apps) != 1 || len(st.Apps[0].Lockouts) != 1 || st.Apps[0].Lockouts[0].State != "not_leading" {
		t.Fatalf("status does not show not_leading: %s", out)
	}
}
