package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ProcConfig describes a child process. Path and Name are required.
type ProcConfig struct {
	Name string   // short name for logs and the log file (e.g. "worker-1")
	Path string   // executable
	Args []string // arguments after the executable
	// Env is added to the harness's own environment.
	Env []string
	// LogDir receives <Name>.log with the child's stdout and stderr;
	// "" means os.TempDir().
	LogDir string
}

// Proc is a running (or finished) child process. Its methods are safe for
// concurrent use.
type Proc struct {
	Name    string
	LogPath string

	cfg  ProcConfig
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	mu   sync.Mutex
	err  error
}

// StartProc starts the child. It dies with the harness (Pdeathsig SIGKILL),
// so an aborted run leaves no strays behind.
func StartProc(cfg ProcConfig) (*Proc, error) {
	if cfg.Name == "" || cfg.Path == "" {
		return nil, errors.New("harness: ProcConfig needs Name and Path")
	}
	if cfg.LogDir == "" {
		cfg.LogDir = os.TempDir()
	}
	logPath := filepath.Join(cfg.LogDir, cfg.Name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("harness: %s: log file: %w", cfg.Name, err)
	}
	cmd := exec.Command(cfg.Path, cfg.Args...)
	cmd.Env = append(os.Environ(), cfg.Env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("harness: start %s: %w", cfg.Name, err)
	}
	p := &Proc{Name: cfg.Name, LogPath: logPath, cfg: cfg, cmd: cmd, log: lf, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

// PID returns the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err returns the exit error once the process has exited (nil for exit 0).
func (p *Proc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Kill sends SIGKILL and waits (up to 10 s) until the process is gone.
func (p *Proc) Kill() error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("harness: %s (pid %d) still alive 10s after SIGKILL", p.Name, p.PID())
	}
}

// Stop sends SIGTERM and waits up to grace for a clean exit, then kills.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		return p.Kill()
	}
}

// Restart starts the same command again as a new process (after the old
// one has exited), appending to the same log file.
func (p *Proc) Restart() (*Proc, error) {
	if !p.Exited() {
		return nil, fmt.Errorf("harness: %s: restart while running", p.Name)
	}
	return StartProc(p.cfg)
}

// LogTail returns the last n bytes of the process's log, for error reports.
func (p *Proc) LogTail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// ReadCPU returns the CPU time (user + system) the process has used.
func ReadCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("harness: cpu of %d: %w", pid, err)
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/<pid>/stat line. The command name (field 2) may contain spaces and
// parentheses, so fields are counted after its closing parenthesis.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("harness: /proc stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14 → f[11], stime f[12].
	if len(f) < 13 {
		return 0, errors.New("harness: /proc stat: too few fields")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("harness: /proc stat: utime/stime not numbers")
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// ReadRSS returns the resident set size of the process in bytes.
func ReadRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("harness: rss of %d: %w", pid, err)
	}
	return parseStatusRSS(b)
}

// parseStatusRSS reads the VmRSS line ("VmRSS:   12345 kB").
func parseStatusRSS(b []byte) (int64, error) {
	for _, line := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("harness: VmRSS line %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("harness: VmRSS line %q: %w", line, err)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("harness: no VmRSS line")
}

// CPUMeter measures the CPU used by a set of processes between Start and
// Stop, as a share of one core (1.0 = one core fully busy).
type CPUMeter struct {
	pids  []int
	start []time.Duration
	t0    time.Time
}

// StartCPU starts measuring pids (exited processes count as 0).
func StartCPU(pids ...int) *CPUMeter {
	m := &CPUMeter{pids: pids, start: make([]time.Duration, len(pids)), t0: time.Now()}
	for i, pid := range pids {
		m.start[i], _ = ReadCPU(pid)
	}
	return m
}

// Cores returns the cores used since StartCPU (sum over the processes).
func (m *CPUMeter) Cores() float64 {
	wall := time.Since(m.t0)
	if wall <= 0 {
		return 0
	}
	var used time.Duration
	for i, pid := range m.pids {
		if now, err := ReadCPU(pid); err == nil && now >= m.start[i] {
			used += now - m.start[i]
		}
	}
	return used.Seconds() / wall.Seconds()
}

// FreePorts returns n distinct free TCP ports on 127.0.0.1. The ports are
// released before returning, so another process could take one first; the
// caller starts its servers right away.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("harness: free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// BuildGo runs `go build -o out pkg` in dir (the module root).
func BuildGo(ctx context.Context, dir, out, pkg string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("harness: go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// WaitFor calls cond every interval until it returns true or ctx (or
// timeout) ends. It is for conditions no event announces (a port that
// starts answering, a consumer count reached).
func WaitFor(ctx context.Context, timeout, interval time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("harness: condition not met within %v: %w", timeout, ctx.Err())
		case <-t.C:
		}
	}
}
