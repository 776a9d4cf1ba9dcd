package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers/vault"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// vaultRun is a `wxhub run` process with the vault on, against an
// in-process simulator on a manual clock; logs collects every line any
// wxhub process wrote.
type vaultRun struct {
	t       *testing.T
	bin     string
	dir     string
	keys    string
	simURL  string
	logs    *wxhubtest.Buffer
	cmd     *exec.Cmd
	exited  chan error
	natsURL string
}

const (
	vaultApp    = "wxvault000000001"
	vaultSecret = "vault-app-secret-0123456789abcdef"
)

func (r *vaultRun) start() {
	t := r.t
	t.Helper()
	cmd := exec.Command(r.bin, "run", "--nats-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0",
		"--data-dir", filepath.Join(r.dir, "data"), "--log-level", "debug", "--wechat-base-url", r.simURL,
		"--app", "appid="+vaultApp+",vault=on", "--vault-keys-file", r.keys)
	cmd.Env = append(os.Environ(), "WXHUB_SECRET_"+strings.ToUpper(vaultApp)+"="+vaultSecret)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = r.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.cmd, r.exited = cmd, make(chan error, 1)
	go func() { r.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	out := newLineWaiter(stdout, r.logs)
	r.natsURL = out.wait(t, regexp.MustCompile(`NATS: (nats://\S+)`), 60*time.Second)[1]
}

func (r *vaultRun) stop() {
	t := r.t
	t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.exited:
		if err != nil {
			t.Fatalf("wxhub run after SIGTERM: %v\n%s", err, r.logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("wxhub run did not stop")
	}
}

// kill ends wxhub run (and its NATS server) with SIGKILL: no clean stop.
func (r *vaultRun) kill() {
	r.t.Helper()
	if err := r.cmd.Process.Kill(); err != nil {
		r.t.Fatal(err)
	}
	select {
	case <-r.exited:
	case <-time.After(30 * time.Second):
		r.t.Fatal("wxhub run did not die")
	}
}

// wxhub runs a client command; it returns stdout and the exit status.
func (r *vaultRun) wxhub(args ...string) (string, int) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, r.logs
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	}
	r.t.Fatalf("wxhub %v: %v", args, err)
	return "", -1
}

func (r *vaultRun) job(args ...string) (map[string]any, int) {
	r.t.Helper()
	out, code := r.wxhub(append(args, "--nats-url", r.natsURL, "--appid", vaultApp, "--timeout", "45s")...)
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		r.t.Fatalf("wxhub %v printed %q (exit %d)\n%s", args, out, code, r.logs.String())
	}
	return m, code
}

