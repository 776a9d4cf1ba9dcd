package deploy_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
)

// shippedOptions loads node 1 of the shipped cluster as a single
// in-process server: same accounts, users and grants, no routes, a free
// loopback port, plain demo passwords (bcrypt under -race is slow; the
// hashes are checked in TestNATSPasswords).
func shippedOptions(t *testing.T) *server.Options {
	t.Helper()
	o, err := server.ProcessConfigFile(natsConfigs(t)[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range o.Users {
		u.Password = demoPassword(u.Username)
	}
	o.Cluster = server.ClusterOpts{}
	o.Routes = nil
	o.Host, o.Port, o.HTTPPort = "127.0.0.1", -1, 0
	o.StoreDir = filepath.Join(t.TempDir(), "js")
	o.NoSigs, o.NoLog = true, true
	return o
}

func startServer(t *testing.T, o *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	return s
}

func userOpts(t *testing.T, o *server.Options, name string) *server.User {
	t.Helper()
	for _, u := range o.Users {
		if u.Username == name {
			return u
		}
	}
	t.Fatalf("user %s not in the shipped config", name)
	return nil
}

// TestShippedUsersHaveNoAdminRights audits the users as nats-server
// loads them from the shipped files: no JetStream administration, no
// allow_responses, and exactly the grant of package grants.
func TestShippedUsersHaveNoAdminRights(t *testing.T) {
	t.Parallel()
	o := shippedOptions(t)
	for _, r := range grants.Roles {
		u := userOpts(t, o, r.User())
		want := grants.For(r, "")
		if want.Admin {
			if u.Permissions != nil {
				t.Errorf("%s: restricted, want the admin", u.Username)
			}
			continue
		}
		p := u.Permissions
		if p == nil || p.Publish == nil || p.Subscribe == nil {
			t.Fatalf("%s: no permissions", u.Username)
		}
		if bad := grants.Audit(p.Publish.Allow); len(bad) > 0 {
			t.Errorf("%s: %v", u.Username, bad)
		}
		if p.Response != nil {
			t.Errorf("%s: allow_responses is on", u.Username)
		}
		if !slices.Equal(p.Publish.Allow, want.Publish) || !slices.Equal(p.Subscribe.Allow, want.Subscribe) {
			t.Errorf("%s: loaded grant differs from package grants", u.Username)
		}
	}
}

// TestWidenedGrantIsCaught widens the worker's grant back to $JS.API.>
// (as shipped before) and checks that both the audit and the attack suite
// fail, and that even then the accounts hold: the worker administers its
// own account, but the forged-token exploit of the issue (a source with a
// subject transform from wx_oauth into wx_tokens) cannot reach the token
// bucket, which is in the holders' account.
func TestWidenedGrantIsCaught(t *testing.T) {
	t.Parallel()
	o := shippedOptions(t)
	w := userOpts(t, o, "worker")
	w.Permissions.Publish.Allow = append(w.Permissions.Publish.Allow, "$JS.API.>")
	if len(grants.Audit(w.Permissions.Publish.Allow)) == 0 {
		t.Fatal("the audit does not notice $JS.API.>")
	}
	s := startServer(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := connectAs(t, s, grants.Provision)
	if err := broker.Provision(ctx, admin.streams, broker.Topology{}); err != nil {
		t.Fatal(err)
	}
	sc := loadStreamConfigs(t, ctx, admin)
	worker := connectAs(t, s, grants.Worker)
	allowed := runAttacks(worker, attacksFor(grants.Worker, sc))
	for _, must := range []string{"source with transform", "shrink WX_JOBS", "republish", "stream mirroring", "delete the workers' durable", "a new durable on WX_JOBS", "update KV_wx_oauth"} {
		if !slices.ContainsFunc(allowed, func(a string) bool { return strings.Contains(a, must) }) {
			t.Errorf("with $JS.API.> the attack %q was still denied, so the suite would not notice the widening", must)
		}
	}
	// The widened worker rules its own account...
	if err := broker.Provision(ctx, admin.streams, broker.Topology{}); err != nil {
		t.Fatal(err)
	}
	sc = loadStreamConfigs(t, ctx, admin)
	oauth := sc[grants.KVStream(events.BucketOAuth)]
	oauth.Description = "changed by the worker"
	if o := worker.request("$JS.API.STREAM.UPDATE."+oauth.Name, mustJSON(oauth), nil); o.reply == nil || apiError(o.reply) != "" {
		t.Fatalf("the widened worker cannot update its own stream: %+v", o)
	}
	// ... and still cannot forge the token: the update of the token
	// bucket does not find it, and the record written to wx_oauth stays
	// there.
	forge := sc.evilUpdates()[0]
	if o := worker.request(forge.subject, forge.body, nil); o.reply == nil || !strings.Contains(apiError(o.reply), "not found") {
		t.Fatalf("forge: %+v", o)
	}
	if _, err := worker.js.Publish(ctx, "$KV."+events.BucketOAuth+"."+testApp, []byte(`{"access_token":"FORGED","version":999999}`)); err != nil {
		t.Fatal(err)
	}
	tokens, err := admin.streams.Bucket(events.BucketTokens).KeyValue(ctx, events.BucketTokens)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := tokens.Get(ctx, testApp); err == nil {
		t.Fatalf("wx_tokens has a record for %s: %s", testApp, e.Value())
	}
	st, err := admin.streams.Bucket(events.BucketTokens).Stream(ctx, grants.KVStream(events.BucketTokens))
	if err != nil {
		t.Fatal(err)
	}
	if st.CachedInfo().State.Msgs != 0 || len(st.CachedInfo().Config.Sources) != 0 {
		t.Fatalf("wx_tokens changed: %+v", st.CachedInfo())
	}
}
