package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/gateway/weblogin"
	"github.com/wxhub/wxhub/holder"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

const (
	testApp    = "wxdeploytest"
	testSecret = "deploy-test-app-secret"
	testOpenID = "o-deploy-1"
)

// waitInterest waits until every server knows of at least n subscribers
// to subject in account. Interest crosses the routes asynchronously: a
// request sent before it arrived finds no responders (the cause of the
// old flaky "no responders" and publish timeouts in this test).
func waitInterest(t *testing.T, servers []*server.Server, account, subject string, n int) {
	t.Helper()
	wxhubtest.Eventually(t, 20*time.Second, fmt.Sprintf("%d subscribers to %s in %s on every node", n, subject, account), func() bool {
		for _, s := range servers {
			acc, err := s.LookupAccount(account)
			if err != nil || acc.Interest(subject) < n {
				return false
			}
		}
		return true
	})
}

const probeHeader = "Wx-Deploy-Test-Probe"

// waitRouted publishes probes on subject as from until sub receives one:
// then sub's interest has reached from's node. (Route interest is
// coalesced per subject, so counting subscribers cannot tell.)
func waitRouted(t *testing.T, from *user, subject string, sub *nats.Subscription) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		m := nats.NewMsg(subject)
		m.Header.Set(probeHeader, "1")
		m.Data = []byte(`{}`)
		if err := from.nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		if got, err := sub.NextMsg(50 * time.Millisecond); err == nil && got.Header.Get(probeHeader) != "" {
			return
		}
	}
	t.Fatalf("%s from %s never reached the subscriber", subject, from.name)
}

// example turns a subject with wildcards into a literal one it matches.
func example(subject string) string {
	return strings.NewReplacer(">", "x", "*", "x").Replace(subject)
}

// provisionAsAdmin provisions with 3 replicas as the admin user and waits
// until every node routes to every stream.
func provisionAsAdmin(t *testing.T, servers []*server.Server, admin *user, topo broker.Topology) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := broker.Provision(ctx, admin.streams, topo); err != nil {
		t.Fatalf("provision as admin: %v", err)
	}
	for _, sc := range topo.StreamConfigs() {
		for _, s := range sc.Subjects {
			waitInterest(t, servers, grants.StreamAccount(sc.Name), example(s), 1)
		}
	}
	for _, kc := range topo.BucketConfigs() {
		waitInterest(t, servers, grants.StreamAccount(grants.KVStream(kc.Bucket)), "$KV."+kc.Bucket+".x", 1)
	}
}

