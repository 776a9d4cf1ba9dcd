package harness

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// Main runs a harness command and exits with its status: ctx is cancelled
// on SIGINT or SIGTERM, slog's default logger shows warnings only, and an
// error is printed after the command's name (status 1 unless run chose
// another).
func Main(name string, run func(ctx context.Context) (int, error)) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	code, err := run(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		if code == 0 {
			code = 1
		}
	}
	stop()
	os.Exit(code)
}

// WorkDir makes a command's temporary folder with the subfolders logs,
// bin and nats. cleanup removes it, unless keep is set: then its path is
// printed and it stays for a look at the logs.
func WorkDir(name string, keep bool) (dir string, cleanup func(), err error) {
	dir, err = os.MkdirTemp("", name+"-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	if keep {
		fmt.Printf("%s: temporary folder %s (kept)\n", name, dir)
		cleanup = func() {}
	}
	for _, d := range []string{"logs", "bin", "nats"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			cleanup()
			return "", nil, err
		}
	}
	return dir, cleanup, nil
}

// Finish writes a command's report as JSON to out, says so, and turns
// failed hard assertions into exit status 1.
func Finish(name, out string, report any, failures []string, start time.Time) (int, error) {
	if err := WriteJSON(out, report); err != nil {
		return 1, err
	}
	fmt.Printf("\n%s: results written to %s (%s)\n", name, out, time.Since(start).Round(time.Second))
	if len(failures) > 0 {
		return 1, fmt.Errorf("%d hard assertion(s) failed", len(failures))
	}
	return 0, nil
}
