package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
)

// A dead letter replayed longer ago than the jobs' duplicate window (the
// replay job's id is no longer in WX_JOBS' dedupe state) but whose done
// record still lives: `deadletters replay` prints the stored result and
// publishes nothing, instead of a job the worker would end silently at
// its done record.
func TestReplayOfAJobThatAlreadyRanPrintsItsStoredResult(t *testing.T) {
	env := brokertest.Start(t)
	subs := events.NewSubjects("")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	publish := func(subject, msgID string, data []byte, hdr map[string]string) uint64 {
		t.Helper()
		m := nats.NewMsg(subject)
		m.Data = data
		m.Header.Set(events.HeaderMsgID, msgID)
		for k, v := range hdr {
			m.Header.Set(k, v)
		}
		ack, err := env.JS.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	dlSeq := publish(subs.StoredDeadLetter(events.SubjectUserLookup), "old-1",
		[]byte(`{"job_id":"old-1","appid":"wxnotconfigured","openid":"o1"}`),
		map[string]string{events.HeaderDeadLetterReason: "config: unknown appid"})
	replayID := "old-1.replay-" + strconv.FormatUint(dlSeq, 10)
	// What the worker stored when it ran the replay job long ago.
	result, _ := json.Marshal(events.UserProfile{JobID: replayID, AppID: "wxnotconfigured", OpenID: "o1", Source: events.SourceUserInfo, CompletedAt: time.Now().UTC()})
	resSeq := publish(subs.StoredUserProfile, replayID, result, nil)
	done, err := env.JS.KeyValue(ctx, events.BucketDone)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(events.DoneRecord{JobID: replayID, JobSubject: events.SubjectUserLookup, ResultSubject: events.SubjectUserProfile, ResultSeq: resSeq, DoneAt: time.Now().UTC()})
	if _, err := done.Put(ctx, events.DoneKey(replayID), rec); err != nil {
		t.Fatal(err)
	}

	var o, e bytes.Buffer
	cenv := &cmdEnv{stdout: &o, stderr: &e, getenv: func(k string) string { return map[string]string{"NATS_URL": env.URL}[k] }}
	code := run(context.Background(), cenv, []string{"deadletters", "replay", "--seq", strconv.FormatUint(dlSeq, 10), "--timeout", "3s"})
	if code != exitOK || !strings.Contains(o.String(), `"job_id": "`+replayID+`"`) || !strings.Contains(e.String(), "replayed before") {
		t.Fatalf("replay: exit %d\nstdout: %s\nstderr: %s", code, o.String(), e.String())
	}
	if n := jobsStored(t, env); n != 0 {
		t.Fatalf("%d jobs published to %s, want none", n, events.StreamJobs)
	}
}

func jobsStored(t *testing.T, env *brokertest.Env) uint64 {
	t.Helper()
	s, err := env.JS.Stream(context.Background(), events.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}