// TestNATSClusterPermissions starts the cluster from the shipped files,
// provisions it as the admin, then as every role tries every known bypass
// (all must be denied) and does the role's whole job under its grant.
func TestNATSClusterPermissions(t *testing.T) {
	servers := startCluster(t)
	admin := connectAs(t, servers[0], grants.Provision)
	topo := broker.Topology{Replicas: 3, AckWait: 10 * time.Second}
	provisionAsAdmin(t, servers, admin, topo)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	info, err := admin.streams.For(events.StreamJobs).Stream(ctx, events.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo(); got.Config.Replicas != 3 || got.Cluster == nil || len(got.Cluster.Replicas) != 2 {
		t.Fatalf("WX_JOBS: replicas %d, cluster %+v; want 3 replicas (leader + 2)", got.Config.Replicas, got.Cluster)
	}
	sc := loadStreamConfigs(t, ctx, admin)

	// Each role on a different node: the permissions hold cluster-wide.
	users := map[grants.Role]*user{
		grants.Holder:  connectAs(t, servers[0], grants.Holder),
		grants.Worker:  connectAs(t, servers[1], grants.Worker),
		grants.Gateway: connectAs(t, servers[2], grants.Gateway),
		grants.Client:  connectAs(t, servers[2], grants.Client),
	}
	for _, role := range []grants.Role{grants.Holder, grants.Worker, grants.Gateway, grants.Client} {
		t.Run("attacks as "+string(role), func(t *testing.T) {
			list := attacksFor(role, sc)
			for _, a := range runAttacks(users[role], list) {
				t.Error(a)
			}
			t.Logf("%d attacks tried", len(list))
		})
	}
	// What the attacks may have changed: nothing.
	t.Run("streams unchanged", func(t *testing.T) {
		after := loadStreamConfigs(t, ctx, admin)
		for name, c := range sc {
			a, _ := json.Marshal(after[name])
			b, _ := json.Marshal(c)
			if string(a) != string(b) {
				t.Errorf("%s changed:\n before %s\n after  %s", name, b, a)
			}
		}
	})

	t.Run("a reply subject sent across accounts is mapped: answers go back to the sender's account only", func(t *testing.T) {
		// No role has allow_responses (TestShippedUsersHaveNoAdminRights),
		// and no two users of one account can send each other requests.
		// Across accounts, a worker's report with the reply subject of an
		// API call reaches the holder under a reply subject the server
		// made, which leads back into the worker's own account only.
		h, w := users[grants.Holder], users[grants.Worker]
		got := make(chan *nats.Msg, 16)
		sub, err := h.nc.Subscribe(events.SubjectTokenInvalidated, func(m *nats.Msg) { got <- m })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := h.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		// The reply subject of an API call: the server refuses every
		// "$JS." reply (serverRefuses) and drops the report.
		del := "$JS.API.STREAM.DELETE." + events.StreamJobs
		if err := w.nc.PublishRequest(events.SubjectTokenInvalidated, del, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("Permissions Violation for Publish with Reply of %q", del)
		select {
		case err := <-w.errs:
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("worker: %v, want %s", err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the server did not refuse the reply subject %s", del)
		}
		// A reply subject of the holder's account the worker may not
		// publish: it reaches the holder under a reply subject the server
		// made, which leads back into the worker's own account only.
		tokens := grants.KVStream(events.BucketTokens)
		before, err := admin.streams.For(tokens).Stream(ctx, tokens)
		if err != nil {
			t.Fatal(err)
		}
		forge := "$KV." + events.BucketTokens + "." + testApp
		// Send until the holder's interest has crossed the route.
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(20 * time.Second)
		for {
			if err := w.nc.PublishRequest(events.SubjectTokenInvalidated, forge, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			select {
			case m := <-got:
				if m.Reply == forge || strings.HasPrefix(m.Reply, "$KV.") {
					t.Fatalf("the holder sees the reply subject %q", m.Reply)
				}
				_ = m.Respond([]byte(`{"appid":"` + testApp + `","access_token":"FORGED","version":999999}`))
				if err := h.nc.Flush(); err != nil {
					t.Fatal(err)
				}
				after, err := admin.streams.For(tokens).Stream(ctx, tokens)
				if err != nil {
					t.Fatal(err)
				}
				if b, a := before.CachedInfo().State, after.CachedInfo().State; a.LastSeq != b.LastSeq {
					t.Fatalf("%s after the answer: last seq %d, was %d", tokens, a.LastSeq, b.LastSeq)
				}
				return
			case <-tick.C:
			case <-deadline:
				t.Fatal("holder did not receive the report")
			}
		}
	})

	t.Run("roles at work", func(t *testing.T) {
		rolesAtWork(t, ctx, servers, admin, users[grants.Client], topo)
	})
}

// rolesAtWork runs real holders and a real worker, each as its own user,
// and a client: a job round trip, token refreshes, a takeover and the
// status scatter-gather, all under the shipped grants.
func rolesAtWork(t *testing.T, ctx context.Context, servers []*server.Server, admin, client *user, topo broker.Topology) {
	sim := wechatsim.New(wechatsim.WithLogger(slog.New(slog.DiscardHandler)))
	sim.AddApp(testApp, testSecret)
	if err := sim.AddFollower(testApp, wechatsim.Follower{OpenID: testOpenID, Nickname: "deploy"}); err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(sim)
	t.Cleanup(api.Close)
	wc, err := wechat.NewClient(wechat.Config{BaseURL: api.URL, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))

	// Every connection of a real role: none may see a permission
	// violation (a call its grant forgot, silently failing).
	var conns []*user
	t.Cleanup(func() {
		for _, u := range conns {
			for {
				select {
				case err := <-u.errs:
					t.Errorf("%s at work: %v", u.name, err)
					continue
				default:
				}
				break
			}
		}
	})
	newHolder := func(id string, node int) *holder.Holder {
		u := connectAs(t, servers[node], grants.Holder)
		conns = append(conns, u)
		h, err := holder.New(holder.Config{Conn: u.nc, WeChat: wc, ID: id, Apps: []holder.App{{AppID: testApp, Secret: testSecret}},
			LeaseTTL: 3 * time.Second, MinForceInterval: 100 * time.Millisecond, Logger: log.With("holder", id)})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	// The test follows the token as a holder may (a watch is a consumer:
	// only within the bucket's own account).
	tokens, err := connectAs(t, servers[0], grants.Holder).js.KeyValue(ctx, events.BucketTokens)
	if err != nil {
		t.Fatal(err)
	}
	watch, err := tokens.Watch(ctx, testApp)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Stop()
	nextToken := func(after uint64) events.TokenRecord {
		t.Helper()
		for {
			select {
			case e := <-watch.Updates():
				if e == nil || e.Operation() != jetstream.KeyValuePut {
					continue
				}
				var rec events.TokenRecord
				if err := json.Unmarshal(e.Value(), &rec); err == nil && rec.Version > after {
					return rec
				}
			case <-ctx.Done():
				t.Fatalf("no token newer than version %d", after)
			}
		}
	}

	// A holder fetches the first token: it writes wx_tokens, wx_leases,
	// wx_quota and publishes token.refreshed.
	h1 := newHolder("holder-1", 0)
	stopHolder1 := wxhubtest.Background(t, "holder-1", h1.Run)
	first := nextToken(0)
	if first.Holder != "holder-1" {
		t.Fatalf("first token by %q", first.Holder)
	}
	h2 := newHolder("holder-2", 1)
	wxhubtest.Background(t, "holder-2", h2.Run)

	// A worker, bound to the provisioned durables.
	wu := connectAs(t, servers[1], grants.Worker)
	conns = append(conns, wu)
	w, err := worker.New(worker.Config{Conn: wu.nc, Accounts: true, WeChat: wc, Apps: []worker.App{{AppID: testApp, Secret: testSecret}},
		ID: "worker-1", Concurrency: 4, AckWait: topo.AckWait, JobTimeout: 8 * time.Second, Logger: log.With("worker", "worker-1")})
	if err != nil {
		t.Fatal(err)
	}
	wxhubtest.Background(t, "worker-1", w.Run)
	wxhubtest.Eventually(t, 30*time.Second, "worker ready", w.Ready)

	// The client publishes a job (with its PubAck) and gets its result.
	results, err := client.nc.SubscribeSync(events.SubjectUserProfile)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitRouted(t, connectAs(t, servers[1], grants.Provision), events.SubjectUserProfile, results)
	job := nats.NewMsg(events.SubjectUserLookup)
	job.Header.Set(events.HeaderMsgID, "job-1")
	job.Data = []byte(`{"job_id":"job-1","appid":"` + testApp + `","openid":"` + testOpenID + `"}`)
	ack, err := client.js.PublishMsg(ctx, job)
	if err != nil {
		t.Fatalf("client: publish user.lookup: %v", err)
	}
	if ack.Stream != events.StreamJobs {
		t.Fatalf("client: job stored in %q, want %s", ack.Stream, events.StreamJobs)
	}
	var m *nats.Msg
	var prof events.UserProfile
	for prof.JobID != "job-1" {
		if m, err = results.NextMsg(30 * time.Second); err != nil {
			t.Fatalf("client: no user.profile: %v", err)
		}
		if m.Header.Get(probeHeader) != "" {
			continue
		}
		if err := json.Unmarshal(m.Data, &prof); err != nil || prof.JobID != "job-1" || prof.OpenID != testOpenID {
			t.Fatalf("client: result %s (%v)", m.Data, err)
		}
	}
	if strings.Contains(string(m.Data), first.AccessToken) {
		t.Fatal("the result carries the token")
	}

	// What a worker's reaper does with the dead letter of a job that used
	// all its deliveries: store it, and find it again on its job subject
	// (a later attempt to end the job, past the duplicate window).
	subs := events.NewSubjects("")
	dl := nats.NewMsg(subs.StoredDeadLetter(events.SubjectUserLookup))
	dl.Header.Set(events.HeaderMsgID, "job-dl")
	dl.Data = []byte(`{"job_id":"job-dl"}`)
	dlAck, err := wu.js.PublishMsg(ctx, dl)
	if err != nil {
		t.Fatalf("worker: store a dead letter: %v", err)
	}
	dls, err := wu.streams.For(events.StreamDeadLetters).Stream(ctx, events.StreamDeadLetters)
	if err != nil {
		t.Fatalf("worker: %s: %v", events.StreamDeadLetters, err)
	}
	gctx, gcancel := context.WithTimeout(ctx, 10*time.Second)
	defer gcancel()
	if got, err := dls.GetMsg(gctx, dlAck.Sequence, jetstream.WithGetMsgSubject(subs.DeadLetter(events.SubjectUserLookup))); err != nil ||
		got.Sequence != dlAck.Sequence || got.Header.Get(events.HeaderMsgID) != "job-dl" {
		t.Fatalf("worker: read the dead letter back: %v", err)
	}

	// A report of the current token (as a worker would) makes the leader
	// refresh it.
	rep, _ := json.Marshal(events.TokenInvalidated{AppID: testApp, Version: first.Version, ErrCode: 40001, Reporter: "deploy-test"})
	if _, err := wu.js.Publish(ctx, events.SubjectTokenInvalidated, rep); err != nil {
		t.Fatalf("worker: publish token.invalidated: %v", err)
	}
	second := nextToken(first.Version)
	if second.Holder != "holder-1" || second.AccessToken == first.AccessToken {
		t.Fatalf("refresh: %+v", second)
	}

	// The gateway's NATS side, with the code the gateway runs: a token
	// watch, a report of a rejected token, a login state taken once, an
	// OAuth job published with its PubAck, results received.
	gu := connectAs(t, servers[2], grants.Gateway)
	conns = append(conns, gu)
	gwTokens := worker.NewTokenCache(log)
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan error, 1)
	go func() {
		gwTokens.FollowBucket(watchCtx, gu.streams.Bucket(events.BucketTokens), gu.nc, events.SubjectTokenRefreshed, []string{testApp}, 0)
		watchDone <- nil
	}()
	if _, err := gwTokens.WaitNewer(ctx, testApp, first.Version); err != nil {
		t.Fatalf("gateway: token watch: %v", err)
	}
	stopWatch()
	if err := <-watchDone; err != nil {
		t.Fatalf("gateway: token watch: %v", err)
	}
	inv := worker.NewInvalidator(gu.js, "", "gateway", time.Millisecond)
	if err := inv.Invalidate(ctx, testApp, 1, 40001); err != nil { // stale: ignored by the holder
		t.Fatalf("gateway: token.invalidated: %v", err)
	}
	stateKV, err := gu.js.KeyValue(ctx, events.BucketLoginState)
	if err != nil {
		t.Fatal(err)
	}
	states := weblogin.NewStateStore(stateKV, 0, nil)
	nonce, err := states.Put(ctx, weblogin.State{AppID: testApp, Scope: "snsapi_base", ReturnTo: "https://shop.example/back"})
	if err != nil {
		t.Fatalf("gateway: put login state: %v", err)
	}
	if st, err := states.Take(ctx, nonce); err != nil || st.AppID != testApp {
		t.Fatalf("gateway: take login state: %+v %v", st, err)
	}
	gwResults, err := gu.nc.SubscribeSync(events.SubjectUserProfileFailed)
	if err != nil {
		t.Fatal(err)
	}
	if err := gu.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitRouted(t, connectAs(t, servers[1], grants.Provision), events.SubjectUserProfileFailed, gwResults)
	oj := nats.NewMsg(events.SubjectOAuthCodeReceived)
	oj.Header.Set(events.HeaderMsgID, "job-oauth-1")
	oj.Data = []byte(`{"job_id":"job-oauth-1","appid":"` + testApp + `","code":"no-such-code"}`)
	if _, err := gu.js.PublishMsg(ctx, oj); err != nil {
		t.Fatalf("gateway: publish oauth.code.received: %v", err)
	}
	for {
		m, err := gwResults.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("gateway: no result for its OAuth job: %v", err)
		}
		if m.Header.Get(probeHeader) == "" && strings.Contains(string(m.Data), `"job-oauth-1"`) {
			break
		}
	}

	// Status: every process answers the admin's scatter-gather.
	statusRound(t, servers, admin)

	// Takeover: the leader stops (and releases its lease); the standby
	// leads and refreshes on the next report.
	if err := stopHolder1(); err != nil {
		t.Fatalf("holder-1: %v", err)
	}
	wxhubtest.Eventually(t, 30*time.Second, "holder-2 leads", func() bool {
		st := h2.Status()
		return len(st) == 1 && st[0].Leader
	})
	// The admin asks the new leader for a manual refresh (`wxhub token
	// invalidate`): the holder answers on wxhub.reply.<token>.
	req, _ := json.Marshal(events.TokenRefreshRequest{AppID: testApp, Requester: "deploy-test"})
	reply := events.SubjectReply + ".deploytest-refresh"
	answers, err := admin.nc.SubscribeSync(reply)
	if err != nil {
		t.Fatal(err)
	}
	defer answers.Unsubscribe()
	if err := admin.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitInterest(t, servers, grants.AccountCore, reply, 1)
	waitInterest(t, servers, grants.AccountHolder, events.SubjectTokenRefreshRequest, 1)
	if err := admin.nc.PublishRequest(events.SubjectTokenRefreshRequest, reply, req); err != nil {
		t.Fatal(err)
	}
	am, err := answers.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("no answer to the manual refresh: %v", err)
	}
	var ans events.TokenRefreshReply
	if err := json.Unmarshal(am.Data, &ans); err != nil || ans.Error != "" || ans.Holder != "holder-2" {
		t.Fatalf("manual refresh: %s (%v)", am.Data, err)
	}
	third := nextToken(second.Version)
	if third.Holder != "holder-2" {
		t.Fatalf("after takeover the token came from %q", third.Holder)
	}
	t.Logf("job %s answered; token versions %d (holder-1), %d (refresh), %d (holder-2 after takeover)", prof.JobID, first.Version, second.Version, third.Version)
}

// statusRound sends `wxhub status`'s request as the admin and checks that
// a holder, a worker and a gateway can each answer it under their grants.
func statusRound(t *testing.T, servers []*server.Server, admin *user) {
	t.Helper()
	var subs []*nats.Subscription
	for i, role := range []grants.Role{grants.Holder, grants.Worker, grants.Gateway} {
		u := connectAs(t, servers[i], role)
		sub, err := u.nc.Subscribe(events.SubjectStatus, func(m *nats.Msg) { _ = m.Respond([]byte(role)) })
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
		if err := u.nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	reply := events.SubjectReply + ".deploytest"
	in, err := admin.nc.SubscribeSync(reply)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Unsubscribe()
	if err := admin.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Interest crosses routes and account imports asynchronously, and a
	// route's interest is one per subject however many subscribe, so
	// counting cannot tell when all three are reachable: ask again until
	// each has answered (a repeated answer changes nothing).
	got := map[string]bool{}
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < 3 {
		if err := admin.nc.PublishRequest(events.SubjectStatus, reply, nil); err != nil {
			t.Fatal(err)
		}
		for len(got) < 3 {
			m, err := in.NextMsg(200 * time.Millisecond)
			if err != nil {
				break
			}
			got[string(m.Data)] = true
		}
		if len(got) < 3 && time.Now().After(deadline) {
			t.Fatalf("status answers %v within 20 s", got)
		}
	}
}
