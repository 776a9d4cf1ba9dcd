package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestExitStatusForUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		code int
		want string // in stderr
	}{
		{"no command", nil, nil, exitUsage, "usage"},
		{"help", []string{"help"}, nil, exitOK, "commands"},
		{"unknown command", []string{"frobnicate"}, nil, exitUsage, "unknown command"},
		{"lookup without openid", []string{"lookup", "--appid", "wxa"}, nil, exitUsage, "--openid"},
		{"oauth without code", []string{"oauth", "--appid", "wxa"}, nil, exitUsage, "--code"},
		{"result with a job id with a space", []string{"result", "--job-id", "ops ok", "--nats-url", "nats://127.0.0.1:1"}, nil, exitUsage, "wxhub result: --job-id: must match ^[A-Za-z0-9._:-]{1,128}$"},
		{"result with a job id too long", []string{"result", "--job-id", strings.Repeat("j", 129), "--nats-url", "nats://127.0.0.1:1"}, nil, exitUsage, "--job-id: must match"},
		{"lookup with an openid with a space", []string{"lookup", "--appid", "wxa", "--openid", "o 1", "--nats-url", "nats://127.0.0.1:1"}, nil, exitUsage, "not a valid user.lookup job: --openid: must match ^[A-Za-z0-9_-]{1,64}$"},
		{"lookup with a bad job id and lang", []string{"lookup", "--appid", "wxa", "--openid", "o1", "--job-id", "a/b", "--lang", "fr", "--nats-url", "nats://127.0.0.1:1"}, nil, exitUsage, "--job-id: must match ^[A-Za-z0-9._:-]{1,128}$; --lang: must be one of zh_CN, zh_TW, en"},
		{"oauth with a bad state", []string{"oauth", "--appid", "wxa", "--code", "C", "--state", "a b", "--nats-url", "nats://127.0.0.1:1"}, nil, exitUsage, "not a valid oauth.code.received job: --state: must match"},
		{"userinfo with a bad appid", []string{"userinfo", "--appid", "wx a", "--openid", "o1", "--nats-url", "nats://127.0.0.1:1"}, nil, exitUsage, "not a valid oauth.userinfo job: --appid: must match"},
		{"token without verb", []string{"token"}, nil, exitUsage, "token get"},
		{"token get without appid", []string{"token", "get"}, nil, exitUsage, "--appid"},
		{"unknown flag", []string{"status", "--bogus"}, nil, exitUsage, "bogus"},
		{"bad env", []string{"worker"}, map[string]string{"WXHUB_CONCURRENCY": "many"}, exitUsage, "WXHUB_CONCURRENCY"},
		{"invalid config names the field", []string{"worker", "--concurrency", "0", "--app", "appid=wxa,secret=s"}, nil, exitUsage, "worker.concurrency"},
		{"worker without apps", []string{"worker"}, nil, exitUsage, "apps"},
		{"holder app without secret", []string{"holder", "--app", "appid=wxa"}, nil, exitUsage, "apps[0].secret"},
		{"empty nats-url", []string{"lookup", "--nats-url", "", "--appid", "wxa", "--openid", "o"}, nil, exitUsage, "nats-url: empty"},
		{"empty nats-url for a role", []string{"worker", "--nats-url", "", "--app", "appid=wxa"}, nil, exitUsage, "nats-url: empty"},
		{"run on a public address", []string{"run", "--nats-listen", "0.0.0.0:0", "--data-dir", "unused"}, nil, exitUsage, "not a loopback address"},
		{"run on a LAN address", []string{"run", "--nats-listen", "192.168.1.10:4222", "--data-dir", "unused"}, nil, exitUsage, "no authentication"},
		{"run with the accounts layout", []string{"run", "--nats-accounts", "--data-dir", "unused"}, nil, exitUsage, "has no accounts"},
		{"run with the accounts layout by env", []string{"run", "--data-dir", "unused"}, map[string]string{"WXHUB_NATS_ACCOUNTS": "true"}, exitUsage, "has no accounts"},
		{"provision with zero replicas", []string{"provision", "--replicas", "0"}, nil, exitUsage, "replicas"},
		{"provision with zero replicas by env", []string{"provision"}, map[string]string{"WXHUB_REPLICAS": "0"}, exitUsage, "replicas"},
		{"provision with a duplicate window within ack-wait", []string{"provision", "--duplicate-window", "1m", "--ack-wait", "1m"}, nil, exitUsage, "duplicate-window"},
		{"provision takes no --concurrency (a worker's setting)", []string{"provision", "--concurrency", "8"}, nil, exitUsage, "-concurrency"},
		{"holder takes no --replicas (only provision creates streams)", []string{"holder", "--replicas", "3"}, nil, exitUsage, "-replicas"},
		{"worker takes no --replicas", []string{"worker", "--replicas", "3"}, nil, exitUsage, "-replicas"},
		{"gateway takes no --replicas", []string{"gateway", "--replicas", "3"}, nil, exitUsage, "-replicas"},
		{"holder takes no --duplicate-window (it never reads the window)", []string{"holder", "--duplicate-window", "20m"}, nil, exitUsage, "-duplicate-window"},
		{"gateway takes no --duplicate-window", []string{"gateway", "--duplicate-window", "20m"}, nil, exitUsage, "-duplicate-window"},
		{"a worker's --duplicate-window is checked against its ack wait", []string{"worker", "--duplicate-window", "1m", "--ack-wait", "1m", "--app", "appid=wxa"}, nil, exitUsage, "duplicate-window (1m0s) must be longer than ack-wait (1m0s)"},
		{"provision warns of a duplicate window within the deliveries' span", []string{"provision", "--duplicate-window", "2m", "--ack-wait", "1m", "--nats-url", "nats://127.0.0.1:1"}, nil, 1, "warning: duplicate-window (2m0s) is not longer than max-deliver × (ack-wait + 30 s) = 7m30s"},
		{"run checks --duplicate-window too", []string{"run", "--duplicate-window", "1m", "--ack-wait", "2m", "--data-dir", "unused"}, nil, exitUsage, "must be longer than ack-wait"},
		{"holder with the example Secret's placeholder AppSecret", []string{"holder", "--app", "appid=wxa"}, map[string]string{"WXHUB_SECRET_WXA": "REPLACE-WITH-THE-APPSECRET"}, exitUsage, "apps[0].secret: the AppSecret of wxa is still a REPLACE-WITH-... placeholder"},
		{"gateway with the example Secret's placeholder client key", []string{"gateway", "--app", "appid=wxa", "--client", "name=shop,appids=*"}, map[string]string{"WXHUB_CLIENT_KEY_SHOP": "REPLACE-WITH-THE-SHOP-CLIENT-KEY"}, exitUsage, "the key of client shop is still a REPLACE-WITH-... placeholder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			env := &cmdEnv{stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return tt.env[k] }}
			if got := run(context.Background(), env, tt.args); got != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", got, tt.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("stderr lacks %q:\n%s", tt.want, stderr.String())
			}
		})
	}
}
