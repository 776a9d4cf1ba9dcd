// Package runner runs wxhub's roles in one process. A role (holder,
// worker, gateway, ...) is a value that says what it does: how to start,
// how to run until told to stop, whether it is ready and what it answers
// to `wxhub status`. The Runner owns everything around it, once per
// process whatever the number of roles:
//
//   - ops HTTP: /metrics, /healthz, and /readyz aggregating the NATS
//     connection and every role's readiness, one line each with the reason
//     when not ready (503 while any check fails or the process stops);
//   - presence: each role with a Status answers requests on
//     <prefix>wxhub.status (PresenceSubject), a scatter-gather that
//     `wxhub status` uses;
//   - lifecycle: every Start in order (a failure stops the process before
//     anything runs), then every Run at once; when ctx ends (SIGTERM) or
//     any role returns, /readyz turns 503 and the roles are stopped one at
//     a time in reverse order, each Run returning before the previous
//     role's ctx is cancelled. So a role listed after another may rely on
//     it while it drains: `wxhub run` lists holder, worker, gateway, and
//     the gateway and the workers finish their in-flight calls while the
//     holder still keeps the tokens.
//
// Connecting to NATS (once) is the caller's: it hands the connection to
// the roles it builds and to the Runner for readiness and presence.
package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/metrics"
)

// PresenceSubject is the subject (after the prefix) on which running
// roles answer `wxhub status`. Replies carry no secret.
const PresenceSubject = events.SubjectStatus

// Role is one long-running part of wxhub. Only Name and Run are required.
type Role struct {
	// Name appears in logs, /readyz and errors ("holder", "worker", ...).
	Name string
	// Start, if set, runs before any role's Run, in the order of
	// Runner.Roles: bind listeners, check what can be checked. If any
	// Start fails, no Run is called except, with an already cancelled
	// ctx, those of the roles that started, so they release what Start
	// took.
	Start func(ctx context.Context) error
	// Run blocks until ctx is cancelled and the role has stopped cleanly
	// (it then returns nil or ctx's error), or until the role fails.
	Run func(ctx context.Context) error
	// Ready, if set, returns nil when the role can do its work, else why
	// not (shown on /readyz, so free of secrets).
	Ready func() error
	// Status, if set, returns the role's presence reply, marshalled as
	// JSON (free of secrets).
	Status func() any
}

// ReadyWhen adapts a boolean readiness check: nil when ok() holds, else
// an error saying why.
func ReadyWhen(ok func() bool, why string) func() error {
	return func() error {
		if ok() {
			return nil
		}
		return errors.New(why)
	}
}

// Runner runs Roles. Set the fields, then call Run once.
type Runner struct {
	// Roles, started in order and stopped in reverse order.
	Roles []Role
	// Conn is the process's NATS connection, for /readyz and presence;
	// nil: neither.
	Conn *nats.Conn
	// Prefix is the subject prefix (e.g. "wx.").
	Prefix string
	// OpsListen is the address for /metrics, /healthz and /readyz; ""
	// turns ops HTTP off.
	OpsListen string
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Started, if set, is called once every role has started and runs,
	// with the ops HTTP address ("" when off).
	Started func(opsAddr string)

	stopping atomic.Bool
}

// ListenError is returned when the ops HTTP address cannot be bound (a
// configuration error).
type ListenError struct {
	Addr string
	Err  error
}

func (e *ListenError) Error() string { return fmt.Sprintf("http-listen %s: %v", e.Addr, e.Err) }
func (e *ListenError) Unwrap() error { return e.Err }

