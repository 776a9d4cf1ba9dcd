package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSConfig describes a set of nats-server processes on 127.0.0.1.
type NATSConfig struct {
	// Bin is the nats-server executable (see BuildGo with
	// "github.com/nats-io/nats-server/v2").
	Bin string
	// Dir holds each node's config file and JetStream store.
	Dir string
	// Nodes: 1 for a single server, 3 (or more) for a cluster named
	// "wxhub" with routes between all nodes. 0 means 1.
	Nodes int
	// LogDir receives the nodes' logs; "" means Dir.
	LogDir string
}

// NATS is a running single server or cluster.
type NATS struct {
	cfg   NATSConfig
	ports []int // client ports
	procs []*Proc
}

// StartNATS writes the node configs and starts every node. It returns once
// every node accepts client connections; call WaitJetStream before
// provisioning streams on a cluster.
func StartNATS(ctx context.Context, cfg NATSConfig) (*NATS, error) {
	if cfg.Nodes <= 0 {
		cfg.Nodes = 1
	}
	if cfg.LogDir == "" {
		cfg.LogDir = cfg.Dir
	}
	ports, err := FreePorts(2 * cfg.Nodes)
	if err != nil {
		return nil, err
	}
	n := &NATS{cfg: cfg, ports: ports[:cfg.Nodes]}
	cluster := ports[cfg.Nodes:]
	for i := range cfg.Nodes {
		conf := filepath.Join(cfg.Dir, fmt.Sprintf("n%d.conf", i))
		if err := os.WriteFile(conf, []byte(nodeConfig(cfg, i, n.ports[i], cluster)), 0o644); err != nil {
			n.Stop()
			return nil, fmt.Errorf("harness: nats config: %w", err)
		}
		p, err := StartProc(ProcConfig{Name: fmt.Sprintf("nats-%d", i), Path: cfg.Bin, Args: []string{"-c", conf}, LogDir: cfg.LogDir})
		if err != nil {
			n.Stop()
			return nil, err
		}
		n.procs = append(n.procs, p)
	}
	for i := range n.procs {
		if err := n.waitNode(ctx, i); err != nil {
			n.Stop()
			return nil, err
		}
	}
	return n, nil
}

func nodeConfig(cfg NATSConfig, i, port int, cluster []int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: n%d\nlisten: 127.0.0.1:%d\n", i, port)
	fmt.Fprintf(&b, "max_payload: 1MB\n")
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n}\n", filepath.Join(cfg.Dir, fmt.Sprintf("store-n%d", i)))
	if cfg.Nodes > 1 {
		fmt.Fprintf(&b, "cluster {\n  name: wxhub\n  listen: 127.0.0.1:%d\n  routes: [\n", cluster[i])
		for j, p := range cluster {
			if j != i {
				fmt.Fprintf(&b, "    nats-route://127.0.0.1:%d\n", p)
			}
		}
		b.WriteString("  ]\n}\n")
	}
	return b.String()
}

// waitNode waits until node i accepts a client connection.
func (n *NATS) waitNode(ctx context.Context, i int) error {
	url := n.NodeURL(i)
	err := WaitFor(ctx, 20*time.Second, 50*time.Millisecond, func() bool {
		if n.procs[i].Exited() {
			return true
		}
		nc, err := nats.Connect(url, nats.Timeout(time.Second))
		if err != nil {
			return false
		}
		nc.Close()
		return true
	})
	if n.procs[i].Exited() {
		return fmt.Errorf("harness: nats node %d exited: %v\n%s", i, n.procs[i].Err(), n.procs[i].LogTail(2000))
	}
	if err != nil {
		return fmt.Errorf("harness: nats node %d: %w", i, err)
	}
	return nil
}

// URL returns the client URLs of every node, comma-separated.
func (n *NATS) URL() string {
	urls := make([]string, len(n.ports))
	for i := range n.ports {
		urls[i] = n.NodeURL(i)
	}
	return strings.Join(urls, ",")
}

// NodeURL returns node i's client URL.
func (n *NATS) NodeURL(i int) string { return fmt.Sprintf("nats://127.0.0.1:%d", n.ports[i]) }

// Nodes returns how many nodes there are.
func (n *NATS) Nodes() int { return len(n.procs) }

// PIDs returns the process ids of the running nodes.
func (n *NATS) PIDs() []int {
	var pids []int
	for _, p := range n.procs {
		if !p.Exited() {
			pids = append(pids, p.PID())
		}
	}
	return pids
}

// Kill SIGKILLs node i.
func (n *NATS) Kill(i int) error { return n.procs[i].Kill() }

// Restart starts node i again on the same port and store directory, and
// waits until it accepts connections.
func (n *NATS) Restart(ctx context.Context, i int) error {
	p, err := n.procs[i].Restart()
	if err != nil {
		return err
	}
	n.procs[i] = p
	return n.waitNode(ctx, i)
}

// Stop terminates every node (SIGTERM, then SIGKILL after 10 s).
func (n *NATS) Stop() {
	for _, p := range n.procs {
		_ = p.Stop(10 * time.Second)
	}
}

// WaitJetStream waits until JetStream answers account info through url
// (on a cluster: once the meta leader is elected).
func WaitJetStream(ctx context.Context, url string, timeout time.Duration) error {
	nc, err := nats.Connect(url, nats.Timeout(2*time.Second))
	if err != nil {
		return fmt.Errorf("harness: connect %s: %w", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var last error
	err = WaitFor(ctx, timeout, 100*time.Millisecond, func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, last = js.AccountInfo(cctx)
		return last == nil
	})
	if err != nil {
		return fmt.Errorf("harness: JetStream not ready: %w", errors.Join(err, last))
	}
	return nil
}
