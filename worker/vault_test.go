package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers/vault"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

// noVaultApp is served by the vault harness's worker with the vault off.
const noVaultApp = "wxnovault00000001"

// lockedBuffer collects a run's log output (every level) to search it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// vaultHarness: real JetStream, the simulator on a manual clock, a worker
// with the vault on for testApp.
type vaultHarness struct {
	*harness
	clock *wechatsim.ManualClock
	vault *vault.Vault
	logs  *lockedBuffer
	ring  *vault.Keyring
	log   *slog.Logger
}

func newVaultHarness(t *testing.T) *vaultHarness {
	t.Helper()
	clock := wechatsim.NewManualClock(time.Now())
	logs := &lockedBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := &harness{t: t, env: brokertest.Start(t), sim: wechatsim.New(wechatsim.WithClock(clock), wechatsim.WithLogger(log))}
	h.sim.AddApp(testApp, testSecret)
	h.sim.AddApp(noVaultApp, testSecret)
	srv := httptest.NewServer(h.sim)
	t.Cleanup(srv.Close)
	var err error
	if h.wc, err = wechat.NewClient(wechat.Config{BaseURL: srv.URL, Timeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	h.holder = newFakeHolder(t, h.env, h.wc)
	h.holder.rotate()
	line, err := vault.NewKeyLine("k1")
	if err != nil {
		t.Fatal(err)
	}
	ring, err := vault.ParseKeyring(line)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := vault.Open(ctx, h.env.JS, ring, vault.Options{Now: clock.Now, Owner: "test", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	vh := &vaultHarness{harness: h, clock: clock, vault: v, logs: logs, ring: ring, log: log}
	vh.startVaultWorker("w-vault", v)
	return vh
}

// startVaultWorker starts one more worker process (own connection, own
// Vault) with the vault on for testApp.
func (vh *vaultHarness) startVaultWorker(id string, v *vault.Vault) {
	vh.startWorker(id, func(c *worker.Config) {
		c.Apps = []worker.App{{AppID: testApp, Secret: testSecret, Vault: true}, {AppID: noVaultApp, Secret: testSecret}}
		c.Vault = v
		c.Logger = vh.log
		c.MaxDeliver = 4
	})
}

func (vh *vaultHarness) login(jobID, openid string) events.UserProfile {
	t := vh.t
	t.Helper()
	code, err := vh.sim.IssueCode(testApp, openid, wechatsim.ScopeUserInfo)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(events.OAuthCodeReceived{JobID: jobID, AppID: testApp, Code: code})
	vh.publishJob(events.SubjectOAuthCodeReceived, b, jobID, nil)
	return vh.profile(jobID)
}

func (vh *vaultHarness) userinfo(jobID, openid string) {
	b, _ := json.Marshal(events.OAuthUserInfo{JobID: jobID, AppID: testApp, OpenID: openid})
	vh.publishJob(events.SubjectOAuthUserInfo, b, jobID, nil)
}

// result waits for the one result of jobID.
func (vh *vaultHarness) result(jobID string) stored {
	t := vh.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons, err := vh.env.JS.OrderedConsumer(ctx, events.StreamResults, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			t.Fatalf("no result for %s: %v", jobID, err)
		}
		if m.Headers().Get(events.HeaderMsgID) == jobID {
			return stored{Subject: m.Subject(), Data: m.Data(), Header: m.Headers()}
		}
	}
}

func (vh *vaultHarness) profile(jobID string) events.UserProfile {
	vh.t.Helper()
	r := vh.result(jobID)
	if r.Subject != events.SubjectUserProfile {
		vh.t.Fatalf("%s: %s %s, want user.profile", jobID, r.Subject, r.Data)
	}
	return profileOf(vh.t, r)
}

func (vh *vaultHarness) failure(jobID string) events.UserProfileFailed {
	vh.t.Helper()
	r := vh.result(jobID)
	if r.Subject != events.SubjectUserProfileFailed {
		vh.t.Fatalf("%s: %s %s, want user.profile.failed", jobID, r.Subject, r.Data)
	}
	return failureOf(vh.t, r)
}

// secretsOf notes a user's current tokens (read through the vault) for the
// plaintext searches at the end.
func (vh *vaultHarness) secretsOf(openid string, into map[string]bool) {
	vh.t.Helper()
	rec, err := vh.vault.Get(context.Background(), testApp, openid)
	if err != nil {
		vh.t.Fatal(err)
	}
	into[rec.Tokens.AccessToken], into[rec.Tokens.RefreshToken] = true, true
}

// streamBytes reads every message of a stream with a plain consumer.
func streamBytes(t *testing.T, js jetstream.JetStream, stream string) [][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("%s: %v", stream, err)
		}
		var hdr bytes.Buffer
		for k, vs := range m.Headers() {
			for _, v := range vs {
				hdr.WriteString(k + ": " + v + "\n")
			}
		}
		out = append(out, append(append([]byte(m.Subject()+"\n"), hdr.Bytes()...), m.Data()...))
		if md, _ := m.Metadata(); md == nil || md.NumPending == 0 {
			return out
		}
	}
}

// The issue's scenario: a login, 3 hours later a fresh profile with one
// refresh for two concurrent jobs on two worker processes, 31 days later a reauthorize failure; a
// revoked grant; and no user token in clear in any stream or log.
func TestVaultLoginThen3hProfileOneRefreshThen31dReauthorize(t *testing.T) {
	vh := newVaultHarness(t)
	// A second worker process with its own connection and Vault: the two
	// concurrent jobs below may land on either.
	nc := vh.env.Conn(t)
	js2, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v2, err := vault.Open(ctx, js2, vh.ring, vault.Options{Now: vh.clock.Now, Owner: "test-2", Logger: vh.log})
	if err != nil {
		t.Fatal(err)
	}
	vh.startVaultWorker("w-vault-2", v2)
	secrets := map[string]bool{}
	if err := vh.sim.AddSNSUser(testApp, wechatsim.Follower{OpenID: "oAlice", UnionID: "uAlice", Nickname: "Alice"}); err != nil {
		t.Fatal(err)
	}
	p := vh.login("login-1", "oAlice")
	if p.Source != events.SourceSNSUserInfo || p.Nickname != "Alice" {
		t.Fatalf("login profile: %+v", p)
	}
	vh.secretsOf("oAlice", secrets)

	// 3 hours later (sim clock) Alice has a new nickname; her access token
	// has expired. Two jobs at once: one refresh.
	vh.clock.Advance(3 * time.Hour)
	if err := vh.sim.AddSNSUser(testApp, wechatsim.Follower{OpenID: "oAlice", UnionID: "uAlice", Nickname: "Alice 2"}); err != nil {
		t.Fatal(err)
	}
	vh.sim.ResetStats()
	vh.userinfo("refresh-a", "oAlice")
	vh.userinfo("refresh-b", "oAlice")
	for _, id := range []string{"refresh-a", "refresh-b"} {
		p := vh.profile(id)
		if p.Source != events.SourceSNSUserInfo || p.Nickname != "Alice 2" || p.OpenID != "oAlice" || p.UnionID != "uAlice" || p.Scope != wechatsim.ScopeUserInfo {
			t.Fatalf("%s: %+v", id, p)
		}
	}
	st := vh.sim.Stats()
	if n := st.CallCount(wechat.PathOAuthRefresh, testApp); n != 1 {
		t.Fatalf("%d refresh_token calls for two jobs, want 1", n)
	}
	if n := st.TotalCalls(wechat.PathSNSUserInfo); n != 2 {
		t.Fatalf("%d sns/userinfo calls, want 2", n)
	}
	vh.secretsOf("oAlice", secrets)

	// A revoked grant: WeChat refuses the refresh (40030), the user must
	// authorize again, and the dead record is deleted.
	if err := vh.sim.AddSNSUser(testApp, wechatsim.Follower{OpenID: "oBob", Nickname: "Bob"}); err != nil {
		t.Fatal(err)
	}
	vh.login("login-bob", "oBob")
	vh.secretsOf("oBob", secrets)
	if _, err := vh.sim.RevokeGrant(testApp, "oBob", wechatsim.GrantRevoked); err != nil {
		t.Fatal(err)
	}
	vh.clock.Advance(3 * time.Hour)
	vh.userinfo("bob-revoked", "oBob")
	f := vh.failure("bob-revoked")
	if f.Error.Kind != events.KindReauthorize || f.Error.Retryable || f.Error.ErrCode != wechat.CodeInvalidRefresh {
		t.Fatalf("revoked grant: %+v", f.Error)
	}
	if _, err := vh.vault.Get(context.Background(), testApp, "oBob"); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("revoked user's record: %v, want deleted", err)
	}

	// 31 days after the login: the refresh_token has expired.
	vh.clock.Advance(31*24*time.Hour - 6*time.Hour)
	vh.userinfo("refresh-31d", "oAlice")
	f = vh.failure("refresh-31d")
	if f.Error.Kind != events.KindReauthorize || f.Error.Retryable || f.JobSubject != events.SubjectOAuthUserInfo {
		t.Fatalf("31 days later: %+v", f)
	}
	// A user who never logged in: the same failure.
	vh.userinfo("nobody", "oNobody")
	if f := vh.failure("nobody"); f.Error.Kind != events.KindReauthorize || f.Error.Retryable {
		t.Fatalf("no record: %+v", f.Error)
	}

	// No user token in clear anywhere: the vault's raw stream, the other
	// streams, and every log line of the run.
	if len(secrets) != 5 { // Alice's refreshed access token is new, her refresh token the same
		t.Fatalf("%d distinct secrets noted, want 5", len(secrets))
	}
	for _, stream := range []string{"KV_" + events.BucketVault, "KV_" + events.BucketOAuth, events.StreamResults, events.StreamDeadLetters, events.StreamJobs} {
		for _, m := range streamBytes(t, vh.env.JS, stream) {
			for s := range secrets {
				if bytes.Contains(m, []byte(s)) {
					t.Fatalf("a user token in clear in stream %s: %q", stream, m)
				}
			}
		}
	}
	logs := vh.logs.Bytes()
	if !bytes.Contains(logs, []byte("user token refreshed")) {
		t.Fatalf("the log does not show the refresh; is it captured? %d bytes", len(logs))
	}
	for s := range secrets {
		if bytes.Contains(logs, []byte(s)) {
			t.Fatal("a user token in clear in the logs")
		}
	}
}

