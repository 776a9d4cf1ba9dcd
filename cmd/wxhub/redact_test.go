package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// TestNoNATSPasswordInOutput runs every role and client command with a
// password-bearing NATS URL (nats://user:password@host) against a NATS
// server that requires it, plus connections that fail (refused, malformed
// URL), and greps everything they print for the password.
func TestNoNATSPasswordInOutput(t *testing.T) {
	const user, password = "wxuser", "Pw-Do-Not-Print-7"
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), Username: user, Password: password, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	natsURL := strings.Replace(srv.ClientURL(), "nats://", "nats://"+user+":"+password+"@", 1)
	bin := wxhubBinary(t)
	sim := wechatsim.New()
	sim.AddApp("wxredact", "redact-secret")
	if err := sim.AddFollower("wxredact", wechatsim.Follower{OpenID: "oRedact"}); err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(sim)
	defer api.Close()
	env := append(os.Environ(), "WXHUB_SECRET_WXREDACT=redact-secret", "WXHUB_CLIENT_KEY_SHOP=redact-client-key-0123")

	var outputs []string
	check := func(what, out string) {
		t.Helper()
		outputs = append(outputs, out)
		if strings.Contains(out, password) {
			t.Errorf("%s printed the NATS password:\n%s", what, out)
		}
		if strings.Contains(out, "redact-client-key-0123") {
			t.Errorf("%s printed a gateway client key:\n%s", what, out)
		}
		if strings.Contains(out, "redact-secret") {
			t.Errorf("%s printed the AppSecret:\n%s", what, out)
		}
		for _, part := range []string{"Odd/Pw", "Odd,Pw", "Odd#Pw"} {
			if strings.Contains(out, part) {
				t.Errorf("%s printed a password that makes the URL invalid (%s):\n%s", what, part, out)
			}
		}
	}
	// Long-running roles: started, ready, stopped with SIGTERM.
	startRole := func(role string, ready *regexp.Regexp, extra ...string) func() {
		args := append([]string{role, "--nats-url", natsURL, "--wechat-base-url", api.URL,
			"--http-listen", "127.0.0.1:0", "--app", "appid=wxredact", "--log-format", "json", "--log-level", "debug"}, extra...)
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		stderr, _ := cmd.StderrPipe()
		var stdout wxhubtest.Buffer
		cmd.Stdout = &stdout
		log := &wxhubtest.Buffer{}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w := newLineWaiter(stderr, log)
		done := make(chan error, 1)
		go func() { done <- w.waitCmd(cmd) }()
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		w.wait(t, ready, 30*time.Second)
		return func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("%s did not stop", role)
			}
			check(role, log.String()+stdout.String())
		}
	}
	// Provisioning is the admin's act; it must not print the password
	// either.
	out, err := exec.Command(bin, "provision", "--nats-url", natsURL).CombinedOutput()
	if err != nil {
		t.Fatalf("wxhub provision: %v\n%s", err, out)
	}
	check("provision", string(out))
	stopHolder := startRole("holder", regexp.MustCompile(`"msg":"token refreshed"`))
	stopWorker := startRole("worker", regexp.MustCompile(`"msg":"worker running"`), "--concurrency", "2")
	stopGateway := startRole("gateway", regexp.MustCompile(`"msg":"gateway serving"`), "--gateway-listen", "127.0.0.1:0", "--client", "name=shop,appids=wxredact")

	// Client commands, succeeding and failing.
	run := func(args ...string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		check(strings.Join(args[:1], " "), fmt.Sprintf("%s\n(exit: %v)", out.String(), err))
	}
	run("lookup", "--nats-url", natsURL, "--appid", "wxredact", "--openid", "oRedact")
	run("status", "--nats-url", natsURL)
	run("status", "--nats-url", natsURL, "--json")
	run("token", "get", "--nats-url", natsURL, "--appid", "wxredact")
	run("token", "invalidate", "--nats-url", natsURL, "--appid", "wxredact", "--timeout", "3s")
	refused := "nats://" + user + ":" + password + "@127.0.0.1:1"
	run("status", "--nats-url", refused)
	run("lookup", "--nats-url", refused, "--appid", "wxredact", "--openid", "oRedact")
	run("status", "--nats-url", "nats://"+user+":"+password+"@bad host:4222")
	// Passwords that make the URL invalid, in a list too: masked anyway.
	for _, odd := range []string{"Odd/Pw-1", "Odd,Pw-2", "Odd#Pw-3"} {
		run("status", "--nats-url", "nats://"+user+":"+odd+"@127.0.0.1:1")
		run("lookup", "--nats-url", "nats://a:1,nats://"+user+":"+odd+"@127.0.0.1:1", "--appid", "wxredact", "--openid", "oRedact")
	}
	run("holder", "--nats-url", refused, "--wechat-base-url", api.URL, "--app", "appid=wxredact", "--http-listen", "127.0.0.1:0", "--nats-connect-timeout", "0")
	run("worker", "--nats-url", refused, "--wechat-base-url", api.URL, "--app", "appid=wxredact", "--http-listen", "127.0.0.1:0", "--nats-connect-timeout", "0")
	run("gateway", "--nats-url", refused, "--wechat-base-url", api.URL, "--app", "appid=wxredact", "--http-listen", "127.0.0.1:0",
		"--gateway-listen", "127.0.0.1:0", "--client", "name=shop,appids=wxredact", "--nats-connect-timeout", "0")
	run("status", "-h")
	stopGateway()
	stopWorker()
	stopHolder()
	if all := strings.Join(outputs, "\n"); !strings.Contains(all, user+":xxxxx@") {
		t.Errorf("no output named the NATS URL redacted (user:xxxxx@): the test may not exercise URL printing\n%s", all)
	}
}
