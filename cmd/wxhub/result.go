package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/config"
)

// cmdResult prints the stored result of a past job from WX_RESULTS: exit
// 0 for user.profile, 1 for user.profile.failed or when there is none
// (stderr says which), 2 for a --job-id that is no job id. Its body goes
// to stdout, and a line on stderr names the job, the result's subject and
// its correlation id (Wx-Correlation-Id). With --correlation C, a result
// whose correlation id is not C is not printed: exit 1, stderr says both
// ids (a business system's check that the result is the one of its job,
// e.g. the SHA-256 of its web login's state, docs/web-login.md).
//
// It looks the job up in wx_done first (one KV read and one stream read);
// a user without access to wx_done, or a job without a done record, makes
// it scan the results of the last --since instead.
func cmdResult(ctx context.Context, env *cmdEnv, args []string) error {
	var jobID, corrID string
	var since time.Duration
	cfg, _, err := parseConfig(env, "result", config.FlagsNATS, args, func(fs *flag.FlagSet) {
		fs.StringVar(&jobID, "job-id", "", "the job's `id` (its job_id, else its Nats-Msg-Id, else invalid-<seq>) (required)")
		fs.StringVar(&corrID, "correlation", "", "print the result only if its correlation `id` (Wx-Correlation-Id) is this one, else exit 1")
		fs.DurationVar(&since, "since", 24*time.Hour, "how far back to scan WX_RESULTS when the job has no done record")
	})
	if err != nil {
		return err
	}
	if jobID == "" {
		return usagef("--job-id is required")
	}
	if err := checkJobID(jobID); err != nil {
		return err
	}
	nc, js, err := connectAs(cfg, "wxhub-cli", grants.Provision)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	subs := events.NewSubjects(cfg.Prefix)
	m, err := findResult(ctx, js, subs, jobID, since)
	if err != nil {
		return err
	}
	if m == nil {
		return fmt.Errorf("no result for job %s in %s (results are kept 24 h; scanned the last %v): it may still be waiting or running (wxhub status), or was never published", jobID, events.StreamResults, since)
	}
	got := m.Header.Get(events.HeaderCorrelationID)
	if corrID != "" && got != corrID {
		if got == "" {
			got = "none"
		}
		return fmt.Errorf("job %s's result has correlation id %s, not %s: it is not the result of the job (or login) you asked about", jobID, got, corrID)
	}
	err = printResult(env, subs, &nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
	fmt.Fprintf(env.stderr, "wxhub: job %s: result on %s, correlation id %s\n", jobID, strings.TrimPrefix(m.Subject, subs.Prefix), orDash(got))
	return err
}

// findResult returns the stored result of jobID, or nil if there is none.
// It reads WX_RESULTS and wx_done each through js: in the accounts layout
// the done records are in WORKER, read by direct get through the API the
// admin's account imports; the scan is an ordered (pull) consumer.
func findResult(ctx context.Context, js *broker.JetStreams, subs events.Subjects, jobID string, since time.Duration) (*jetstream.RawStreamMsg, error) {
	stream, err := js.For(events.StreamResults).Stream(ctx, events.StreamResults)
	if err != nil {
		return nil, fmt.Errorf("results stream %s: %w%s", events.StreamResults, err, accountsHint(js))
	}
	if kv, err := js.Bucket(events.BucketDone).KeyValue(ctx, events.BucketDone); err == nil {
		if ent, err := kv.Get(ctx, events.DoneKey(jobID)); err == nil {
			var rec events.DoneRecord
			if json.Unmarshal(ent.Value(), &rec) == nil && rec.ResultSeq > 0 {
				m, err := stream.GetMsg(ctx, rec.ResultSeq)
				if err == nil && resultIDOf(m.Header, m.Data) == jobID {
					return m, nil
				}
			}
		}
	}
	start := time.Now().Add(-since)
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: subs.Results(),
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
	})
	if err != nil {
		return nil, fmt.Errorf("results consumer: %w", err)
	}
	for {
		msgs, err := scanNext(ctx, cons, 512)
		if err != nil {
			return nil, fmt.Errorf("results fetch: %w", err)
		}
		for _, m := range msgs {
			if resultIDOf(m.Headers(), m.Data()) == jobID {
				meta, _ := m.Metadata()
				raw := &jetstream.RawStreamMsg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()}
				if meta != nil {
					raw.Sequence, raw.Time = meta.Sequence.Stream, meta.Timestamp
				}
				return raw, nil
			}
		}
		if len(msgs) == 0 {
			return nil, nil
		}
	}
}

// resultIDOf is a result's id: its Nats-Msg-Id, else its job_id.
func resultIDOf(h nats.Header, data []byte) string {
	if id := h.Get(events.HeaderMsgID); id != "" {
		return id
	}
	return jobIDOf(data)
}

// printJSON prints data indented, or as it is when it is not JSON.
func printJSON(env *cmdEnv, data []byte) {
	var pretty json.RawMessage = data
	out, err := json.MarshalIndent(pretty, "", "  ")
	if err != nil {
		out = data
	}
	fmt.Fprintln(env.stdout, string(out))
}
