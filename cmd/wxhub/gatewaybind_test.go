package main

import (
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/broker"
)

// The gateway only binds: on a NATS nobody provisioned it exits, naming
// what is missing and the command that makes it; once `wxhub provision`
// ran, the same command binds and serves.
func TestGatewayBindsOnlyToWhatWasProvisioned(t *testing.T) {
	t.Parallel()
	bin := wxhubBinary(t)
	srv, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	args := []string{"gateway", "--nats-url", srv.ClientURL(), "--nats-connect-timeout", "1s",
		"--http-listen", "", "--gateway-listen", "127.0.0.1:0", "--app", "appid=wxbind", "--client", "name=shop,appids=wxbind"}
	gateway := func() *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "WXHUB_CLIENT_KEY_SHOP=shop-key-0123456789abcdef")
		return cmd
	}

	out, err := gateway().CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitFailure {
		t.Fatalf("gateway on an unprovisioned NATS: %v, want exit %d\n%s", err, exitFailure, out)
	}
	for _, want := range []string{"not provisioned", "bucket wx_tokens", "wxhub provision"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("gateway's refusal does not name %q:\n%s", want, out)
		}
	}

	if out, err := exec.Command(bin, "provision", "--nats-url", srv.ClientURL()).CombinedOutput(); err != nil {
		t.Fatalf("wxhub provision: %v\n%s", err, out)
	}
	cmd := gateway()
	stderr, _ := cmd.StderrPipe()
	cmd.Stdout = nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	log := newLineWaiter(stderr, nil)
	done := make(chan error, 1)
	go func() { done <- log.waitCmd(cmd) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	log.wait(t, regexp.MustCompile(`gateway serving`), 30*time.Second)
}
