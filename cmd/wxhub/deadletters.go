package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/config"
	"github.com/wxhub/wxhub/internal/redact"
	"github.com/wxhub/wxhub/wechat"
)

// cmdDeadLetters browses WX_DEADLETTERS, the original bytes of jobs that
// were rejected or given up on, and replays a (fixed) job:
//
//	wxhub deadletters list [--subject user.lookup] [--since 24h] [--limit 50] [--json]
//	wxhub deadletters show --seq N
//	wxhub deadletters replay --seq N [--body FILE|-] [--job-id ID] [--timeout 30s]
//
// show prints the job with every credential (an OAuth code, a token) as
// its fingerprint, and a body that is not a JSON object not at all (see
// printDeadLetterJob). replay publishes the dead letter's original bytes
// (or the fixed body) as a new job on its job subject under a new job_id
// (default <job_id>.replay-<seq>, so replaying one dead letter twice runs
// it once), waits for its result and prints it like `wxhub lookup`. The old job_id cannot be reused: its
// result and done record already exist. When the replay job has a done
// record already (replayed before), its stored result is printed and
// nothing is published.
func cmdDeadLetters(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usagef("deadletters list|show|replay: say which")
	}
	verb, args := args[0], args[1:]
	switch verb {
	case "list":
		return deadLettersList(ctx, env, args)
	case "show":
		return deadLettersShow(ctx, env, args)
	case "replay":
		return deadLettersReplay(ctx, env, args)
	}
	return usagef("deadletters %s: unknown; use list, show or replay", verb)
}

// deadLetter is one dead letter as list --json prints it.
type deadLetter struct {
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"`
	JobSubject string    `json:"job_subject"`
	JobID      string    `json:"job_id,omitempty"`
	AppID      string    `json:"appid,omitempty"`
	Reason     string    `json:"reason"`
	Bytes      int       `json:"bytes"`
}

func toDeadLetter(subs events.Subjects, seq uint64, t time.Time, subject string, h nats.Header, data []byte) deadLetter {
	jobID, appID := events.PeekJobIdentity(data)
	if jobID == "" {
		jobID = h.Get(events.HeaderMsgID)
	}
	return deadLetter{Seq: seq, Time: t, JobSubject: strings.TrimPrefix(subject, subs.DeadLetterPrefix), JobID: jobID, AppID: appID,
		Reason: h.Get(events.HeaderDeadLetterReason), Bytes: len(data)}
}

