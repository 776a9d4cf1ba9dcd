package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// signalledRole is a single-role command with the flags it needs besides
// NATS and app wxsig (its secret, and client shop's key, are in the
// environment: see command).
type signalledRole struct {
	role  string
	extra []string
}

// signalledRoles are the long-running single-role commands.
var signalledRoles = []signalledRole{
	{"holder", nil},
	{"worker", nil},
	{"gateway", []string{"--gateway-listen", "127.0.0.1:0", "--client", "name=shop,appids=wxsig"}},
}

// command is `wxhub <role>` on natsURL with args.
func (r signalledRole) command(bin, natsURL string, args ...string) *exec.Cmd {
	args = append(append([]string{r.role, "--nats-url", natsURL, "--app", "appid=wxsig"}, args...), r.extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "WXHUB_SECRET_WXSIG=sig-secret", "WXHUB_CLIENT_KEY_SHOP=sig-client-key-0123")
	return cmd
}

// A role stopped while it still waits for NATS has started nothing and
// lost nothing: it exits 0, saying what it was waiting for.
func TestStopWhileStartingExitsZero(t *testing.T) {
	bin := wxhubBinary(t)
	dead := deadNATSURL(t)
	for _, tc := range signalledRoles {
		t.Run(tc.role, func(t *testing.T) {
			t.Parallel()
			cmd := tc.command(bin, dead, "--http-listen", "127.0.0.1:0")
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			log := &wxhubtest.Buffer{}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			lines := newLineWaiter(stderr, log)
			go func() { done <- lines.waitCmd(cmd) }()
			lines.wait(t, regexp.MustCompile(`NATS not reachable yet, retrying`), 30*time.Second)
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("%s stopped while waiting for NATS: %v, want status 0\n%s", tc.role, err, log.String())
				}
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("%s did not stop within 30 s of SIGTERM\n%s", tc.role, log.String())
			}
			if !strings.Contains(log.String(), "stopped while starting") {
				t.Errorf("%s: no 'stopped while starting' line:\n%s", tc.role, log.String())
			}
		})
	}
}

// A role stopped while NATS answers but `wxhub provision` has not run yet
// (it waits for its streams) has started nothing and lost nothing either:
// it exits 0 with "stopped while starting", naming what it waited for,
// and leaves the server as it found it (a role never provisions). The
// stop comes once the role has looked at least once and found its
// streams missing: its second look at wx_tokens (every role reads it).
func TestStopWhileWaitingForStreamsExitsZero(t *testing.T) {
	bin := wxhubBinary(t)
	for _, tc := range signalledRoles {
		t.Run(tc.role, func(t *testing.T) {
			t.Parallel()
			srv, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(srv.Shutdown)
			nc, err := broker.Connect(broker.ConnConfig{URL: srv.ClientURL(), Name: t.Name()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			looks, err := nc.SubscribeSync("$JS.API.STREAM.INFO.KV_" + events.BucketTokens)
			if err == nil {
				err = nc.Flush()
			}
			if err != nil {
				t.Fatal(err)
			}
			cmd := tc.command(bin, srv.ClientURL(), "--nats-connect-timeout", "30s", "--http-listen", "")
			p := startProc(t, cmd)
			for i := range 2 {
				if _, err := looks.NextMsg(20 * time.Second); err != nil {
					t.Fatalf("%s: no look %d at %s: %v\n%s", tc.role, i+1, events.BucketTokens, err, p.stderr.String())
				}
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := p.exit(t, 30*time.Second); err != nil {
				t.Fatalf("%s stopped while waiting for its streams: %v, want status 0\n%s", tc.role, err, p.stderr.String())
			}
			waiting := regexp.MustCompile(`"stopped while starting" waiting_for=".*not provisioned on this NATS: .*bucket wx_tokens`)
			if !waiting.MatchString(p.stderr.String()) {
				t.Errorf("%s: no 'stopped while starting' line naming the missing bucket wx_tokens:\n%s", tc.role, p.stderr.String())
			}
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			names := js.StreamNames(context.Background())
			for name := range names.Name() {
				t.Errorf("%s made stream %s", tc.role, name)
			}
			if err := names.Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// deadNATSURL is a loopback URL where nothing listens.
func deadNATSURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "nats://" + addr
}

// The first SIGTERM stops gracefully and waits for the job in flight; a
// second signal ends the process at once (the job is redelivered later).
func TestSecondSignalExitsAtOnce(t *testing.T) {
	run := wxhubtest.StartRun(t)
	// user/info answers after a minute: the job stays in flight.
	resp, err := http.Post(run.SimURL+"/_sim/faults", "application/json",
		strings.NewReader(`{"path":"/cgi-bin/user/info","delay_ms":60000}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	lookup := exec.Command(wxhubBinary(t), "lookup", "--nats-url", run.NATSURL, "--appid", run.AppID, "--openid", run.OpenID, "--timeout", "2m")
	if err := lookup.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lookup.Process.Kill(); _ = lookup.Wait() })
	waitInFlight(t, run.NATSURL, 30*time.Second)

	if err := run.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Signal again until the process is gone: the first of these that
	// comes after the graceful stop began ends it.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case <-run.Exited():
			var ee *exec.ExitError
			if err := run.Err(); !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() {
				t.Fatalf("exit after a second signal: %v, want killed by the signal", err)
			}
			return
		case <-tick.C:
			_ = run.Signal(syscall.SIGINT)
		case <-deadline:
			t.Fatalf("a second signal did not end the stopping process within 10 s; stderr:\n%s", run.Stderr())
		}
	}
}

// waitInFlight waits until a worker holds a user.lookup job (wxhub
// status: the consumer's unacked deliveries).
func waitInFlight(t *testing.T, natsURL string, d time.Duration) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(d)
	for {
		out, err := exec.Command(wxhubBinary(t), "status", "--json", "--nats-url", natsURL).Output()
		var st statusReport
		if err == nil && json.Unmarshal(out, &st) == nil {
			for _, j := range st.Jobs {
				if j.Subject == "user.lookup" && j.InFlight > 0 {
					return
				}
			}
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("no user.lookup job in flight within %v", d)
		}
	}
}
