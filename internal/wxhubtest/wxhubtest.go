// Package wxhubtest runs the real wxhub binary for tests outside
// cmd/wxhub: it builds cmd/wxhub once per test binary and starts
// `wxhub run` on free loopback ports with its own data directory, the way
// `make run` does, so that examples and the ops kit are tested against
// what users run.
package wxhubtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary returns the path of a wxhub binary built from this checkout.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wxhubtest-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "wxhub")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/wxhub/wxhub/cmd/wxhub").CombinedOutput()
		if err != nil {
			buildErr = &buildError{string(out)}
		}
	})
	if buildErr != nil {
		t.Fatalf("build wxhub: %v", buildErr)
	}
	return binPath
}

type buildError struct{ out string }

func (e *buildError) Error() string { return e.out }

// Run is a running `wxhub run`.
type Run struct {
	// NATSURL is the embedded server's client URL, OpsAddr the host:port of
	// /metrics, /healthz and /readyz.
	NATSURL, OpsAddr string
	// AppID and OpenID are the demo app and its first follower, SimURL
	// the simulator's base URL (demo runs only).
	AppID, OpenID, SimURL string

	cmd    *exec.Cmd
	out    *Lines
	stderr *Lines
	exited chan struct{}
	err    error
}

// StartRun starts `wxhub run` with free ports and a fresh data directory
// plus args, and waits until it prints that it is running. With no --app
// in args it runs the demo app on its simulator. The process is killed at
// the end of the test if still running.
func StartRun(t testing.TB, args ...string) *Run {
	t.Helper()
	base := []string{"run", "--nats-listen", "127.0.0.1:0", "--sim-listen", "127.0.0.1:0",
		"--http-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0", "--data-dir", filepath.Join(t.TempDir(), "data")}
	cmd := exec.Command(Binary(t), append(base, args...)...)
	cmd.Env = os.Environ()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &Run{cmd: cmd, out: NewLines(stdout), stderr: NewLines(stderr), exited: make(chan struct{})}
	go func() { r.err = cmd.Wait(); close(r.exited) }()
	t.Cleanup(func() {
		select {
		case <-r.exited:
		default:
			_ = cmd.Process.Kill()
			<-r.exited
		}
		if t.Failed() {
			t.Logf("wxhub run stderr:\n%s", r.stderr.String())
		}
	})
	// The banner ends with the "Stop with" line: everything above is out.
	r.Wait(t, regexp.MustCompile(`^Stop with Ctrl-C`), 90*time.Second)
	r.NATSURL = r.Wait(t, regexp.MustCompile(`NATS: (nats://\S+)`), time.Second)[1]
	if m := r.out.find(regexp.MustCompile(`simulator at (\S+) with demo app (\S+) \(followers: \[(\S+)`)); m != nil {
		r.SimURL, r.AppID, r.OpenID = m[1], m[2], strings.TrimSuffix(m[3], "]")
	}
	if m := r.out.find(regexp.MustCompile(`Metrics: http://(\S+)/metrics`)); m != nil {
		r.OpsAddr = m[1]
	}
	return r
}

// Wait returns the submatches of the first stdout line matching re, or
// fails the test after d.
func (r *Run) Wait(t testing.TB, re *regexp.Regexp, d time.Duration) []string {
	t.Helper()
	m, ok := r.out.Wait(re, d)
	if !ok {
		t.Fatalf("wxhub run: no line matching %v within %v; stdout:\n%s\nstderr:\n%s", re, d, r.out.String(), r.stderr.String())
	}
	return m
}

// Stdout and Stderr are what the process printed so far.
func (r *Run) Stdout() string { return r.out.String() }
func (r *Run) Stderr() string { return r.stderr.String() }

// Stop sends SIGTERM and waits up to d for the exit; it returns the exit
// error (nil for status 0).
func (r *Run) Stop(t testing.TB, d time.Duration) error {
	t.Helper()
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
		return r.err
	case <-time.After(d):
		t.Fatalf("wxhub run did not stop within %v of SIGTERM; stderr:\n%s", d, r.stderr.String())
		return nil
	}
}

// Signal sends sig to the process.
func (r *Run) Signal(sig os.Signal) error { return r.cmd.Process.Signal(sig) }

// Exited is closed once the process has exited; Err is then its exit
// error (nil for status 0).
func (r *Run) Exited() <-chan struct{} { return r.exited }

// Err is the exit error once Exited is closed.
func (r *Run) Err() error { <-r.exited; return r.err }

// Lines collects a stream's lines and lets a test wait for one.
type Lines struct {
	mu    sync.Mutex
	lines []string
	added chan struct{}
	eof   chan struct{}
}

// NewLines reads r until EOF in the background.
func NewLines(r io.Reader) *Lines {
	l := &Lines{added: make(chan struct{}, 1), eof: make(chan struct{})}
	go func() {
		defer close(l.eof)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			l.mu.Unlock()
			select {
			case l.added <- struct{}{}:
			default:
			}
		}
	}()
	return l
}

func (l *Lines) find(re *regexp.Regexp) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if m := re.FindStringSubmatch(s); m != nil {
			return m
		}
	}
	return nil
}

// Wait returns the submatches of the first line matching re; false after
// d, or at the end of the stream when no line matched.
func (l *Lines) Wait(re *regexp.Regexp, d time.Duration) ([]string, bool) {
	deadline := time.After(d)
	for {
		if m := l.find(re); m != nil {
			return m, true
		}
		select {
		case <-l.added:
		case <-l.eof:
			m := l.find(re)
			return m, m != nil
		case <-deadline:
			return nil, false
		}
	}
}

// String is every line so far.
func (l *Lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// Background runs run (a role's Run: it returns nil once its context is
// cancelled) on its own goroutine until the test ends, or until the
// returned stop is called: stop cancels the context, waits for run to
// return and gives its error. At the end of the test stop is called if it
// was not, and an error, or a run still going 30 s after the cancel,
// fails the test.
func Background(t testing.TB, name string, run func(context.Context) error) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var (
		once sync.Once
		err  error
	)
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				err = fmt.Errorf("%s did not stop within 30 s", name)
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	})
	return stop
}

// Buffer collects output written concurrently (a process's stdout and
// stderr, a logger shared by goroutines) and reads it safely at any time.
// The zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write appends p.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Eventually checks cond every 10 ms until it holds, and fails the test
// if it does not within d. It is for state that no event announces (a
// holder's view of a lease, say): wait on the event where there is one.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}