// When /sns/userinfo fails transiently right after a good exchange, the job
// comes back later and uses the stored token: a full profile, not the
// identity only, and the code exchanged once.
func TestVaultExchangeRetriesUserInfoWithStoredToken(t *testing.T) {
	vh := newVaultHarness(t)
	if err := vh.sim.AddSNSUser(testApp, wechatsim.Follower{OpenID: "oCarol", Nickname: "Carol"}); err != nil {
		t.Fatal(err)
	}
	if err := vh.sim.AddFault(wechatsim.Fault{Path: wechat.PathSNSUserInfo, ErrCode: -1}); err != nil {
		t.Fatal(err)
	}
	// Clear the fault once the job has given up on this delivery and
	// marked the exchange pending.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kv, err := vh.env.JS.KeyValue(ctx, events.BucketOAuth)
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	code, err := vh.sim.IssueCode(testApp, "oCarol", wechatsim.ScopeUserInfo)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(events.OAuthCodeReceived{JobID: "login-carol", AppID: testApp, Code: code})
	vh.publishJob(events.SubjectOAuthCodeReceived, b, "login-carol", nil)
	for pending := false; !pending; {
		select {
		case e := <-w.Updates():
			if e != nil && bytes.Contains(e.Value(), []byte(`"state":"userinfo_pending"`)) {
				pending = true
			}
		case <-ctx.Done():
			t.Fatal("the exchange never became userinfo_pending")
		}
	}
	vh.sim.ClearFaults()
	p := vh.profile("login-carol")
	if p.Source != events.SourceSNSUserInfo || p.Nickname != "Carol" {
		t.Fatalf("after the retry: %+v, want the sns.userinfo profile", p)
	}
	if n := vh.sim.Stats().CallCount(wechat.PathOAuthToken, testApp); n != 1 {
		t.Fatalf("code exchanged %d times", n)
	}
}

