package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// TestSimPrintsTheDemoSecretsFingerprintAndWhereItIs: `wxhub sim` prints
// the demo app's AppSecret only as its fingerprint, with the file it wrote
// the secret to (mode 0600), and the `wxhub run` command it prints, pasted
// (with free ports), serves the demo app: a lookup of a demo follower
// gets its profile. Neither process prints the secret.
func TestSimPrintsTheDemoSecretsFingerprintAndWhereItIs(t *testing.T) {
	bin := wxhubBinary(t)
	secretFile := filepath.Join(t.TempDir(), "state", "sim-demo-app.secret")
	sim := exec.Command(bin, "sim", "--listen", "127.0.0.1:0", "--demo-secret-file", secretFile)
	stdout, _ := sim.StdoutPipe()
	var simOut wxhubtest.Buffer
	sim.Stderr = &simOut
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	out := newLineWaiter(stdout, &simOut)
	exited := make(chan error, 1)
	go func() { exited <- out.waitCmd(sim) }()
	t.Cleanup(func() { _ = sim.Process.Kill() })

	fp := out.wait(t, regexp.MustCompile(`^demo app: appid=`+wechatsim.DemoAppID+` secret fingerprint (\S+) \(the secret is in (.+)\)$`), 30*time.Second)
	if fp[1] != wechat.Fingerprint(wechatsim.DemoSecret) || fp[2] != secretFile {
		t.Fatalf("fingerprint %s in %s, want %s in %s", fp[1], fp[2], wechat.Fingerprint(wechatsim.DemoSecret), secretFile)
	}
	if b, err := os.ReadFile(secretFile); err != nil || strings.TrimSpace(string(b)) != wechatsim.DemoSecret {
		t.Fatalf("secret file: %v %q", err, b)
	}
	if fi, err := os.Stat(secretFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode: %v %v", err, fi.Mode())
	}
	cmdLine := out.wait(t, regexp.MustCompile(`^  \./bin/wxhub run --app '(appid=`+wechatsim.DemoAppID+`,secret_file=[^']+)' --wechat-base-url (http://\S+)$`), 5*time.Second)

	run := wxhubtest.StartRun(t, "--app", cmdLine[1], "--wechat-base-url", cmdLine[2])
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := exec.CommandContext(ctx, bin, "lookup", "--nats-url", run.NATSURL, "--appid", wechatsim.DemoAppID,
		"--openid", "oDemo6_bmjrPTlm6_2sgVt7hMZOA", "--timeout", "45s").Output()
	var profile map[string]any
	if err != nil || json.Unmarshal(res, &profile) != nil || profile["openid"] != "oDemo6_bmjrPTlm6_2sgVt7hMZOA" {
		t.Fatalf("lookup through the printed command: %v\n%s\nwxhub run stderr:\n%s", err, res, run.Stderr())
	}
	if err := run.Stop(t, 60*time.Second); err != nil {
		t.Fatalf("wxhub run: %v", err)
	}
	_ = sim.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("wxhub sim did not stop")
	}
	for what, s := range map[string]string{"wxhub sim": simOut.String(), "wxhub run": run.Stdout() + run.Stderr()} {
		if strings.Contains(s, wechatsim.DemoSecret) {
			t.Errorf("%s printed the demo AppSecret:\n%s", what, s)
		}
	}
}

// TestRunWithTheDemoAppPrintsNoCredential: plain `wxhub run` (the
// simulator's demo app, the gateway's demo client), logging at debug,
// prints neither the demo AppSecret nor the demo client key (that key is
// named by its file).
func TestRunWithTheDemoAppPrintsNoCredential(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	run := wxhubtest.StartRun(t, "--data-dir", dataDir, "--log-level", "debug")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, wxhubBinary(t), "lookup", "--nats-url", run.NATSURL, "--appid", run.AppID, "--openid", run.OpenID).CombinedOutput(); err != nil {
		t.Fatalf("lookup: %v\n%s", err, out)
	}
	if err := run.Stop(t, 60*time.Second); err != nil {
		t.Fatalf("wxhub run: %v", err)
	}
	key, err := os.ReadFile(filepath.Join(dataDir, "gateway-demo-client.key"))
	if err != nil || len(strings.TrimSpace(string(key))) < 16 {
		t.Fatalf("demo client key: %v %q", err, key)
	}
	out := run.Stdout() + run.Stderr()
	if !strings.Contains(out, "secret_fp="+wechat.Fingerprint(wechatsim.DemoSecret)) {
		t.Errorf("the debug log does not name the demo secret by its fingerprint: the test may not see it logged\n%s", out)
	}
	for what, secret := range map[string]string{"the demo AppSecret": wechatsim.DemoSecret, "the demo client key": strings.TrimSpace(string(key))} {
		if strings.Contains(out, secret) {
			t.Errorf("wxhub run printed %s:\n%s", what, out)
		}
	}
}
