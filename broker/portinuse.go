package broker

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrPortInUse is returned (wrapped) by StartEmbedded when its address is
// already taken; the message says by whom when that can be found out.
var ErrPortInUse = errors.New("address already in use")

// checkPortFree fails with ErrPortInUse when addr cannot be listened on
// because something else holds it.
func checkPortFree(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln.Close()
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		who := PortOwner(addr)
		if who != "" {
			who = " by " + who
		}
		return fmt.Errorf("broker: NATS port %s is in use%s: stop it or choose another --nats-listen: %w", addr, who, ErrPortInUse)
	}
	return fmt.Errorf("broker: listen %s: %w", addr, err)
}

// PortOwner describes who listens on addr (host:port), as far as it can
// tell: a NATS server's name and version from its INFO line, and the
// process (pid and command) from /proc when it runs as the same user.
// It returns "" when it finds nothing.
func PortOwner(addr string) string {
	var parts []string
	if info := natsInfo(addr); info != "" {
		parts = append(parts, info)
	}
	_, portStr, err := net.SplitHostPort(addr)
	if port, perr := strconv.Atoi(portStr); err == nil && perr == nil {
		if p := listenerProcess(port); p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, ", ")
}

// natsInfo reads the INFO line a NATS server sends on connect.
func natsInfo(addr string) string {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "INFO ") {
		return "a process that is not a NATS server"
	}
	var info struct {
		Name      string `json:"server_name"`
		Version   string `json:"version"`
		JetStream bool   `json:"jetstream"`
	}
	if json.Unmarshal([]byte(strings.TrimPrefix(line, "INFO ")), &info) != nil {
		return "a NATS server"
	}
	s := fmt.Sprintf("a NATS server (name %q, version %s", info.Name, info.Version)
	if !info.JetStream {
		s += ", JetStream off"
	}
	return s + ")"
}

// listenerProcess finds the process listening on TCP port from
// /proc/net/tcp{,6} and /proc/<pid>/fd (Linux; same user only).
func listenerProcess(port int) string {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 10 || fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); ok && err == nil && int(p) == port {
				inodes[fields[9]] = true
			}
		}
	}
	if len(inodes) == 0 {
		return ""
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range procs {
		target, err := os.Readlink(fd)
		if err != nil || !strings.HasPrefix(target, "socket:[") {
			continue
		}
		if inodes[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] {
			pid := strings.Split(fd, "/")[2]
			cmd, _ := os.ReadFile("/proc/" + pid + "/cmdline")
			c := strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))
			if len(c) > 120 {
				c = c[:120] + "..."
			}
			return fmt.Sprintf("pid %s (%s)", pid, c)
		}
	}
	return ""
}