// The user must authorize again after a snsapi_base login or a password
// change (42007); a job for an app without the vault, and a malformed job,
// end like any bad job: one failure and a dead letter.
func TestVaultUserInfoFailures(t *testing.T) {
	vh := newVaultHarness(t)
	dead := vh.follow(events.StreamDeadLetters)

	code, err := vh.sim.IssueCode(testApp, "oBase", wechatsim.ScopeBase)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(events.OAuthCodeReceived{JobID: "login-base", AppID: testApp, Code: code})
	vh.publishJob(events.SubjectOAuthCodeReceived, b, "login-base", nil)
	if p := vh.profile("login-base"); p.Source != events.SourceSNSOAuth2 {
		t.Fatalf("snsapi_base login: %+v", p)
	}
	vh.userinfo("base-userinfo", "oBase")
	if f := vh.failure("base-userinfo"); f.Error.Kind != events.KindReauthorize || f.Error.Retryable {
		t.Fatalf("snsapi_base grant: %+v", f.Error)
	}

	if err := vh.sim.AddSNSUser(testApp, wechatsim.Follower{OpenID: "oDave", Nickname: "Dave"}); err != nil {
		t.Fatal(err)
	}
	vh.login("login-dave", "oDave")
	if _, err := vh.sim.RevokeGrant(testApp, "oDave", wechatsim.GrantReset); err != nil {
		t.Fatal(err)
	}
	// Dave's token is unexpired by our clock; WeChat answers 42007 to it
	// and to the refresh.
	vh.userinfo("dave-reset", "oDave")
	if f := vh.failure("dave-reset"); f.Error.Kind != events.KindReauthorize || f.Error.Retryable || f.Error.ErrCode != wechat.CodeTokenException {
		t.Fatalf("42007: %+v", f.Error)
	}

	b, _ = json.Marshal(events.OAuthUserInfo{JobID: "no-vault", AppID: noVaultApp, OpenID: "oX"})
	vh.publishJob(events.SubjectOAuthUserInfo, b, "no-vault", nil)
	if f := vh.failure("no-vault"); f.Error.Kind != events.KindConfig || f.Error.Retryable || f.JobSubject != events.SubjectOAuthUserInfo {
		t.Fatalf("app without the vault: %+v", f)
	}
	vh.publishJob(events.SubjectOAuthUserInfo, []byte(`{"job_id":"bad-userinfo","appid":"`+testApp+`","openid":"oX","access_token":"sneaky"}`), "bad-userinfo", nil)
	if f := vh.failure("bad-userinfo"); f.Error.Kind != events.KindInvalidJob || !strings.Contains(f.Error.ErrMsg, "/access_token: unknown property") {
		t.Fatalf("bad job: %+v", f.Error)
	}
	dead.waitIDs(t, 2, 10*time.Second)
	for _, id := range []string{"no-vault", "bad-userinfo"} {
		if got := dead.get(id); len(got) != 1 || got[0].Subject != "deadletter."+events.SubjectOAuthUserInfo {
			t.Fatalf("dead letters of %s: %+v", id, got)
		}
	}
}

