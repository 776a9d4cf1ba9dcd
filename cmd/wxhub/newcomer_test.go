package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/internal/config"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

func TestVersionString(t *testing.T) {
	tests := []struct {
		name string
		info *debug.BuildInfo
		ok   bool
		want string
	}{
		{"no build info", nil, false, "unknown version"},
		{"module version and revision", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2026-11-21T10:00:00Z"}, {Key: "vcs.modified", Value: "false"},
		}}, true, "wxhub v1.2.3 (rev 0123456789ab, 2026-11-21T10:00:00Z) go1.26.0"},
		{"dirty devel build", &debug.BuildInfo{GoVersion: "go1.26.0", Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "true"},
		}}, true, "wxhub (devel) (rev abc+dirty) go1.26.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := versionString(tt.info, tt.ok); !strings.Contains(got, tt.want) {
				t.Fatalf("versionString = %q, want %q", got, tt.want)
			}
		})
	}
	var stdout bytes.Buffer
	env := &cmdEnv{stdout: &stdout, stderr: &stdout, getenv: func(string) string { return "" }}
	if code := run(context.Background(), env, []string{"--version"}); code != exitOK || !strings.HasPrefix(stdout.String(), "wxhub ") {
		t.Fatalf("--version: exit %d, %q", code, stdout.String())
	}
}

// TestVersionOfTheBuiltBinary: `make build` gives a binary that names
// the checkout's VCS revision.
func TestVersionOfTheBuiltBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "wxhub")
	if out, err := exec.Command("make", "-C", "../..", "build", "BIN="+bin).CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	rev, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("git: %v", err)
	}
	if !strings.Contains(string(out), "rev "+string(rev[:12])) {
		t.Fatalf("wxhub --version = %q, want rev %s", out, rev[:12])
	}
}

func TestTryLinesNameTheNATSURL(t *testing.T) {
	demo := wechatsim.DemoApp{AppID: "wxdemo", OpenIDs: []string{"oDemo"}}
	for _, url := range []string{config.DefaultNATSURL, "nats://127.0.0.1:14222"} {
		var stdout bytes.Buffer
		cfg := config.Default()
		cfg.NATS.URL = url
		cfg.WeChatBaseURL = "http://127.0.0.1:8091"
		printTry(&cmdEnv{stdout: &stdout}, &cfg, "127.0.0.1:8090", true, demo)
		for _, line := range strings.Split(stdout.String(), "\n") {
			if !strings.Contains(line, "./bin/wxhub ") {
				continue
			}
			has := strings.Contains(line, "--nats-url "+url)
			if want := url != config.DefaultNATSURL; has != want {
				t.Errorf("NATS at %s: line %q: --nats-url present %v, want %v", url, line, has, want)
			}
		}
	}
}

// TestSecondRunOnSamePortOrDataDir: while one `wxhub run` runs, a second
// on the same NATS port says the port is in use and by whom, and one on
// other ports but the same --data-dir refuses to share the JetStream
// files; neither waits 10 s.
func TestSecondRunOnSamePortOrDataDir(t *testing.T) {
	bin := wxhubBinary(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	first := exec.Command(bin, "run", "--nats-listen", "127.0.0.1:0", "--sim-listen", "127.0.0.1:0", "--http-listen", "", "--gateway-listen", "127.0.0.1:0", "--data-dir", dataDir)
	stdout, _ := first.StdoutPipe()
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { first.Process.Kill(); first.Wait() })
	natsURL := newLineWaiter(stdout, nil).wait(t, regexp.MustCompile(`NATS: nats://(\S+)`), 60*time.Second)[1]

	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"same port", []string{"--nats-listen", natsURL, "--data-dir", filepath.Join(t.TempDir(), "other")},
			[]string{"NATS port " + natsURL + " is in use", `a NATS server (name "wxhub-embedded"`, "pid " + strconv.Itoa(first.Process.Pid)}},
		{"same data dir", []string{"--nats-listen", "127.0.0.1:0", "--data-dir", dataDir},
			[]string{"data-dir " + dataDir + " is in use by another wxhub run (pid " + strconv.Itoa(first.Process.Pid) + ")"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr wxhubtest.Buffer
			env := &cmdEnv{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
			start := time.Now()
			code := run(context.Background(), env, append([]string{"run", "--sim-listen", "127.0.0.1:0", "--http-listen", "", "--gateway-listen", "127.0.0.1:0"}, tt.args...))
			if code != exitFailure {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitFailure, stderr.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
			if d := time.Since(start); d > 8*time.Second {
				t.Errorf("took %v to refuse", d)
			}
		})
	}
}

// TestRoleWaitsForNATS: a holder started before its NATS server logs each
// attempt, connects when the server comes up, and serves; with a short
// --nats-connect-timeout and no server it gives up, saying so.
func TestRoleWaitsForNATS(t *testing.T) {
	bin := wxhubBinary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	sim := wechatsim.New()
	sim.AddApp("wxwait", "wait-secret")
	api := httptest.NewServer(sim)
	defer api.Close()

	holder := exec.Command(bin, "holder", "--nats-url", "nats://127.0.0.1:"+strconv.Itoa(port), "--wechat-base-url", api.URL,
		"--http-listen", "", "--app", "appid=wxwait", "--log-format", "json")
	holder.Env = append(os.Environ(), "WXHUB_SECRET_WXWAIT=wait-secret")
	stderr, _ := holder.StderrPipe()
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	log := newLineWaiter(stderr, nil)
	done := make(chan error, 1)
	go func() { done <- log.waitCmd(holder) }()
	t.Cleanup(func() { holder.Process.Kill() })
	log.wait(t, regexp.MustCompile(`"msg":"NATS not reachable yet, retrying".*"attempt":2`), 30*time.Second)

	srv, err := broker.StartEmbedded(broker.EmbeddedConfig{Port: port, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	log.wait(t, regexp.MustCompile(`"msg":"connected to NATS"`), 30*time.Second)
	// The holder waits for the admin to provision, as when both start
	// together (a Kubernetes Job and a Deployment).
	if out, err := exec.Command(bin, "provision", "--nats-url", srv.ClientURL()).CombinedOutput(); err != nil {
		t.Fatalf("wxhub provision: %v\n%s", err, out)
	}
	log.wait(t, regexp.MustCompile(`"msg":"token refreshed"`), 30*time.Second)
	holder.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("holder after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("holder did not stop")
	}

	srv.Shutdown()

	// No server and a 1 s deadline: exit 1, naming the attempts.
	out, err := exec.Command(bin, "worker", "--nats-url", "nats://127.0.0.1:"+strconv.Itoa(port), "--nats-connect-timeout", "1s",
		"--http-listen", "", "--app", "appid=wxwait").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitFailure || !strings.Contains(string(out), "gave up after") {
		t.Fatalf("worker without NATS: %v\n%s", err, out)
	}
}
