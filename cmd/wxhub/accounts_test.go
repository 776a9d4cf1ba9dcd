package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers/vault"
)

// startAccountsServer starts an in-process nats-server, one node, with
// the shipped accounts and users (deploy/nats/accounts.inc: each role's
// own state in its own account, the shared streams in CORE with the
// admin, who reaches the other accounts only through their JetStream API
// imported under $JS.<ACCOUNT>.API, so a KV watch or push consumer across
// accounts cannot deliver to the admin). Users log in with their demo
// passwords ("<user>-demo-password"), given to the server in clear
// instead of the shipped bcrypt hashes: a bcrypt check per connection
// (cost 11, in a race-instrumented server on a loaded machine) can outlast
// the client's 2 s connect timeout, and the passwords are not what this
// tests (package deploy checks the hashes).
func startAccountsServer(t *testing.T) string {
	t.Helper()
	inc, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nats", "accounts.inc"))
	if err != nil {
		t.Fatal(err)
	}
	hashed := regexp.MustCompile(`(user:\s*(\w+)[,\s]+password:\s*)"\$2a\$[^"]+"`)
	inc = hashed.ReplaceAll(inc, []byte(`${1}"${2}-demo-password"`))
	if bytes.Contains(inc, []byte("$2a$")) {
		t.Fatal("accounts.inc: a bcrypt hash not next to its user name: update the pattern above")
	}
	return brokertest.StartConfig(t, "listen: 127.0.0.1:-1\n"+string(inc))
}

