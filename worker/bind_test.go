package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/worker"
)

// TestRunOnlyBinds: a worker never creates or changes a consumer. Against
// durables provisioned with other settings it refuses to start and says
// how to provision; after Provision with its own settings it starts.
func TestRunOnlyBinds(t *testing.T) {
	env := brokertest.Start(t) // the default durables: ack_wait 60s, max_deliver 5
	cfg := worker.Config{Conn: env.Conn(t), Apps: []worker.App{{AppID: testApp, Secret: testSecret}},
		AckWait: 10 * time.Second, JobTimeout: 8 * time.Second, MaxDeliver: 3, Concurrency: 2, Logger: testLogger(t)}
	h := newHarness(t, 0)
	cfg.WeChat = h.wc
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = w.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "max_deliver 5") || !strings.Contains(err.Error(), "wxhub provision --ack-wait 10s --max-deliver 3") {
		t.Fatalf("Run against other durables: %v", err)
	}
	if err := worker.Provision(ctx, env.JS, cfg); err != nil {
		t.Fatal(err)
	}
	w, err = worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	wxhubtest.Eventually(t, 20*time.Second, "worker ready", w.Ready)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
