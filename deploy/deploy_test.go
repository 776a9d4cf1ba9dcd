package deploy_test

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"

	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// The demo passwords whose bcrypt hashes are in nats/accounts.inc.
func demoPassword(user string) string { return user + "-demo-password" }

// natsConfigs returns deploy/nats/*.conf, sorted.
func natsConfigs(t *testing.T) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("nats", "*.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 3 {
		t.Fatalf("deploy/nats: %d *.conf files, want 3 (one per node): %v", len(paths), paths)
	}
	slices.Sort(paths)
	return paths
}

// TestNATSConfigs loads every node's file with nats-server's own loader and
// checks the cluster wiring: JetStream on, cluster wxhub, routes to exactly
// the other two nodes' cluster ports, distinct names, ports and stores.
func TestNATSConfigs(t *testing.T) {
	paths := natsConfigs(t)
	opts := make([]*server.Options, len(paths))
	for i, p := range paths {
		o, err := server.ProcessConfigFile(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		opts[i] = o
	}
	clusterAddr := func(o *server.Options) string {
		return net.JoinHostPort(o.Cluster.Host, fmt.Sprint(o.Cluster.Port))
	}
	seen := map[string]string{}
	unique := func(what, v, file string) {
		t.Helper()
		if prev, dup := seen[what+"="+v]; dup {
			t.Errorf("%s: %s %s also used by %s", file, what, v, prev)
		}
		seen[what+"="+v] = file
	}
	for i, o := range opts {
		p := paths[i]
		t.Run(filepath.Base(p), func(t *testing.T) {
			checks := []struct {
				name string
				ok   bool
				got  any
			}{
				{"jetstream on", o.JetStream, o.JetStream},
				{"cluster name wxhub", o.Cluster.Name == "wxhub", o.Cluster.Name},
				{"2 routes", len(o.Routes) == 2, o.Routes},
				{"server_name set", o.ServerName != "", o.ServerName},
				{"store_dir set", o.StoreDir != "", o.StoreDir},
				{"client port 4222..4224", o.Port >= 4222 && o.Port <= 4224, o.Port},
				{"cluster port 6222..6224", o.Cluster.Port >= 6222 && o.Cluster.Port <= 6224, o.Cluster.Port},
				{"monitoring port 8222..8224", o.HTTPPort >= 8222 && o.HTTPPort <= 8224, o.HTTPPort},
				{"routes authenticate", o.Cluster.Username != "" && o.Cluster.Password != "", o.Cluster.Username},
				{"system account", o.SystemAccount == "SYS", o.SystemAccount},
				{"lame duck for rolling restarts", o.LameDuckDuration >= 10*time.Second, o.LameDuckDuration},
			}
			for _, c := range checks {
				if !c.ok {
					t.Errorf("%s: got %v", c.name, c.got)
				}
			}
			var want []string
			for j, other := range opts {
				if j != i {
					want = append(want, clusterAddr(other))
				}
			}
			var got []string
			for _, r := range o.Routes {
				got = append(got, r.Host)
				if r.User.Username() != o.Cluster.Username {
					t.Errorf("route %s: user %q, want the cluster's %q", r.Host, r.User.Username(), o.Cluster.Username)
				}
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("routes %v, want the other nodes' cluster addresses %v", got, want)
			}
		})
		unique("server_name", o.ServerName, p)
		unique("store_dir", o.StoreDir, p)
		unique("port", fmt.Sprint(o.Port), p)
		unique("cluster port", fmt.Sprint(o.Cluster.Port), p)
		unique("http port", fmt.Sprint(o.HTTPPort), p)
	}
}

// TestNATSPasswords checks that every password in the files is a bcrypt
// hash (never a clear password on disk) of the documented demo password,
// and that the routes' clear password matches the cluster's hash.
func TestNATSPasswords(t *testing.T) {
	t.Parallel()
	o, err := server.ProcessConfigFile(natsConfigs(t)[0])
	if err != nil {
		t.Fatal(err)
	}
	routePass, _ := o.Routes[0].User.Password()
	cases := map[string][2]string{"route (cluster)": {o.Cluster.Password, routePass}}
	for _, u := range o.Users {
		cases[u.Username] = [2]string{u.Password, demoPassword(u.Username)}
	}
	for _, want := range []string{"holder", "worker", "gateway", "client", "admin", "sys"} {
		if _, ok := cases[want]; !ok {
			t.Errorf("user %s missing", want)
		}
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if !strings.HasPrefix(c[0], "$2a$") {
				t.Fatalf("password is not a bcrypt hash")
			}
			if err := bcrypt.CompareHashAndPassword([]byte(c[0]), []byte(c[1])); err != nil {
				t.Fatalf("hash does not match the demo password: %v", err)
			}
		})
	}
}

// freePorts reserves n loopback ports and releases them for the servers.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// startCluster runs the three nodes in-process from deploy/nats/*.conf,
// with ports moved to free loopback ports and stores under t.TempDir().
// Everything else (accounts, users, permissions, route credentials) is
// exactly as in the files. It returns once JetStream has a meta leader.
func startCluster(t *testing.T) []*server.Server {
	t.Helper()
	paths := natsConfigs(t)
	ports := freePorts(t, len(paths))
	dir := t.TempDir()
	opts := make([]*server.Options, len(paths))
	for i, p := range paths {
		o, err := server.ProcessConfigFile(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		routeUser := o.Routes[0].User
		// bcrypt at cost 11 takes over a second per login under -race; the
		// hashes are checked against the demo passwords in
		// TestNATSPasswords, so log in with the plain ones here.
		for _, u := range o.Users {
			u.Password = demoPassword(u.Username)
		}
		o.Cluster.Password, _ = routeUser.Password()
		o.Host, o.Port = "127.0.0.1", -1
		o.HTTPPort = 0
		o.Cluster.Host, o.Cluster.Port = "127.0.0.1", ports[i]
		o.StoreDir = filepath.Join(dir, o.ServerName)
		o.NoSigs, o.NoLog = true, true
		o.Routes = nil
		for j := range paths {
			if j != i {
				o.Routes = append(o.Routes, &url.URL{Scheme: "nats-route", User: routeUser, Host: fmt.Sprintf("127.0.0.1:%d", ports[j])})
			}
		}
		opts[i] = o
	}
	t0 := time.Now()
	servers := make([]*server.Server, len(opts))
	for i, o := range opts {
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatalf("%s: %v", paths[i], err)
		}
		servers[i] = s
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		go s.Start()
	}
	for i, s := range servers {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("%s: not ready for connections", paths[i])
		}
	}
	// No event announces a JetStream meta leader: poll with a deadline.
	// (Only the leader reports the peers.)
	wxhubtest.Eventually(t, 20*time.Second, "JetStream meta leader with 3 current peers", func() bool {
		leaders := 0
		for _, s := range servers {
			if !s.JetStreamIsCurrent() {
				return false
			}
			if s.JetStreamIsLeader() {
				leaders++
				if len(s.JetStreamClusterPeers()) != len(servers) {
					return false
				}
			}
		}
		return leaders == 1
	})
	t.Logf("cluster of %d up after %v", len(servers), time.Since(t0))
	return servers
}