// TestAdminCommandsAcrossAccounts: on a server with the shipped accounts
// layout and grants,
// `wxhub provision --nats-accounts` creates each bucket in its owner's
// account and the job streams in CORE; `wxhub status`, `token get` and
// `result` read another account's buckets through the imported API alone
// (no KV watch: one would deliver into the bucket's account and the admin
// would list no app); presence answers cross back; the vault commands work
// with the worker user's credentials and, with the admin's, fail saying so.
// A worker's readiness probe and backlog metrics read CORE's streams
// through its imports.
func TestAdminCommandsAcrossAccounts(t *testing.T) {
	t.Parallel()
	url := startAccountsServer(t)
	keyLine, err := vault.NewKeyLine("k1")
	if err != nil {
		t.Fatal(err)
	}
	wx := func(user string, args ...string) (int, string, string) {
		t.Helper()
		var o, e bytes.Buffer
		vars := map[string]string{"WXHUB_NATS_URL": url, "WXHUB_NATS_USER": user, "WXHUB_NATS_PASSWORD": user + "-demo-password", "WXHUB_VAULT_KEYS": keyLine}
		env := &cmdEnv{stdout: &o, stderr: &e, getenv: func(k string) string { return vars[k] }}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return run(ctx, env, args), o.String(), e.String()
	}
	conn := func(user string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
		t.Helper()
		nc, err := nats.Connect(url, append(opts, nats.UserInfo(user, user+"-demo-password"))...)
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return nc, js
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	code, out, errOut := wx("admin", "provision", "--nats-accounts", "--timeout", "30s")
	if code != exitOK || !strings.Contains(out, "bucket   wx_tokens (account HOLDER)") || !strings.Contains(out, "(account CORE)") {
		t.Fatalf("provision --nats-accounts: %d\n%s\n%s", code, out, errOut)
	}
	// Each in its owner's account, and nowhere else: the admin lists each
	// account's streams through the API it imports from it.
	adminNC, adminJS := conn("admin")
	holderNC, holderJS := conn("holder", nats.CustomInboxPrefix(grants.Holder.InboxPrefix()))
	workerNC, workerJS := conn("worker", nats.CustomInboxPrefix(grants.Worker.InboxPrefix()))
	for _, c := range []struct {
		account     string
		has, hasNot []string
	}{
		{"CORE", []string{events.StreamJobs, events.StreamResults, events.StreamDeadLetters}, []string{"KV_" + events.BucketTokens, "KV_" + events.BucketVault}},
		{"HOLDER", []string{"KV_" + events.BucketTokens, "KV_" + events.BucketLeases, "KV_" + events.BucketQuota, events.StreamTokenEvents}, []string{events.StreamJobs, "KV_" + events.BucketDone}},
		{"WORKER", []string{"KV_" + events.BucketDone, "KV_" + events.BucketVault, "KV_" + events.BucketOAuth}, []string{events.StreamJobs, "KV_" + events.BucketTokens}},
		{"GATEWAY", []string{"KV_" + events.BucketLoginState}, []string{events.StreamJobs, "KV_" + events.BucketTokens}},
	} {
		js := adminJS
		if c.account != "CORE" {
			if js, err = jetstream.NewWithAPIPrefix(adminNC, "$JS."+c.account+".API"); err != nil {
				t.Fatal(err)
			}
		}
		var names []string
		for n := range js.StreamNames(ctx).Name() {
			names = append(names, n)
		}
		for _, n := range c.has {
			if !slices.Contains(names, n) {
				t.Errorf("account %s: no %s (has %v)", c.account, n, names)
			}
		}
		for _, n := range c.hasNot {
			if slices.Contains(names, n) {
				t.Errorf("account %s: has %s, which belongs elsewhere", c.account, n)
			}
		}
	}
	if code, _, errOut := wx("admin", "provision", "--nats-accounts", "--timeout", "30s"); code != exitOK {
		t.Fatalf("second provision (idempotent): %d %s", code, errOut)
	}

	// The roles' readiness and the workers' backlog metrics, each through
	// its role's view.
	view := func(nc *nats.Conn, role grants.Role) *broker.JetStreams {
		js, err := broker.NewJetStreams(nc, role, true)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	if err := workerJetStreamReady(view(workerNC, grants.Worker))(); err != nil {
		t.Errorf("worker readiness across accounts: %v", err)
	}
	if err := holderJetStreamReady(view(holderNC, grants.Holder))(); err != nil {
		t.Errorf("holder readiness: %v", err)
	}
	// 4 gauges per job durable, 2 per stream: none left out.
	metrics := make(chan prometheus.Metric, 64)
	newBacklogCollector(view(workerNC, grants.Worker)).Collect(metrics)
	if n, want := len(metrics), 4*len(events.NewSubjects("").Jobs())+2*4; n != want {
		t.Errorf("backlog metrics across accounts: %d, want %d", n, want)
	}

	// A holder's state in HOLDER, and a holder answering presence there.
	put := func(js jetstream.JetStream, bucket, key string, v any) uint64 {
		t.Helper()
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		b, ok := v.([]byte)
		if !ok {
			b, _ = json.Marshal(v)
		}
		rev, err := kv.Put(ctx, key, b)
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	now := time.Now()
	put(holderJS, events.BucketTokens, "wxacc1", events.TokenRecord{AppID: "wxacc1", AccessToken: "ACC-TOKEN-1", Version: 7, Mode: "active", ExpiresAt: now.Add(time.Hour)})
	put(holderJS, events.BucketTokens, "wxacc2", events.TokenRecord{AppID: "wxacc2", AccessToken: "ACC-TOKEN-2", Version: 3, Mode: "active", ExpiresAt: now.Add(time.Hour)})
	put(holderJS, events.BucketLeases, "wxacc1", []byte("holder-acc"))
	put(holderJS, events.BucketQuota, events.QuotaKey("wxacc1", now), []byte("12"))
	presence, err := holderNC.Subscribe(events.SubjectStatus, func(m *nats.Msg) {
		b, _ := json.Marshal(processStatus{Role: "holder", ID: "holder-acc", Leads: []string{"wxacc1"}})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer presence.Unsubscribe()
	refresh, err := holderNC.Subscribe(events.SubjectTokenRefreshRequest, func(m *nats.Msg) {
		var req events.TokenRefreshRequest
		_ = json.Unmarshal(m.Data, &req)
		b, _ := json.Marshal(events.TokenRefreshReply{AppID: req.AppID, Version: 8, Holder: "holder-acc"})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer refresh.Unsubscribe()
	if err := holderNC.Flush(); err != nil {
		t.Fatal(err)
	}

	code, out, errOut = wx("admin", "status", "--json", "--nats-accounts", "--wait", "2s")
	if code != exitOK {
		t.Fatalf("status --nats-accounts: %d\n%s\n%s", code, out, errOut)
	}
	var st statusReport
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if len(st.Apps) != 2 || st.Apps[0].AppID != "wxacc1" || st.Apps[0].Version != 7 || st.Apps[0].Leader != "holder-acc" ||
		st.Apps[0].FetchesToday != 12 || st.Apps[1].AppID != "wxacc2" || st.Apps[1].Leader != "-" {
		t.Fatalf("status apps across accounts: %+v", st.Apps)
	}
	if len(st.Apps[0].Lockouts) != 0 || len(st.Processes) != 1 || st.Processes[0].ID != "holder-acc" {
		t.Fatalf("presence across accounts: lockouts %+v, processes %+v", st.Apps[0].Lockouts, st.Processes)
	}
	if len(st.Jobs) != len(events.NewSubjects("").Jobs()) {
		t.Fatalf("job consumers: %+v", st.Jobs)
	}
	if strings.Contains(out, "ACC-TOKEN") {
		t.Fatal("status prints a token")
	}
	// Without --nats-accounts the admin's account has no token bucket:
	// the error says what to pass.
	if code, _, errOut := wx("admin", "status"); code != exitFailure || !strings.Contains(errOut, "--nats-accounts") {
		t.Fatalf("status without --nats-accounts: %d %s", code, errOut)
	}

	code, out, errOut = wx("admin", "token", "get", "--appid", "wxacc2", "--nats-accounts")
	if code != exitOK || !strings.Contains(out, `"version": 3`) || strings.Contains(out, "ACC-TOKEN") {
		t.Fatalf("token get --nats-accounts: %d\n%s\n%s", code, out, errOut)
	}

	code, out, errOut = wx("admin", "token", "invalidate", "--appid", "wxacc1", "--nats-accounts", "--timeout", "10s")
	if code != exitOK || !strings.Contains(out, `"version": 8`) {
		t.Fatalf("token invalidate --nats-accounts: %d\n%s\n%s", code, out, errOut)
	}

	// A stored result in CORE, its done record in WORKER.
	res := nats.NewMsg(events.NewSubjects("").StoredResultPrefix + events.SubjectUserProfile)
	res.Header.Set(events.HeaderMsgID, "acc-job")
	res.Data = []byte(`{"job_id":"acc-job","appid":"wxacc1","openid":"oAcc"}`)
	ack, err := adminJS.PublishMsg(ctx, res)
	if err != nil {
		t.Fatal(err)
	}
	put(workerJS, events.BucketDone, events.DoneKey("acc-job"), events.DoneRecord{JobID: "acc-job", ResultSubject: events.SubjectUserProfile, ResultSeq: ack.Sequence})
	code, out, errOut = wx("admin", "result", "--job-id", "acc-job", "--nats-accounts")
	if code != exitOK || !strings.Contains(out, `"openid": "oAcc"`) {
		t.Fatalf("result --nats-accounts: %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = wx("admin", "deadletters", "list", "--nats-accounts")
	if code != exitOK || !strings.Contains(out, "no dead letters") {
		t.Fatalf("deadletters list --nats-accounts: %d\n%s\n%s", code, out, errOut)
	}

	// The vault is the workers': the admin cannot reach it, the worker can.
	code, _, errOut = wx("admin", "vault", "rotate", "--nats-accounts")
	if code != exitFailure || !strings.Contains(errOut, "WORKER account") || !strings.Contains(errOut, "worker user") {
		t.Fatalf("vault rotate as the admin: %d %s", code, errOut)
	}
	code, out, errOut = wx("worker", "vault", "rotate", "--nats-accounts")
	if code != exitOK || !strings.Contains(out, `"current_key": "k1"`) {
		t.Fatalf("vault rotate as the worker: %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = wx("worker", "vault", "forget", "--appid", "wxacc1", "--openid", "oAcc", "--nats-accounts")
	if code != exitOK || !strings.Contains(out, `"existed": false`) {
		t.Fatalf("vault forget as the worker: %d\n%s\n%s", code, out, errOut)
	}
	_ = adminNC
}
