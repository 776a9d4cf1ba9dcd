// Package brokertest starts a real embedded nats-server with JetStream for
// tests, provisioned with wxhub's streams and buckets.
package brokertest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// Env is a running test server (or cluster) and a client connection to
// it.
type Env struct {
	// Server is the embedded server of Start; nil for StartReplicated.
	Server *broker.Embedded
	// URL is the server's client URL; for StartReplicated every
	// server's, comma-separated (a connection fails over).
	URL string
	NC  *nats.Conn
	JS  jetstream.JetStream
	// Replicas is what the streams and buckets were provisioned with:
	// 1, or 3 for StartReplicated (provision with it again).
	Replicas int

	storeDir string
}

// Start starts an embedded server storing under t.TempDir(), provisions the
// default topology and registers cleanup.
func Start(tb testing.TB) *Env {
	tb.Helper()
	dir := tb.TempDir()
	srv, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: dir})
	if err != nil {
		tb.Fatalf("start nats: %v", err)
	}
	env := &Env{Server: srv, URL: srv.ClientURL(), Replicas: 1, storeDir: dir}
	tb.Cleanup(func() { env.Server.Shutdown() }) // the one Restart started, if any
	env.NC = env.Conn(tb)
	env.JS, err = jetstream.New(env.NC)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := broker.Provision(ctx, broker.LocalJetStreams(env.JS, grants.Provision), broker.Topology{}); err != nil {
		tb.Fatal(err)
	}
	return env
}

// StartReplicated starts a JetStream cluster of three servers
// (StartCluster) and provisions it with broker.Topology{Replicas: 3}, as
// production runs it: every stream and bucket has a leader and two
// followers, and a KV read (a direct get) is answered by the replica on
// the server the connection is on, which may not have applied the last
// writes yet. NC is connected to one of the three (at random). Stop and
// Restart are for Start's server only.
func StartReplicated(tb testing.TB) *Env {
	tb.Helper()
	env := &Env{URL: strings.Join(StartCluster(tb, 3), ","), Replicas: 3}
	env.NC = env.Conn(tb)
	var err error
	env.JS, err = jetstream.New(env.NC)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := broker.Provision(ctx, broker.LocalJetStreams(env.JS, grants.Provision), broker.Topology{Replicas: env.Replicas}); err != nil {
		tb.Fatal(err)
	}
	return env
}

// OneAndThree runs f as two subtests: on one server (Start, "one
// server"), as most tests run, and on a cluster of three
// (StartReplicated, "replicated over three"), as production runs, for a
// guarantee that must hold on both. f may call t.Parallel.
func OneAndThree(t *testing.T, f func(t *testing.T, env *Env)) {
	t.Helper()
	for _, s := range []struct {
		name  string
		start func(testing.TB) *Env
	}{
		{"one server", Start},
		{"replicated over three", StartReplicated},
	} {
		t.Run(s.name, func(t *testing.T) { f(t, s.start(t)) })
	}
}

// Stop shuts the server down, keeping its JetStream store; the
// connections try to reconnect (publishes go to their reconnect buffers)
// until Restart.
func (e *Env) Stop() { e.Server.Shutdown() }

// Restart starts the server again on the same port with the same store
// after Stop; the connections reconnect. Call it from the test's
// goroutine (it replaces Server).
func (e *Env) Restart(tb testing.TB) {
	tb.Helper()
	u, err := url.Parse(e.URL)
	if err != nil {
		tb.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := broker.StartEmbedded(broker.EmbeddedConfig{Host: u.Hostname(), Port: port, StoreDir: e.storeDir})
	if err != nil {
		tb.Fatalf("restart nats: %v", err)
	}
	e.Server = srv
}

// Conn opens another connection, closed at cleanup.
func (e *Env) Conn(tb testing.TB) *nats.Conn {
	tb.Helper()
	nc, err := broker.Connect(broker.ConnConfig{URL: e.URL, Name: tb.Name()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// StartConfig starts an in-process nats-server from conf, the text of a
// nats-server configuration file (accounts, users, imports and exports:
// e.g. a slice of wxhub's accounts layout), with JetStream storing under
// tb.TempDir(), nothing provisioned. Each edit may change the options
// before the server starts. It returns the client URL.
func StartConfig(tb testing.TB, conf string, edit ...func(*server.Options)) string {
	tb.Helper()
	dir := tb.TempDir()
	file := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	o, err := server.ProcessConfigFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	o.JetStream, o.StoreDir, o.NoLog, o.NoSigs = true, filepath.Join(dir, "js"), true, true
	for _, e := range edit {
		e(o)
	}
	return startServer(tb, o).ClientURL()
}

// startServer starts an in-process nats-server with options o, shut down
// at cleanup, and waits until it takes connections.
func startServer(tb testing.TB, o *server.Options) *server.Server {
	tb.Helper()
	s, err := server.NewServer(o)
	if err != nil {
		tb.Fatal(err)
	}
	go s.Start()
	tb.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats-server not ready")
	}
	return s
}

// StartCluster starts a JetStream cluster of n in-process nats-servers
// routed to each other on loopback, each storing under tb.TempDir(),
// nothing provisioned, and waits until the cluster has a meta leader. It
// returns the servers' client URLs (a connection given all of them
// fails over). A stream or bucket made with Replicas: n answers as a
// production cluster does (e.g. a lost compare-and-set on a replicated
// stream is JetStream error 10164, not 10071).
func StartCluster(tb testing.TB, n int) []string {
	tb.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = freePort(tb)
	}
	servers := make([]*server.Server, n)
	urls := make([]string, n)
	for i := range servers {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			JetStream:  true,
			StoreDir:   filepath.Join(tb.TempDir(), "js"),
			NoLog:      true,
			NoSigs:     true,
			Cluster:    server.ClusterOpts{Name: "wxhub-test", Host: "127.0.0.1", Port: ports[i]},
		}
		for j, p := range ports {
			if j != i {
				o.Routes = append(o.Routes, &url.URL{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(p))})
			}
		}
		s := startServer(tb, o)
		servers[i], urls[i] = s, s.ClientURL()
	}
	// The servers announce no such moment: their own state is polled.
	wxhubtest.Eventually(tb, 30*time.Second, fmt.Sprintf("a meta leader of the cluster of %d that sees every server with JetStream", n),
		func() bool { return ready(servers) })
	return urls
}

// ready reports whether a meta leader sees every server as a JetStream
// peer with current stats: before that a replicated stream may find "no
// suitable peers for placement".
func ready(servers []*server.Server) bool {
	for _, s := range servers {
		if s.JetStreamIsLeader() {
			return len(s.JetStreamClusterPeers()) == len(servers)
		}
	}
	return false
}

// freePort reserves a loopback port for a cluster listener (the routes
// of every server name the others' ports before they start).
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