// A silent snsapi_base login of a user who granted snsapi_userinfo keeps
// that grant in the vault, so oauth.userinfo still works; a user with a
// base grant only is told to authorize again without a refresh being
// spent on the grant first.
func TestVaultBaseLoginKeepsTheUserInfoGrant(t *testing.T) {
	vh := newVaultHarness(t)
	if err := vh.sim.AddSNSUser(testApp, wechatsim.Follower{OpenID: "oErin", Nickname: "Erin"}); err != nil {
		t.Fatal(err)
	}
	vh.login("login-erin", "oErin")
	code, err := vh.sim.IssueCode(testApp, "oErin", wechatsim.ScopeBase)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(events.OAuthCodeReceived{JobID: "login-erin-base", AppID: testApp, Code: code})
	vh.publishJob(events.SubjectOAuthCodeReceived, b, "login-erin-base", nil)
	if p := vh.profile("login-erin-base"); p.Source != events.SourceSNSOAuth2 || p.Scope != wechatsim.ScopeBase {
		t.Fatalf("snsapi_base login: %+v", p)
	}
	rec, err := vh.vault.Get(context.Background(), testApp, "oErin")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Tokens.Scope != wechatsim.ScopeUserInfo {
		t.Fatalf("vault record scope %q after the base login, want the userinfo grant kept", rec.Tokens.Scope)
	}
	vh.userinfo("erin-userinfo", "oErin")
	if p := vh.profile("erin-userinfo"); p.Source != events.SourceSNSUserInfo || p.Nickname != "Erin" {
		t.Fatalf("oauth.userinfo after the base login: %+v", p)
	}

	// A base grant only, expired by now: reauthorize, and no refresh.
	code, err = vh.sim.IssueCode(testApp, "oFrank", wechatsim.ScopeBase)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(events.OAuthCodeReceived{JobID: "login-frank", AppID: testApp, Code: code})
	vh.publishJob(events.SubjectOAuthCodeReceived, b, "login-frank", nil)
	vh.profile("login-frank")
	vh.clock.Advance(3 * time.Hour)
	vh.sim.ResetStats()
	vh.userinfo("frank-userinfo", "oFrank")
	if f := vh.failure("frank-userinfo"); f.Error.Kind != events.KindReauthorize || f.Error.Retryable {
		t.Fatalf("base grant: %+v", f.Error)
	}
	if n := vh.sim.Stats().CallCount(wechat.PathOAuthRefresh, testApp); n != 0 {
		t.Fatalf("%d refresh_token calls for a base grant, want 0", n)
	}
}
