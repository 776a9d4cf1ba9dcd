package main

import (
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/holder"
	"github.com/wxhub/wxhub/internal/wxhubtest"
	"github.com/wxhub/wxhub/wechat"
	"github.com/wxhub/wxhub/wechat/wechatsim"
	"github.com/wxhub/wxhub/worker"
)

// publishedAgain is the note of a client command whose publish JetStream
// refused with 10158 and that published it again.
const publishedAgain = "is being stored by another publish of it right now"

// "Many lookups with one --job-id at the same moment, on a cluster of
// three": on a replicated WX_JOBS a publish that comes while another with
// the same Nats-Msg-Id is being stored is refused with JetStream error
// 10158 ("duplicate message id is in process"), not acked as a
// duplicate. Every run exits 0 with the job's one result, the refused
// ones too: they publish again, are acked as duplicates and wait for the
// result. A run still refused when its waits are used up (here: none)
// exits 1 saying that the job is being stored and a rerun is safe, not
// asking whether wxhub runs. Rounds of concurrent runs (a real holder
// and worker, the simulator) go on until at least one run was refused;
// most rounds have one.
func TestConcurrentLookupsOfOneJobOnAClusterOfThree(t *testing.T) {
	env := brokertest.StartReplicated(t)
	sim := wechatsim.New(wechatsim.WithLogger(slog.New(slog.DiscardHandler)))
	demo := sim.SeedDemo()
	api := httptest.NewServer(sim)
	t.Cleanup(api.Close)
	wc, err := wechat.NewClient(wechat.Config{BaseURL: api.URL, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	h, err := holder.New(holder.Config{Conn: env.Conn(t), WeChat: wc, ID: "race-holder",
		Apps: []holder.App{{AppID: demo.AppID, Secret: demo.Secret}}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	wxhubtest.Background(t, "holder", h.Run)
	w, err := worker.New(worker.Config{Conn: env.Conn(t), WeChat: wc, ID: "race-worker",
		Apps: []worker.App{{AppID: demo.AppID, Secret: demo.Secret}}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	wxhubtest.Background(t, "worker", w.Run)
	// The worker announces no readiness: its own state is polled.
	wxhubtest.Eventually(t, 30*time.Second, "the worker ready (the holder's token loaded)", w.Ready)

	type outcome struct {
		code           int
		stdout, stderr string
	}
	cli := cliAt(env.URL)
	const runs = 12
	// rounds runs rounds of concurrent lookups, each of a new job, until
	// check, given a round's outcomes, counts a refused run.
	rounds := func(t *testing.T, name string, check func(id string, out []outcome) (refused int)) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for round := 0; ; round++ {
			if time.Now().After(deadline) {
				t.Fatalf("no run refused with 10158 in %d rounds of %d concurrent lookups: the test provokes nothing", round, runs)
			}
			id := fmt.Sprintf("%s-%d", name, round)
			out := make([]outcome, runs)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range out {
				wg.Go(func() {
					<-start
					code, stdout, stderr := cli("lookup", "--appid", demo.AppID, "--openid", demo.OpenIDs[1], "--job-id", id, "--timeout", "30s")
					out[i] = outcome{code, stdout, stderr}
				})
			}
			close(start)
			wg.Wait()
			if n := check(id, out); n > 0 {
				t.Logf("round %d: %d of %d runs refused with 10158", round, n, runs)
				return
			}
		}
	}
	result := func(id string, o outcome, first string) bool {
		return o.code == exitOK && strings.Contains(o.stdout, `"job_id": "`+id+`"`) && (first == "" || o.stdout == first)
	}

	t.Run("published again, every run gets the result", func(t *testing.T) {
		rounds(t, "again", func(id string, out []outcome) (refused int) {
			for i, o := range out {
				if !result(id, o, out[0].stdout) {
					t.Fatalf("run %d of %d concurrent lookups of job %s: exit %d, want 0 and the job's one result\nstdout:\n%s\nstderr:\n%s\nrun 0's stdout:\n%s",
						i, runs, id, o.code, o.stdout, o.stderr, out[0].stdout)
				}
				if strings.Contains(o.stderr, publishedAgain) {
					refused++
				}
			}
			return refused
		})
	})

	t.Run("refused until the waits are used up, a clear error", func(t *testing.T) {
		saved := publishAgainWaits
		publishAgainWaits = nil // no publish again: the first 10158 is the last
		t.Cleanup(func() { publishAgainWaits = saved })
		rounds(t, "refused", func(id string, out []outcome) (refused int) {
			for i, o := range out {
				if result(id, o, "") {
					continue
				}
				if o.code != exitFailure || !strings.Contains(o.stderr, "job "+id+" was still being stored by another publish of it after 0s of publishing again") ||
					!strings.Contains(o.stderr, "running again with --job-id "+id+" is safe") || strings.Contains(o.stderr, "is wxhub running") {
					t.Fatalf("run %d of %d concurrent lookups of job %s: exit %d, want 0 and the result, or 1 saying the job is being stored\nstdout:\n%s\nstderr:\n%s",
						i, runs, id, o.code, o.stdout, o.stderr)
				}
				refused++
			}
			return refused
		})
	})
}
