package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
)

// App is a WeChat app the roles serve. The secret reaches children only
// through the environment (WXHUB_SECRET_<APPID>), never their arguments.
type App struct {
	AppID  string
	Secret string
}

// RoleConfig starts one wxhub role as a child process.
type RoleConfig struct {
	Bin     string // the wxhub executable
	Role    string // "worker" or "holder"
	Name    string // process name, e.g. "worker-2"
	NATSURL string
	Apps    []App
	// WeChatBaseURL is the simulator's URL (or a SimServer.WorkerURL).
	WeChatBaseURL string
	// Extra arguments, e.g. "--concurrency", "64".
	Args []string
	// Env is added to the child's environment (e.g. WXHUB_TEST_FAULT).
	Env    []string
	LogDir string
}

// StartRole starts a wxhub role with ops HTTP off and text logs at warn
// level (the harness reads figures from NATS and the simulator, not logs).
func StartRole(cfg RoleConfig) (*Proc, error) {
	args := []string{cfg.Role, "--nats-url", cfg.NATSURL, "--wechat-base-url", cfg.WeChatBaseURL,
		"--http-listen", "", "--log-level", "warn"}
	var env []string
	for _, a := range cfg.Apps {
		args = append(args, "--app", "appid="+a.AppID)
		env = append(env, "WXHUB_SECRET_"+strings.ToUpper(a.AppID)+"="+a.Secret)
	}
	args = append(args, cfg.Args...)
	env = append(env, cfg.Env...)
	return StartProc(ProcConfig{Name: cfg.Name, Path: cfg.Bin, Args: args, Env: env, LogDir: cfg.LogDir})
}

// WaitPulls waits until the durable consumer has at least n waiting pull
// requests (every idle worker slot is one), i.e. the workers are ready to
// take n jobs at once. procs are checked too: one that exits fails the
// wait at once.
func WaitPulls(ctx context.Context, js jetstream.JetStream, consumer string, n int, timeout time.Duration, procs ...*Proc) error {
	var got int
	var dead *Proc
	err := WaitFor(ctx, timeout, 50*time.Millisecond, func() bool {
		for _, p := range procs {
			if p.Exited() {
				dead = p
				return true
			}
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		c, err := js.Consumer(cctx, "WX_JOBS", consumer)
		if err != nil {
			return false
		}
		info, err := c.Info(cctx)
		if err != nil {
			return false
		}
		got = info.NumWaiting
		return got >= n
	})
	if dead != nil {
		return fmt.Errorf("harness: %s exited: %v\n%s", dead.Name, dead.Err(), dead.LogTail(3000))
	}
	if err != nil {
		return fmt.Errorf("harness: consumer %s has %d waiting pulls, want %d: %w", consumer, got, n, err)
	}
	return nil
}

// Binaries are the executables a run needs.
type Binaries struct {
	WxHub      string
	NATSServer string
}

// BuildBinaries builds wxhub (./cmd/wxhub) and nats-server (from the module
// cache: github.com/nats-io/nats-server/v2) into dir, from the module root
// root, both at once. A non-empty prebuilt path is used as is.
func BuildBinaries(ctx context.Context, root, dir string, prebuilt Binaries) (Binaries, error) {
	out := prebuilt
	errs := make(chan error, 2)
	build := func(dst *string, name, pkg string) {
		if *dst != "" {
			errs <- nil
			return
		}
		*dst = dir + "/" + name
		errs <- BuildGo(ctx, root, *dst, pkg)
	}
	go build(&out.WxHub, "wxhub", "./cmd/wxhub")
	go build(&out.NATSServer, "nats-server", "github.com/nats-io/nats-server/v2")
	var first error
	for range 2 {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return out, first
}

// WaitToken waits until wx_tokens holds a record for appid with a version
// above after, and returns it with the time the harness saw it. It
// watches the key (no polling).
func WaitToken(ctx context.Context, js jetstream.JetStream, appid string, after uint64, timeout time.Duration) (events.TokenRecord, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	kv, err := js.KeyValue(ctx, events.BucketTokens)
	if err != nil {
		return events.TokenRecord{}, time.Time{}, fmt.Errorf("harness: %s: %w", events.BucketTokens, err)
	}
	w, err := kv.Watch(ctx, appid)
	if err != nil {
		return events.TokenRecord{}, time.Time{}, fmt.Errorf("harness: watch %s: %w", appid, err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return events.TokenRecord{}, time.Time{}, fmt.Errorf("harness: no token version > %d for %s within %v", after, appid, timeout)
		case e, ok := <-w.Updates():
			if !ok {
				return events.TokenRecord{}, time.Time{}, errors.New("harness: token watch closed")
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var rec events.TokenRecord
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				continue
			}
			if rec.Version > after {
				return rec, time.Now(), nil
			}
		}
	}
}
