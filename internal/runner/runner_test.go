package runner_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/internal/runner"
)

// recorder logs lifecycle steps in order.
type recorder struct {
	mu    sync.Mutex
	steps []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.steps = append(r.steps, s)
	r.mu.Unlock()
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.steps, " ")
}

// blockingRole runs until its ctx ends, recording start, run and stop.
func blockingRole(rec *recorder, name string) runner.Role {
	return runner.Role{
		Name:  name,
		Start: func(context.Context) error { rec.add("start:" + name); return nil },
		Run: func(ctx context.Context) error {
			<-ctx.Done()
			rec.add("stop:" + name)
			return ctx.Err()
		},
	}
}

// runAsync runs r in the background; the returned wait gives Run's error
// or fails the test if Run does not return within 10 s.
func runAsync(t *testing.T, r *runner.Runner, ctx context.Context) (wait func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("runner did not return within 10s")
			return nil
		}
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestStartsInOrderStopsInReverseOnCancel(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	r := &runner.Runner{
		Roles:   []runner.Role{blockingRole(rec, "holder"), blockingRole(rec, "worker"), blockingRole(rec, "gateway")},
		Started: func(string) { close(started) },
	}
	wait := runAsync(t, r, ctx)
	<-started
	cancel()
	if err := wait(); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	want := "start:holder start:worker start:gateway stop:gateway stop:worker stop:holder"
	if got := rec.String(); got != want {
		t.Fatalf("steps:\n got %s\nwant %s", got, want)
	}
}

// A role stopping later in the list may rely on the earlier ones while it
// drains: the holder's ctx is not cancelled before the gateway returned.
func TestEarlierRoleRunsWhileLaterOneDrains(t *testing.T) {
	t.Parallel()
	var holderUp atomic.Bool
	drainedWithHolder := make(chan bool, 1)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	r := &runner.Runner{
		Roles: []runner.Role{
			{Name: "holder", Run: func(ctx context.Context) error {
				holderUp.Store(true)
				<-ctx.Done()
				holderUp.Store(false)
				return nil
			}},
			{Name: "gateway", Run: func(ctx context.Context) error {
				<-ctx.Done()
				time.Sleep(50 * time.Millisecond) // an in-flight call finishing
				drainedWithHolder <- holderUp.Load()
				return nil
			}},
		},
		Started: func(string) { close(started) },
	}
	wait := runAsync(t, r, ctx)
	<-started
	cancel()
	wait()
	if !<-drainedWithHolder {
		t.Fatal("the holder stopped before the gateway finished draining")
	}
}

func TestFailingRoleStopsTheOthersAndNamesItself(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	boom := errors.New("boom")
	r := &runner.Runner{Roles: []runner.Role{
		blockingRole(rec, "holder"),
		{Name: "worker", Run: func(context.Context) error { return boom }},
		blockingRole(rec, "gateway"),
	}}
	err := r.Run(context.Background())
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "worker: ") {
		t.Fatalf("Run = %v, want worker: boom", err)
	}
	if got := rec.String(); !strings.HasSuffix(got, "stop:gateway stop:holder") {
		t.Fatalf("steps: %s", got)
	}
}

func TestFailedStartRunsNothingButReleasesStartedRoles(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	bad := errors.New("port in use")
	r := &runner.Runner{Roles: []runner.Role{
		blockingRole(rec, "holder"),
		{Name: "gateway", Start: func(context.Context) error { return bad }, Run: func(context.Context) error {
			rec.add("run:gateway")
			return nil
		}},
		blockingRole(rec, "late"),
	}}
	err := r.Run(context.Background())
	if !errors.Is(err, bad) || err.Error() != "gateway: port in use" {
		t.Fatalf("Run = %v", err)
	}
	if got, want := rec.String(), "start:holder stop:holder"; got != want {
		t.Fatalf("steps %q, want %q", got, want)
	}
}

// A role's error that names the role already is not named twice.
func TestRoleNamedOnce(t *testing.T) {
	t.Parallel()
	for _, msg := range []string{"gateway: listen: in use", "listen: in use"} {
		r := &runner.Runner{Roles: []runner.Role{{Name: "gateway",
			Start: func(context.Context) error { return errors.New(msg) },
			Run:   func(context.Context) error { return nil }}}}
		if err := r.Run(context.Background()); err == nil || err.Error() != "gateway: listen: in use" {
			t.Errorf("Start error %q: Run = %v", msg, err)
		}
	}
}

func TestOpsListenErrorIsAListenError(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := &runner.Runner{OpsListen: ln.Addr().String(), Roles: []runner.Role{blockingRole(&recorder{}, "holder")}}
	var le *runner.ListenError
	if err := r.Run(context.Background()); !errors.As(err, &le) {
		t.Fatalf("Run = %v, want a ListenError", err)
	}
}

// /readyz has one line per check with the reason; 503 until every role is
// ready and again once stopping. Presence: each role with a Status answers.
func TestReadyzAndPresenceOnRealNATS(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t)
	nc := env.Conn(t)
	var workerReady atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opsCh := make(chan string, 1)
	gatewayStopping := make(chan struct{})
	gatewayRelease := make(chan struct{})
	r := &runner.Runner{
		Conn: nc, Prefix: "t.", OpsListen: "127.0.0.1:0",
		Roles: []runner.Role{
			{Name: "holder", Run: func(ctx context.Context) error { <-ctx.Done(); return nil },
				Ready: func() error { return nil }, Status: func() any { return map[string]string{"role": "holder"} }},
			{Name: "worker", Run: func(ctx context.Context) error { <-ctx.Done(); return nil },
				Ready: runner.ReadyWhen(workerReady.Load, "tokens not loaded yet"), Status: func() any { return map[string]string{"role": "worker"} }},
			{Name: "gateway", Run: func(ctx context.Context) error {
				<-ctx.Done()
				close(gatewayStopping)
				<-gatewayRelease
				return nil
			}},
		},
		Started: func(a string) { opsCh <- a },
	}
	wait := runAsync(t, r, ctx)
	ops := "http://" + <-opsCh

	code, body := get(t, ops+"/readyz")
	if code != 503 || !strings.Contains(body, "nats: ok\n") || !strings.Contains(body, "holder: ok\n") || !strings.Contains(body, "worker: tokens not loaded yet\n") {
		t.Fatalf("readyz before ready: %d\n%s", code, body)
	}
	workerReady.Store(true)
	if code, body := get(t, ops+"/readyz"); code != 200 || strings.Contains(body, "not") {
		t.Fatalf("readyz when ready: %d\n%s", code, body)
	}
	if code, _ := get(t, ops+"/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	if code, body := get(t, ops+"/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("metrics %d", code)
	}

	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("t."+runner.PresenceSubject, inbox, nil); err != nil {
		t.Fatal(err)
	}
	roles := map[string]bool{}
	for len(roles) < 2 {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("presence replies %v: %v", roles, err)
		}
		var st map[string]string
		if err := json.Unmarshal(m.Data, &st); err != nil {
			t.Fatal(err)
		}
		roles[st["role"]] = true
	}
	if !roles["holder"] || !roles["worker"] {
		t.Fatalf("presence: %v", roles)
	}

	// Stopping: /readyz says so while the gateway drains; ops HTTP is
	// still up for the scrape.
	cancel()
	<-gatewayStopping
	if code, body := get(t, ops+"/readyz"); code != 503 || !strings.Contains(body, "stopping") {
		t.Fatalf("readyz while stopping: %d %s", code, body)
	}
	close(gatewayRelease)
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(ops + "/healthz"); err == nil {
		t.Fatal("ops HTTP still serving after Run returned")
	}
}