// Run starts every role, runs them until ctx ends or one of them returns,
// then stops them in reverse order. It returns the first role's error,
// prefixed with its name (a role stopped by ctx returns nil).
func (r *Runner) Run(ctx context.Context) error {
	log := r.Logger
	if log == nil {
		log = slog.Default()
	}
	for _, role := range r.Roles {
		if role.Name == "" || role.Run == nil {
			return errors.New("runner: a role needs a Name and a Run")
		}
	}
	ops, err := r.listenOps()
	if err != nil {
		return err
	}
	opsAddr := ""
	if ops != nil {
		opsAddr = ops.Addr().String()
	}

	// Start in order; on a failure, let the started roles release.
	started := 0
	for _, role := range r.Roles {
		if role.Start == nil {
			started++
			continue
		}
		if err := role.Start(ctx); err != nil {
			err = named(role.Name, err)
			cancelled, cancel := context.WithCancel(context.Background())
			cancel()
			for _, prev := range r.Roles[:started] {
				_ = prev.Run(cancelled)
			}
			if ops != nil {
				ops.Close()
			}
			return err
		}
		started++
	}

	subs, err := r.announce()
	if err != nil {
		if ops != nil {
			ops.Close()
		}
		return fmt.Errorf("runner: presence: %w", err)
	}
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()

	var srv *http.Server
	if ops != nil {
		srv = &http.Server{Handler: r.opsHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ops); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("ops HTTP server", "err", err)
			}
		}()
	}

	type result struct {
		i   int
		err error
	}
	results := make(chan result, len(r.Roles))
	cancels := make([]context.CancelFunc, len(r.Roles))
	for i, role := range r.Roles {
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		cancels[i] = cancel
		go func() { results <- result{i, role.Run(rctx)} }()
	}
	names := make([]string, len(r.Roles))
	for i, role := range r.Roles {
		names[i] = role.Name
	}
	log.Info("started", "roles", names, "ops", opsAddr)
	if r.Started != nil {
		r.Started(opsAddr)
	}

	done := make([]bool, len(r.Roles))
	var firstErr error
	record := func(res result) {
		done[res.i] = true
		if err := roleErr(r.Roles[res.i].Name, res.err); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	select {
	case <-ctx.Done():
	case res := <-results:
		record(res)
		if firstErr != nil {
			log.Error("a role stopped unexpectedly", "role", r.Roles[res.i].Name, "err", firstErr)
		} else {
			log.Warn("a role stopped on its own", "role", r.Roles[res.i].Name)
		}
	}
	r.stopping.Store(true)
	for i := len(r.Roles) - 1; i >= 0; i-- {
		cancels[i]()
		if !done[i] {
			log.Info("stopping", "role", r.Roles[i].Name)
		}
		for !done[i] { // another role may return meanwhile
			record(<-results)
		}
	}
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}
	log.Info("stopped")
	return firstErr
}

func roleErr(name string, err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return named(name, err)
}

func (r *Runner) listenOps() (net.Listener, error) {
	if r.OpsListen == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", r.OpsListen)
	if err != nil {
		return nil, &ListenError{Addr: r.OpsListen, Err: err}
	}
	return ln, nil
}

// announce subscribes every role that has a Status to the presence
// subject.
func (r *Runner) announce() ([]*nats.Subscription, error) {
	if r.Conn == nil {
		return nil, nil
	}
	var subs []*nats.Subscription
	for _, role := range r.Roles {
		if role.Status == nil {
			continue
		}
		status := role.Status
		s, err := r.Conn.Subscribe(r.Prefix+PresenceSubject, func(m *nats.Msg) {
			b, _ := json.Marshal(status())
			_ = m.Respond(b)
		})
		if err != nil {
			for _, s := range subs {
				_ = s.Unsubscribe()
			}
			return nil, err
		}
		subs = append(subs, s)
	}
	return subs, nil
}

// check is one line of /readyz.
type check struct {
	name string
	ok   func() error
}

func (r *Runner) checks() []check {
	var cs []check
	if nc := r.Conn; nc != nil {
		cs = append(cs, check{"nats", func() error {
			if !nc.IsConnected() {
				return fmt.Errorf("NATS %s", strings.ToLower(nc.Status().String()))
			}
			return nil
		}})
	}
	for _, role := range r.Roles {
		if role.Ready != nil {
			cs = append(cs, check{role.Name, role.Ready})
		}
	}
	return cs
}

// opsHandler serves /metrics, /healthz and /readyz.
func (r *Runner) opsHandler() http.Handler {
	checks := r.checks()
	var mu sync.Mutex // a slow check must not run twice at once
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if r.stopping.Load() {
			http.Error(w, "stopping", http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		var b strings.Builder
		failed := false
		for _, c := range checks {
			if err := c.ok(); err != nil {
				failed = true
				fmt.Fprintf(&b, "%s: %v\n", c.name, err)
			} else {
				fmt.Fprintf(&b, "%s: ok\n", c.name)
			}
		}
		mu.Unlock()
		if failed {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprint(w, b.String())
	})
	return mux
}

// named prefixes err with the role's name, unless its message starts
// with it already (a package named after its role says so itself).
func named(role string, err error) error {
	if strings.HasPrefix(err.Error(), role+": ") {
		return err
	}
	return fmt.Errorf("%s: %w", role, err)
}
