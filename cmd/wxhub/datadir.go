//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockDataDir takes an exclusive lock (flock) on <dir>/wxhub.lock for the
// life of the process, so that a second `wxhub run` on the same --data-dir
// refuses to start instead of running a second NATS server on the same
// JetStream files. The lock file records the holder's pid for the message;
// the kernel drops the lock when the process dies, also on SIGKILL.
func lockDataDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("data-dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, "wxhub.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("data-dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := "another wxhub run"
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				who = fmt.Sprintf("another wxhub run (pid %d)", pid)
			}
			return nil, fmt.Errorf("data-dir %s is in use by %s: stop it, or give this one another --data-dir", dir, who)
		}
		return nil, fmt.Errorf("data-dir %s: lock: %w", dir, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}
