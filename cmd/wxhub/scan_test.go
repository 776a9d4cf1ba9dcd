package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
)

// "100 scans of a cluster of three, 100 find what is stored": `wxhub
// result` without a done record to lead it and `wxhub deadletters list`
// read with an ordered consumer, made anew for every fetch on one of the
// stream's three servers; a fetch that comes before the command's own
// server heard of the consumer finds no responders and is asked again,
// instead of failing the command.
func TestScansOnAClusterOfThreeFindWhatIsStored(t *testing.T) {
	env := brokertest.StartReplicated(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	subs := events.NewSubjects("")
	result := nats.NewMsg(subs.StoredUserProfile) // stored, but no done record
	result.Header.Set(events.HeaderMsgID, "scan-result")
	result.Data = []byte(`{"job_id":"scan-result"}`)
	dead := nats.NewMsg(subs.StoredDeadLetter(events.SubjectUserLookup))
	dead.Header.Set(events.HeaderMsgID, "scan-dead")
	dead.Header.Set(events.HeaderDeadLetterReason, "invalid_job: not JSON")
	dead.Data = []byte(`{"job_id":"scan-dead",`)
	for _, m := range []*nats.Msg{result, dead} {
		if _, err := env.JS.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	view := broker.LocalJetStreams(env.JS, grants.Provision)
	for i := range 100 {
		m, err := findResult(ctx, view, subs, "scan-result", time.Hour)
		if err != nil || m == nil {
			t.Fatalf("scan %d for a stored result: %v, %v", i, m, err)
		}
		var out, errOut bytes.Buffer
		cenv := &cmdEnv{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }}
		if code := run(ctx, cenv, []string{"deadletters", "list", "--json", "--nats-url", env.URL}); code != exitOK || !strings.Contains(out.String(), `"job_id":"scan-dead"`) {
			t.Fatalf("deadletters list %d: exit %d\n%s\n%s", i, code, out.String(), errOut.String())
		}
	}
}
