package deploy_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/events"
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
	for _, want := range []string{"holder", "worker", "client", "admin", "sys"} {
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
	waitFor(t, 20*time.Second, "JetStream meta leader with 3 current peers", func() bool {
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

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

// user is a NATS connection as one of the configured users, with its
// asynchronous errors (permission violations) on a channel.
type user struct {
	name string
	nc   *nats.Conn
	js   jetstream.JetStream
	errs chan error
}

func connectAs(t *testing.T, s *server.Server, name string) *user {
	t.Helper()
	u := &user{name: name, errs: make(chan error, 64)}
	nc, err := nats.Connect(s.ClientURL(),
		nats.Name("deploy-test-"+name),
		nats.UserInfo(name, demoPassword(name)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case u.errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	u.nc = nc
	if u.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return u
}

// expectDenied runs op and waits for the server's permission violation
// naming subject, then cancels op. (A denied JetStream request just gets no
// reply, so the violation is the event to wait for.)
func (u *user) expectDenied(t *testing.T, subject string, op func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opDone := make(chan error, 1)
	go func() { opDone <- op(ctx) }()
	defer func() { cancel(); <-opDone }()
	for {
		select {
		case err := <-u.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return
			}
			t.Logf("%s: unrelated async error: %v", u.name, err)
		case <-ctx.Done():
			t.Fatalf("%s: no permission violation for %s", u.name, subject)
		}
	}
}

// TestNATSClusterPermissions starts the cluster from the shipped files and
// checks, as each configured user, what wxhub needs and what it forbids.
func TestNATSClusterPermissions(t *testing.T) {
	servers := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Each user on a different node: the permissions hold cluster-wide.
	holder := connectAs(t, servers[0], "holder")
	worker := connectAs(t, servers[1], "worker")
	client := connectAs(t, servers[2], "client")

	// holder and worker both provision at start (replicas 3 on a cluster).
	for _, u := range []*user{holder, worker} {
		if err := broker.Provision(ctx, u.js, broker.Topology{Replicas: 3}); err != nil {
			t.Fatalf("provision as %s: %v", u.name, err)
		}
	}
	info, err := holder.js.Stream(ctx, events.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo(); got.Config.Replicas != 3 || got.Cluster == nil || len(got.Cluster.Replicas) != 2 {
		t.Fatalf("WX_JOBS: replicas %d, cluster %+v; want 3 replicas (leader + 2)", got.Config.Replicas, got.Cluster)
	}

	const appid = "wxdeploytest"
	const token = "GLOBAL-TOKEN-deploy-test-secret"
	holderTokens, err := holder.js.KeyValue(ctx, events.BucketTokens)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holderTokens.Put(ctx, appid, []byte(token)); err != nil {
		t.Fatalf("holder: put wx_tokens: %v", err)
	}
	for _, b := range []string{events.BucketLeases, events.BucketQuota} {
		kv, err := holder.js.KeyValue(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, appid, []byte("1")); err != nil {
			t.Fatalf("holder: put %s: %v", b, err)
		}
	}

	t.Run("worker reads the token", func(t *testing.T) {
		kv, err := worker.js.KeyValue(ctx, events.BucketTokens)
		if err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, appid)
		if err != nil || string(e.Value()) != token {
			t.Fatalf("worker: get wx_tokens: %v", err)
		}
		w, err := kv.WatchAll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		if e := <-w.Updates(); e == nil || string(e.Value()) != token {
			t.Fatalf("worker: watch wx_tokens gave %v", e)
		}
	})
	t.Run("holder and worker answer wxhub status", func(t *testing.T) {
		admin := connectAs(t, servers[0], "admin")
		for _, u := range []*user{holder, worker} {
			sub, err := u.nc.Subscribe("wxhub.status", func(m *nats.Msg) { m.Respond([]byte(u.name)) })
			if err != nil {
				t.Fatal(err)
			}
			if err := u.nc.FlushWithContext(ctx); err != nil {
				t.Fatal(err)
			}
			reply, err := admin.nc.RequestWithContext(ctx, "wxhub.status", nil)
			sub.Unsubscribe()
			if err != nil || string(reply.Data) != u.name {
				t.Fatalf("%s: wxhub status request: %v", u.name, err)
			}
		}
	})
	t.Run("worker writes wx_oauth", func(t *testing.T) {
		kv, err := worker.js.KeyValue(ctx, events.BucketOAuth)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, "abc", []byte("{}")); err != nil {
			t.Fatalf("worker: put wx_oauth: %v", err)
		}
	})

	denied := []struct {
		name    string
		u       *user
		subject string
		op      func(ctx context.Context) error
	}{
		{"worker cannot write the token", worker, "$KV.wx_tokens." + appid, func(ctx context.Context) error {
			kv, err := worker.js.KeyValue(ctx, events.BucketTokens)
			if err != nil {
				return err
			}
			_, err = kv.Put(ctx, appid, []byte("forged"))
			return err
		}},
		{"worker cannot take a lease", worker, "$KV.wx_leases." + appid, func(ctx context.Context) error {
			_, err := worker.js.Publish(ctx, "$KV.wx_leases."+appid, []byte("worker"))
			return err
		}},
		{"worker cannot delete a stream", worker, "$JS.API.STREAM.DELETE." + events.StreamJobs, func(ctx context.Context) error {
			return worker.js.DeleteStream(ctx, events.StreamJobs)
		}},
		{"worker cannot delete the token's message", worker, "$JS.API.STREAM.MSG.DELETE.KV_wx_tokens", func(ctx context.Context) error {
			s, err := worker.js.Stream(ctx, "KV_"+events.BucketTokens)
			if err != nil {
				return err
			}
			return s.DeleteMsg(ctx, 1)
		}},
		{"worker cannot publish token.refreshed", worker, "token.refreshed", func(ctx context.Context) error {
			_, err := worker.js.Publish(ctx, "token.refreshed", []byte("{}"))
			return err
		}},
		{"holder cannot publish results", holder, "user.profile", func(ctx context.Context) error {
			_, err := holder.js.Publish(ctx, "user.profile", []byte("{}"))
			return err
		}},
		{"client cannot open wx_tokens", client, "$JS.API.STREAM.INFO.KV_wx_tokens", func(ctx context.Context) error {
			_, err := client.js.KeyValue(ctx, events.BucketTokens)
			return err
		}},
		{"client cannot direct-get the token", client, "$JS.API.DIRECT.GET.KV_wx_tokens.$KV.wx_tokens." + appid, func(ctx context.Context) error {
			_, err := client.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.KV_wx_tokens.$KV.wx_tokens."+appid, nil)
			return err
		}},
		{"client cannot subscribe to the token bucket", client, "$KV.wx_tokens.>", func(ctx context.Context) error {
			_, err := client.nc.SubscribeSync("$KV.wx_tokens.>")
			if err == nil {
				err = client.nc.FlushWithContext(ctx)
			}
			if err == nil {
				<-ctx.Done() // the violation arrives asynchronously
				err = ctx.Err()
			}
			return err
		}},
		{"client cannot report tokens invalid", client, "token.invalidated", func(ctx context.Context) error {
			return client.nc.Publish("token.invalidated", []byte("{}"))
		}},
	}
	for _, tc := range denied {
		t.Run(tc.name, func(t *testing.T) {
			tc.u.expectDenied(t, tc.subject, tc.op)
		})
	}

	t.Run("client publishes a job and gets its result", func(t *testing.T) {
		results, err := client.nc.SubscribeSync(events.SubjectUserProfile)
		if err != nil {
			t.Fatal(err)
		}
		// Everything the client could see on reply subjects.
		inbox, err := client.nc.SubscribeSync("_INBOX.>")
		if err != nil {
			t.Fatal(err)
		}
		if err := client.nc.FlushWithContext(ctx); err != nil {
			t.Fatal(err)
		}
		// The worker reads the token; its reply travels on the worker's
		// _INBOX in account WXHUB, which the client must not see.
		kv, err := worker.js.KeyValue(ctx, events.BucketTokens)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Get(ctx, appid); err != nil {
			t.Fatal(err)
		}

		job := nats.NewMsg(events.SubjectUserLookup)
		job.Header.Set(events.HeaderMsgID, "job-1")
		job.Data = []byte(`{"job_id":"job-1","appid":"wxdeploytest","openid":"o1"}`)
		ack, err := client.js.PublishMsg(ctx, job)
		if err != nil {
			t.Fatalf("client: publish user.lookup: %v", err)
		}
		if ack.Stream != events.StreamJobs {
			t.Fatalf("client: job stored in %q, want %s", ack.Stream, events.StreamJobs)
		}
		// The PubAck came after the worker's read: anything the client
		// could see of that read is queued before the PubAck's copy.
		for {
			m, err := inbox.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatalf("client: PubAck not seen on _INBOX.>: %v", err)
			}
			if strings.Contains(string(m.Data), token) {
				t.Fatalf("client saw the global token on %s", m.Subject)
			}
			if strings.Contains(string(m.Data), `"stream":"`+events.StreamJobs+`"`) {
				break
			}
		}

		cons, err := worker.js.CreateOrUpdateConsumer(ctx, events.StreamJobs, jetstream.ConsumerConfig{
			Durable: "deploy-test", FilterSubject: events.SubjectUserLookup, AckPolicy: jetstream.AckExplicitPolicy,
		})
		if err != nil {
			t.Fatalf("worker: consumer on %s: %v", events.StreamJobs, err)
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var got jetstream.Msg
		for m := range batch.Messages() {
			got = m
		}
		if got == nil || string(got.Data()) != string(job.Data) {
			t.Fatalf("worker: fetched %v, want the client's job (batch err %v)", got, batch.Error())
		}
		if err := got.DoubleAck(ctx); err != nil {
			t.Fatalf("worker: ack: %v", err)
		}
		result := nats.NewMsg(events.NewSubjects("").StoredUserProfile)
		result.Header.Set(events.HeaderMsgID, "job-1")
		result.Data = []byte(`{"job_id":"job-1"}`)
		if _, err := worker.js.PublishMsg(ctx, result); err != nil {
			t.Fatalf("worker: publish user.profile: %v", err)
		}
		m, err := results.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("client: no user.profile: %v", err)
		}
		if string(m.Data) != string(result.Data) {
			t.Fatalf("client: got %q", m.Data)
		}
	})
}
