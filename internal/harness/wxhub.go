package harness

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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
	// Replicas for streams and buckets; 0 means 1.
	Replicas int
	// Extra arguments, e.g. "--concurrency", "64".
	Args   []string
	LogDir string
}

// StartRole starts a wxhub role with ops HTTP off and text logs at warn
// level (the harness reads figures from NATS and the simulator, not logs).
func StartRole(cfg RoleConfig) (*Proc, error) {
	args := []string{cfg.Role, "--nats-url", cfg.NATSURL, "--wechat-base-url", cfg.WeChatBaseURL,
		"--http-listen", "", "--log-level", "warn"}
	if cfg.Replicas > 0 {
		args = append(args, "--replicas", strconv.Itoa(cfg.Replicas))
	}
	var env []string
	for _, a := range cfg.Apps {
		args = append(args, "--app", "appid="+a.AppID)
		env = append(env, "WXHUB_SECRET_"+strings.ToUpper(a.AppID)+"="+a.Secret)
	}
	args = append(args, cfg.Args...)
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
