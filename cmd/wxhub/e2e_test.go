package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// wxhubBinary is the wxhub binary built from this checkout, once per
// test binary run.
func wxhubBinary(t *testing.T) string { return wxhubtest.Binary(t) }

// proc is a process a test started, its output collected.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr wxhubtest.Buffer
	exited         chan error
}

// startProc starts cmd collecting its output; it is killed at the end of
// the test if still running.
func startProc(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, exited: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = &p.stdout, &p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); p.exit(t, time.Minute) })
	return p
}

// exit waits up to d for the process to exit and returns its exit error
// (nil for status 0); it fails the test at the deadline.
func (p *proc) exit(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-p.exited:
		p.exited <- err // for later calls
		return err
	case <-time.After(d):
		t.Fatalf("%s did not exit within %v\nstderr:\n%s", p.cmd.Args[1], d, p.stderr.String())
		return nil
	}
}

// lineWaiter scans a process's output for lines matching patterns.
type lineWaiter struct {
	mu    sync.Mutex
	lines []string
	added chan struct{}
	eof   chan struct{} // closed once the output ended (the process closed it)
}

// newLineWaiter scans r. A process whose output is r (a StdoutPipe or
// StderrPipe) must be waited for with waitCmd, not cmd.Wait: Wait closes
// the pipe, and what it still held would be lost.
func newLineWaiter(r io.Reader, tee io.Writer) *lineWaiter {
	w := &lineWaiter{added: make(chan struct{}, 1), eof: make(chan struct{})}
	go func() {
		defer close(w.eof)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			w.mu.Lock()
			w.lines = append(w.lines, sc.Text())
			w.mu.Unlock()
			if tee != nil {
				io.WriteString(tee, sc.Text()+"\n")
			}
			select {
			case w.added <- struct{}{}:
			default:
			}
		}
	}()
	return w
}

// waitCmd is cmd.Wait once the output w reads has ended, so that every
// line the process wrote is in w (and its tee) when it returns.
func (w *lineWaiter) waitCmd(cmd *exec.Cmd) error {
	<-w.eof
	return cmd.Wait()
}

// wait returns the submatches of the first line matching re, or fails at
// the deadline.
func (w *lineWaiter) wait(t *testing.T, re *regexp.Regexp, d time.Duration) []string {
	t.Helper()
	deadline := time.After(d)
	for {
		w.mu.Lock()
		for _, l := range w.lines {
			if m := re.FindStringSubmatch(l); m != nil {
				w.mu.Unlock()
				return m
			}
		}
		w.mu.Unlock()
		select {
		case <-w.added:
		case <-deadline:
			w.mu.Lock()
			defer w.mu.Unlock()
			t.Fatalf("no line matching %v within %v; output:\n%s", re, d, strings.Join(w.lines, "\n"))
		}
	}
}

// TestRunLookupAndCleanStop is the newcomer's path: `wxhub run` with no
// configuration, then `wxhub lookup` for a demo follower prints a profile,
// and SIGTERM stops wxhub run with exit status 0.
func TestRunLookupAndCleanStop(t *testing.T) {
	bin := wxhubBinary(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, "run", "--nats-listen", "127.0.0.1:0", "--sim-listen", "127.0.0.1:0",
		"--http-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"))
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	}()
	out := newLineWaiter(stdout, nil)
	natsURL := out.wait(t, regexp.MustCompile(`NATS: (nats://\S+)`), 60*time.Second)[1]
	demo := out.wait(t, regexp.MustCompile(`demo app (\S+) \(followers: \[(\S+)`), 5*time.Second)
	appid, openid := demo[1], demo[2]
	ops := out.wait(t, regexp.MustCompile(`Metrics: http://(\S+)/metrics`), 5*time.Second)[1]

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lookup := exec.CommandContext(ctx, bin, "lookup", "--nats-url", natsURL, "--appid", appid, "--openid", openid, "--timeout", "45s")
	res, err := lookup.Output()
	if err != nil {
		t.Fatalf("lookup: %v\n%s\nwxhub run stderr:\n%s", err, res, stderr.String())
	}
	var profile map[string]any
	if err := json.Unmarshal(res, &profile); err != nil {
		t.Fatalf("lookup printed %q: %v", res, err)
	}
	if profile["openid"] != openid || profile["source"] != "user.info" || profile["appid"] != appid {
		t.Fatalf("profile = %v", profile)
	}

	// A lookup for someone who is not a follower: exit status 1 and a
	// user.profile.failed on stdout.
	bad := exec.CommandContext(ctx, bin, "lookup", "--nats-url", natsURL, "--appid", appid, "--openid", "o-not-a-follower")
	res, err = bad.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(res), `"wechat"`) {
		t.Fatalf("failed lookup: err=%v out=%s", err, res)
	}
	// Usage errors: exit status 2.
	err = exec.CommandContext(ctx, bin, "lookup", "--nats-url", natsURL, "--appid", appid).Run()
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("usage error: %v", err)
	}

	// token get prints metadata, never the token unless asked.
	tok, err := exec.CommandContext(ctx, bin, "token", "get", "--nats-url", natsURL, "--appid", appid).Output()
	if err != nil || !strings.Contains(string(tok), `"fingerprint"`) || strings.Contains(string(tok), "access_token") {
		t.Fatalf("token get: %v %s", err, tok)
	}
	st, err := exec.CommandContext(ctx, bin, "status", "--nats-url", natsURL).Output()
	if err != nil || !strings.Contains(string(st), appid) || !strings.Contains(string(st), "user.lookup") ||
		!regexp.MustCompile(`(?m)^worker\s+\S+\s+0\s+2\s`).Match(st) || !regexp.MustCompile(`(?m)^holder\s+\S+.*`+appid).Match(st) {
		t.Fatalf("status: %v\n%s", err, st)
	}
	// Operations endpoints: after a served job the process is ready and
	// its metrics count the job.
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "worker: ok",
		"/metrics": `wxhub_jobs_total{outcome="success",subject="user.lookup"} 1`,
	} {
		resp, err := http.Get("http://" + ops + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, want %q in:\n%s", path, resp.StatusCode, want, body)
		}
	}

	// The gateway's printed curl commands work when pasted into a shell:
	// a handle (not the real token) for the token, a profile for user/info.
	gwURL := out.wait(t, regexp.MustCompile(`Gateway for existing WeChat SDKs: (\S+)`), 5*time.Second)[1]
	tokenCmd := out.wait(t, regexp.MustCompile(`^  (token=\$\(curl .*)$`), 5*time.Second)[1]
	userCmd := out.wait(t, regexp.MustCompile(`^  (curl -s "\S+/cgi-bin/user/info.*)$`), 5*time.Second)[1]
	sh := exec.CommandContext(ctx, "sh", "-c", tokenCmd+"\necho \"token:$token\"\n"+userCmd)
	shOut, err := sh.CombinedOutput()
	if err != nil || !strings.Contains(string(shOut), `"openid":"`+openid+`"`) || !regexp.MustCompile(`token:wxh1_\S+`).Match(shOut) {
		t.Fatalf("pasted gateway commands: %v\n%s\n%s", err, tokenCmd+"\n"+userCmd, shOut)
	}
	if !strings.HasPrefix(gwURL, "http://127.0.0.1:") {
		t.Fatalf("the gateway should listen on loopback: %s", gwURL)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("wxhub run after SIGTERM: %v\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("wxhub run did not stop within 60s of SIGTERM\nstderr:\n%s", stderr.String())
	}
}