func (r *vaultRun) appendKey(id string) {
	r.t.Helper()
	line, code := r.wxhub("vault", "keygen", "--id", id)
	if code != 0 {
		r.t.Fatalf("keygen: %d", code)
	}
	f, err := os.OpenFile(r.keys, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(line); err != nil {
		r.t.Fatal(err)
	}
}

// records reads every user record through the vault (to learn the
// tokens the plaintext search looks for) and the raw bucket stream.
func (r *vaultRun) records(openids ...string) (tokens []string, raw [][]byte, kids []string) {
	t := r.t
	t.Helper()
	nc, err := nats.Connect(r.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	keys, _ := os.ReadFile(r.keys)
	ring, err := vault.ParseKeyring(string(keys))
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(ctx, js, ring, vault.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range openids {
		rec, err := v.Get(ctx, vaultApp, o)
		if err != nil {
			t.Fatalf("record of %s: %v", o, err)
		}
		tokens = append(tokens, rec.Tokens.AccessToken, rec.Tokens.RefreshToken)
		kids = append(kids, rec.KeyID)
	}
	s, err := js.Stream(ctx, "KV_"+events.BucketVault)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		raw = append(raw, append([]byte(m.Subject()+" "), m.Data()...))
		if md, _ := m.Metadata(); md.NumPending == 0 {
			return tokens, raw, kids
		}
	}
}

// The issue's end-to-end run with real processes: logins, a restart of
// wxhub run (its embedded NATS server on file storage included), 3 hours
// later a fresh profile with one refresh_token call, key rotation with the
// old record readable and then re-encrypted, forgetting, 31 days later
// the reauthorize failure, and no user token in clear in the bucket's raw
// stream or in any log line of any process.
func TestVaultEndToEndWithRealProcesses(t *testing.T) {
	clock := wechatsim.NewManualClock(time.Now())
	sim := wechatsim.New(wechatsim.WithClock(clock), wechatsim.WithLogger(slog.New(slog.DiscardHandler)))
	sim.AddApp(vaultApp, vaultSecret)
	for _, u := range []wechatsim.Follower{{OpenID: "oAlice", Nickname: "Alice"}, {OpenID: "oBob", Nickname: "Bob"}} {
		if err := sim.AddSNSUser(vaultApp, u); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(sim)
	defer srv.Close()
	dir := t.TempDir()
	r := &vaultRun{t: t, bin: wxhubBinary(t), dir: dir, keys: filepath.Join(dir, "vault.keys"), simURL: srv.URL, logs: &wxhubtest.Buffer{}}
	r.appendKey("k1")
	r.start()

	for _, u := range []string{"oAlice", "oBob"} {
		code, err := sim.IssueCode(vaultApp, u, wechatsim.ScopeUserInfo)
		if err != nil {
			t.Fatal(err)
		}
		p, exit := r.job("oauth", "--code", code)
		if exit != 0 || p["source"] != events.SourceSNSUserInfo || p["openid"] != u {
			t.Fatalf("login %s: exit %d %v", u, exit, p)
		}
	}
	tokens, _, _ := r.records("oAlice", "oBob")

	// Restart every process: wxhub run and its NATS server (file storage),
	// killed with SIGKILL.
	r.kill()
	r.start()

	// 3 hours later (sim clock): a fresh profile, one refresh.
	clock.Advance(3 * time.Hour)
	if err := sim.AddSNSUser(vaultApp, wechatsim.Follower{OpenID: "oAlice", Nickname: "Alice 2"}); err != nil {
		t.Fatal(err)
	}
	sim.ResetStats()
	p, exit := r.job("userinfo", "--openid", "oAlice")
	if exit != 0 || p["source"] != events.SourceSNSUserInfo || p["nickname"] != "Alice 2" {
		t.Fatalf("userinfo 3h later: exit %d %v", exit, p)
	}
	if n := sim.Stats().CallCount(wechat.PathOAuthRefresh, vaultApp); n != 1 {
		t.Fatalf("%d refresh_token calls, want 1", n)
	}
	more, _, _ := r.records("oAlice")
	tokens = append(tokens, more...)

	// Rotation: k2 joins the ring; the workers restart with it; the old
	// record (Bob's, under k1) still reads; rotate re-encrypts it; then k1
	// leaves the ring and everything still reads.
	r.appendKey("k2")
	r.stop()
	r.start()
	if _, _, kids := r.records("oBob"); kids[0] != "k1" {
		t.Fatalf("Bob's record under %s before rotate, want k1", kids[0])
	}
	if p, exit := r.job("userinfo", "--openid", "oBob"); exit != 0 || p["nickname"] != "Bob" {
		t.Fatalf("old record under the new ring: exit %d %v", exit, p)
	}
	out, exit := r.wxhub("vault", "rotate", "--nats-url", r.natsURL, "--vault-keys-file", r.keys)
	if exit != 0 || !strings.Contains(out, `"retired_keys": [`) || !strings.Contains(out, `"k1"`) || !strings.Contains(out, `"late": 0`) {
		t.Fatalf("rotate: exit %d %s", exit, out)
	}
	if _, _, kids := r.records("oAlice", "oBob"); kids[0] != "k2" || kids[1] != "k2" {
		t.Fatalf("after rotate: keys %v, want k2", kids)
	}
	keys, _ := os.ReadFile(r.keys)
	if err := os.WriteFile(r.keys, []byte(strings.SplitN(string(keys), "\n", 2)[1]), 0o600); err != nil {
		t.Fatal(err)
	}
	r.stop()
	r.start()
	out, exit = r.wxhub("vault", "check", "--nats-url", r.natsURL, "--vault-keys-file", r.keys, "--wechat-base-url", r.simURL, "--appid", vaultApp, "--openid", "oBob")
	if exit != 0 || !strings.Contains(out, `"valid": true`) || !strings.Contains(out, `"kid": "k2"`) {
		t.Fatalf("vault check: exit %d %s", exit, out)
	}

	// A wrong key is a startup error, not an empty vault.
	r.stop()
	good, _ := os.ReadFile(r.keys)
	wrong, _ := vault.NewKeyLine("k2")
	if err := os.WriteFile(r.keys, []byte(wrong), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := exec.Command(r.bin, "run", "--nats-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0",
		"--data-dir", filepath.Join(dir, "data"), "--wechat-base-url", r.simURL, "--app", "appid="+vaultApp+",vault=on", "--vault-keys-file", r.keys)
	bad.Env = append(os.Environ(), "WXHUB_SECRET_"+strings.ToUpper(vaultApp)+"="+vaultSecret)
	var badErr bytes.Buffer
	bad.Stderr = &badErr
	err := bad.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(badErr.String(), `key "k2" does not decrypt its check record`) {
		t.Fatalf("run with a wrong key: %v\n%s", err, badErr.String())
	}
	r.logs.Write(badErr.Bytes())
	if err := os.WriteFile(r.keys, good, 0o600); err != nil {
		t.Fatal(err)
	}
	r.start()

	// Forgetting Bob: his next userinfo must ask for a new login.
	out, exit = r.wxhub("vault", "forget", "--nats-url", r.natsURL, "--vault-keys-file", r.keys, "--appid", vaultApp, "--openid", "oBob")
	if exit != 0 || !strings.Contains(out, `"existed": true`) {
		t.Fatalf("forget: exit %d %s", exit, out)
	}
	f, exit := r.job("userinfo", "--openid", "oBob")
	if fe, _ := f["error"].(map[string]any); exit != 1 || fe["kind"] != events.KindReauthorize || fe["retryable"] != false {
		t.Fatalf("forgotten user: exit %d %v", exit, f)
	}

	// No user token in clear in the vault's raw stream (read it now,
	// before the last record goes).
	_, raw, _ := r.records("oAlice")
	for _, m := range raw {
		for _, tok := range tokens {
			if bytes.Contains(m, []byte(tok)) {
				t.Fatalf("a user token in clear in the raw vault stream: %q", m)
			}
		}
	}

	// 31 days after the login: reauthorize.
	clock.Advance(31 * 24 * time.Hour)
	f, exit = r.job("userinfo", "--openid", "oAlice")
	if fe, _ := f["error"].(map[string]any); exit != 1 || fe["kind"] != events.KindReauthorize || fe["retryable"] != false {
		t.Fatalf("31 days later: exit %d %v", exit, f)
	}
	r.stop()

	logs := r.logs.String()
	if !strings.Contains(logs, "user token refreshed") {
		t.Fatalf("the logs do not show the refresh: are they captured?\n%s", logs)
	}
	for _, tok := range tokens {
		if strings.Contains(logs, tok) {
			t.Fatal("a user token in clear in a log line")
		}
	}
}
