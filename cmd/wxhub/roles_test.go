package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat/wechatsim"
)

// TestProductionRoles runs `wxhub holder`, `wxhub worker` and `wxhub
// gateway` as separate processes against a NATS server and the
// simulator, serves a lookup and a call through the gateway, and stops
// them with SIGTERM (exit status 0). Both layouts: one account (as `wxhub
// run`'s), and the shipped accounts layout (deploy/nats/accounts.inc),
// where each role logs in as its own user with --nats-accounts and
// reaches the other accounts' streams through its imports only.
func TestProductionRoles(t *testing.T) {
	bin := wxhubBinary(t)
	for _, layout := range []struct {
		name string
		nats func(t *testing.T) string
		env  func(user string) []string // a process's NATS settings as the user
	}{
		{"one account", func(t *testing.T) string { return brokertest.Start(t).URL }, func(string) []string { return nil }},
		{"accounts layout", shippedAccountsNATS, func(user string) []string {
			return []string{"WXHUB_NATS_ACCOUNTS=true", "WXHUB_NATS_USER=" + user, "WXHUB_NATS_PASSWORD=" + user + "-demo-password"}
		}},
	} {
		t.Run(layout.name, func(t *testing.T) {
			t.Parallel()
			productionRoles(t, bin, layout.nats(t), layout.env)
		})
	}
}

// shippedAccountsNATS starts a server with the shipped accounts and users
// of deploy/nats (one node, demo passwords) and provisions it as the
// admin, as an operator would with `wxhub provision --nats-accounts`.
func shippedAccountsNATS(t *testing.T) string {
	t.Helper()
	inc, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nats", "accounts.inc"))
	if err != nil {
		t.Fatal(err)
	}
	// The demo passwords in clear instead of their bcrypt hashes: each
	// login checks a hash, and under -race on a busy machine that costs
	// more than a client's connect timeout.
	url := brokertest.StartConfig(t, "listen: 127.0.0.1:-1\nmax_payload: 1MB\n"+string(inc), func(o *server.Options) {
		for _, u := range o.Users {
			u.Password = u.Username + "-demo-password"
		}
	})
	cmd := exec.Command(wxhubBinary(t), "provision", "--nats-url", url, "--nats-accounts", "--timeout", "30s")
	cmd.Env = append(os.Environ(), "WXHUB_NATS_USER=admin", "WXHUB_NATS_PASSWORD=admin-demo-password")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("wxhub provision --nats-accounts: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "NATS login uses the demo password") || strings.Contains(string(out), "admin-demo-password") {
		t.Errorf("wxhub provision as admin with its demo password: want a warning, without the password:\n%s", out)
	}
	return url
}

func productionRoles(t *testing.T, bin, natsURL string, natsEnv func(user string) []string) {
	sim := wechatsim.New()
	sim.AddApp("wxroles", "roles-secret")
	if err := sim.AddFollower("wxroles", wechatsim.Follower{OpenID: "oRoles"}); err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(sim)
	defer api.Close()

	start := func(role string, extra ...string) (*exec.Cmd, *lineWaiter, chan error, *wxhubtest.Buffer) {
		args := append([]string{role, "--nats-url", natsURL, "--wechat-base-url", api.URL,
			"--http-listen", "127.0.0.1:0", "--app", "appid=wxroles", "--log-format", "json"}, extra...)
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "WXHUB_SECRET_WXROLES=roles-secret", "WXHUB_CLIENT_KEY_SHOP=roles-client-key-0123")
		cmd.Env = append(cmd.Env, natsEnv(role)...)
		stderr, _ := cmd.StderrPipe()
		log := &wxhubtest.Buffer{}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w := newLineWaiter(stderr, log)
		done := make(chan error, 1)
		go func() { done <- w.waitCmd(cmd) }()
		t.Cleanup(func() { cmd.Process.Kill() })
		return cmd, w, done, log
	}
	holder, holderLog, holderDone, holderBuf := start("holder")
	holderLog.wait(t, regexp.MustCompile(`"msg":"token refreshed"`), 30*time.Second)
	worker, workerLog, workerDone, workerBuf := start("worker", "--concurrency", "4")
	workerLog.wait(t, regexp.MustCompile(`"msg":"worker running"`), 30*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lookup := exec.CommandContext(ctx, bin, "lookup", "--nats-url", natsURL, "--appid", "wxroles", "--openid", "oRoles")
	lookup.Env = append(os.Environ(), natsEnv("admin")...)
	out, err := lookup.Output()
	if err != nil {
		t.Fatalf("lookup: %v %s", err, out)
	}
	var p map[string]any
	if err := json.Unmarshal(out, &p); err != nil || p["openid"] != "oRoles" {
		t.Fatalf("profile %s: %v", out, err)
	}
	// The gateway as its own process: an SDK's token request and a call.
	gateway, gatewayLog, gatewayDone, gatewayBuf := start("gateway", "--gateway-listen", "127.0.0.1:0", "--client", "name=shop,appids=wxroles")
	gwURL := gatewayLog.wait(t, regexp.MustCompile(`"msg":"gateway serving".*"url":"(http://[^"]+)"`), 30*time.Second)[1]
	resp, err := http.Get(gwURL + "/cgi-bin/token?grant_type=client_credential&appid=wxroles&secret=roles-client-key-0123")
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if !strings.HasPrefix(tok.AccessToken, "wxh1_") {
		t.Fatalf("gateway token answer: %+v", tok)
	}
	resp, err = http.Get(gwURL + "/cgi-bin/user/info?access_token=" + tok.AccessToken + "&openid=oRoles")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"openid":"oRoles"`) {
		t.Fatalf("user/info through the gateway process: %s", body)
	}

	for name, r := range map[string]struct {
		cmd  *exec.Cmd
		done chan error
		log  *wxhubtest.Buffer
	}{"worker": {worker, workerDone, workerBuf}, "holder": {holder, holderDone, holderBuf}, "gateway": {gateway, gatewayDone, gatewayBuf}} {
		if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("%s after SIGTERM: %v\n%s", name, err, r.log.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not stop within 30s of SIGTERM", name)
		}
		if strings.Contains(r.log.String(), "roles-secret") || strings.Contains(r.log.String(), "roles-client-key-0123") || strings.Contains(r.log.String(), "-demo-password") {
			t.Errorf("%s logged the AppSecret, a client key or its NATS password", name)
		}
		// A login with deploy/'s demo password is warned about, by user.
		warned := regexp.MustCompile(`"level":"WARN","msg":"NATS login uses the demo password[^"]*","nats_user":"` + name + `"`).MatchString(r.log.String())
		if demo := len(natsEnv(name)) > 0; warned != demo {
			t.Errorf("%s: warned of the demo NATS password %v, want %v:\n%s", name, warned, demo, r.log.String())
		}
		// One "role" per JSON line: duplicate keys break log pipelines.
		for line := range strings.Lines(r.log.String()) {
			if strings.Count(line, `"role":`) > 1 {
				t.Errorf("%s logged a key twice: %s", name, line)
				break
			}
		}
	}
}