func deadLettersList(ctx context.Context, env *cmdEnv, args []string) error {
	var subject string
	var since time.Duration
	var limit int
	var asJSON bool
	cfg, _, err := parseConfig(env, "deadletters list", config.FlagsNATS, args, func(fs *flag.FlagSet) {
		fs.StringVar(&subject, "subject", "", "only dead letters of this job `subject` (e.g. user.lookup)")
		fs.DurationVar(&since, "since", 7*24*time.Hour, "how far back (dead letters are kept 7 days)")
		fs.IntVar(&limit, "limit", 50, "print at most this many, the newest")
		fs.BoolVar(&asJSON, "json", false, "print JSON lines")
	})
	if err != nil {
		return err
	}
	if limit < 1 {
		return usagef("--limit must be at least 1")
	}
	nc, js, err := connectAs(cfg, "wxhub-cli", grants.Provision)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	subs := events.NewSubjects(cfg.Prefix)
	filter := subs.DeadLetterPrefix + ">"
	if subject != "" {
		filter = subs.DeadLetter(strings.TrimPrefix(subject, subs.Prefix))
	}
	start := time.Now().Add(-since)
	cons, err := js.For(events.StreamDeadLetters).OrderedConsumer(ctx, events.StreamDeadLetters, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
	})
	if err != nil {
		return fmt.Errorf("dead letters %s: %w%s", events.StreamDeadLetters, err, accountsHint(js))
	}
	var out []deadLetter // the newest limit
	for {
		msgs, err := scanNext(ctx, cons, 512)
		if err != nil {
			return fmt.Errorf("dead letters: %w", err)
		}
		for _, m := range msgs {
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			out = append(out, toDeadLetter(subs, meta.Sequence.Stream, meta.Timestamp, m.Subject(), m.Headers(), m.Data()))
			if len(out) > limit {
				out = out[1:]
			}
		}
		if len(msgs) == 0 {
			break
		}
	}
	if asJSON {
		enc := json.NewEncoder(env.stdout)
		for _, d := range out {
			_ = enc.Encode(d)
		}
		return nil
	}
	if len(out) == 0 {
		fmt.Fprintf(env.stdout, "no dead letters in the last %v\n", since)
		return nil
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tJOB SUBJECT\tJOB ID\tAPPID\tREASON")
	for _, d := range out {
		reason := d.Reason
		if len(reason) > 100 {
			reason = reason[:100] + "..."
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", d.Seq, d.Time.UTC().Format(time.RFC3339), d.JobSubject, orDash(d.JobID), orDash(d.AppID), reason)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// getDeadLetter reads one dead letter by its stream sequence.
func getDeadLetter(ctx context.Context, js *broker.JetStreams, seq uint64) (*jetstream.RawStreamMsg, error) {
	stream, err := js.For(events.StreamDeadLetters).Stream(ctx, events.StreamDeadLetters)
	if err != nil {
		return nil, fmt.Errorf("dead letters %s: %w%s", events.StreamDeadLetters, err, accountsHint(js))
	}
	m, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("no dead letter with sequence %d (see wxhub deadletters list)", seq)
	}
	if err != nil {
		return nil, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	return m, nil
}

func deadLettersShow(ctx context.Context, env *cmdEnv, args []string) error {
	var seq uint64
	cfg, _, err := parseConfig(env, "deadletters show", config.FlagsNATS, args, func(fs *flag.FlagSet) {
		fs.Uint64Var(&seq, "seq", 0, "the dead letter's stream `sequence` (from list) (required)")
	})
	if err != nil {
		return err
	}
	if seq == 0 {
		return usagef("--seq is required")
	}
	nc, js, err := connectAs(cfg, "wxhub-cli", grants.Provision)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	m, err := getDeadLetter(ctx, js, seq)
	if err != nil {
		return err
	}
	subs := events.NewSubjects(cfg.Prefix)
	d := toDeadLetter(subs, m.Sequence, m.Time, m.Subject, m.Header, m.Data)
	fmt.Fprintf(env.stdout, "seq:         %d\ntime:        %s\njob subject: %s\njob id:      %s\nappid:       %s\nreason:      %s\nbytes:       %d\n",
		d.Seq, d.Time.UTC().Format(time.RFC3339), d.JobSubject, orDash(d.JobID), orDash(d.AppID), d.Reason, d.Bytes)
	if orig := m.Header.Get(events.HeaderDeadLetterTruncated); orig != "" {
		fmt.Fprintf(env.stdout, "truncated:   the job had %s bytes; these are its first\n", orig)
	}
	fmt.Fprintln(env.stdout)
	printDeadLetterJob(env.stdout, m.Data)
	return nil
}

// printDeadLetterJob prints a dead letter's job with every credential (the
// OAuth code of an oauth.code.received job, or a token or secret in a bad
// job) as its fingerprint. A body that is not one JSON object (corrupt,
// or truncated to fit) may hold a code anywhere: only its size and
// fingerprint are printed.
func printDeadLetterJob(w io.Writer, data []byte) {
	job, err := redact.JSON(data)
	if err != nil {
		fmt.Fprintf(w, "job not shown, it may hold a credential (%v): %d bytes, fingerprint %s\n",
			err, len(data), wechat.Fingerprint(string(data)))
		return
	}
	fmt.Fprintf(w, "%s\n", job)
}

func deadLettersReplay(ctx context.Context, env *cmdEnv, args []string) error {
	var seq uint64
	var bodyFile, jobID string
	var timeout time.Duration
	cfg, _, err := parseConfig(env, "deadletters replay", config.FlagsNATS, args, func(fs *flag.FlagSet) {
		fs.Uint64Var(&seq, "seq", 0, "the dead letter's stream `sequence` (from list) (required)")
		fs.StringVar(&bodyFile, "body", "", "publish this fixed job `file` (- for stdin) instead of the dead letter's bytes")
		fs.StringVar(&jobID, "job-id", "", "the new job's id (default <job_id>.replay-<seq>)")
		fs.DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the result")
	})
	if err != nil {
		return err
	}
	if seq == 0 {
		return usagef("--seq is required")
	}
	var fixed []byte
	if bodyFile != "" {
		if fixed, err = readBody(env, bodyFile); err != nil {
			return usagef("--body: %w", err)
		}
	}
	nc, js, err := connectAs(cfg, "wxhub-cli", grants.Provision)
	if err != nil {
		return err
	}
	defer nc.Close()
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	m, err := getDeadLetter(lctx, js, seq)
	if err != nil {
		return err
	}
	subs := events.NewSubjects(cfg.Prefix)
	bare := strings.TrimPrefix(m.Subject, subs.DeadLetterPrefix)
	if !slices.Contains(events.NewSubjects("").Jobs(), bare) {
		return fmt.Errorf("dead letter %d is on %s, not a job subject wxhub knows", seq, m.Subject)
	}
	body := m.Data
	if fixed != nil {
		body = fixed
	}
	var job map[string]any
	if err := json.Unmarshal(body, &job); err != nil || job == nil { // `null` decodes to a nil map
		if err == nil {
			err = errors.New("it is null")
		}
		return usagef("dead letter %d: the job is not a JSON object (%v): fix it and pass it with --body FILE", seq, err)
	}
	if jobID == "" {
		old, _ := job["job_id"].(string)
		if old == "" {
			old = "deadletter"
		}
		jobID = old + ".replay-" + strconv.FormatUint(seq, 10)
		if len(jobID) > 128 {
			jobID = jobID[len(jobID)-128:]
		}
	}
	job["job_id"] = jobID
	body, _ = json.Marshal(job)
	if err := events.Validate(bare, body); err != nil {
		return usagef("dead letter %d is still not a valid %s job: %w; fix it and pass it with --body FILE", seq, bare, err)
	}
	// A replay job that already ran (past the jobs' duplicate window, so a
	// publish would not be reported as a duplicate) would end silently at
	// its done record: print its stored result instead of publishing.
	if found, err := doneResult(lctx, js, subs, jobID); err != nil || found != nil {
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stderr, "wxhub: dead letter %d was replayed before as %s job %s; its stored result:\n", seq, bare, jobID)
		return printResult(env, subs, found)
	}
	cancel()
	nc.Close()
	fmt.Fprintf(env.stderr, "wxhub: replaying dead letter %d as %s job %s\n", seq, bare, jobID)
	return publishAndWait(ctx, env, cfg, subs.Prefix+bare, jobFlags{jobID: jobID, timeout: timeout}, json.RawMessage(body))
}

func readBody(env *cmdEnv, name string) ([]byte, error) {
	if name == "-" {
		if env.stdin == nil {
			return nil, errors.New("no stdin")
		}
		return io.ReadAll(io.LimitReader(env.stdin, 1<<20))
	}
	return os.ReadFile(name)
}
