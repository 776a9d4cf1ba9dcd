package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/cas"
	"github.com/wxhub/wxhub/internal/config"
	"github.com/wxhub/wxhub/internal/redact"
)

func newJobID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "cli-" + hex.EncodeToString(b)
}

type jobFlags struct {
	appid, jobID, lang string
	timeout            time.Duration
}

func (j *jobFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&j.appid, "appid", "", "WeChat `appid` (required)")
	fs.StringVar(&j.jobID, "job-id", "", "job id, the idempotency key (default: a new random id)")
	fs.StringVar(&j.lang, "lang", "", "zh_CN, zh_TW or en")
	fs.DurationVar(&j.timeout, "timeout", 30*time.Second, "how long to wait for the result")
}

func cmdLookup(ctx context.Context, env *cmdEnv, args []string) error {
	return openIDJob(ctx, env, args, "lookup", "the follower's `openid` (required)",
		func(s events.Subjects, j jobFlags, openid string) (string, any) {
			return s.UserLookup, events.UserLookup{JobID: j.jobID, AppID: j.appid, OpenID: openid, Lang: j.lang}
		})
}

func cmdUserInfo(ctx context.Context, env *cmdEnv, args []string) error {
	return openIDJob(ctx, env, args, "userinfo", "the user's `openid` (required; they logged in with snsapi_userinfo)",
		func(s events.Subjects, j jobFlags, openid string) (string, any) {
			return s.OAuthUserInfo, events.OAuthUserInfo{JobID: j.jobID, AppID: j.appid, OpenID: openid, Lang: j.lang}
		})
}

// openIDJob is a client command for a job about one user (--appid,
// --openid): it parses the flags, builds the job and waits for its result.
func openIDJob(ctx context.Context, env *cmdEnv, args []string, name, openidUsage string,
	build func(s events.Subjects, j jobFlags, openid string) (subject string, job any)) error {
	var j jobFlags
	var openid string
	cfg, _, err := parseConfig(env, name, config.FlagsNATS, args, func(fs *flag.FlagSet) {
		j.register(fs)
		fs.StringVar(&openid, "openid", "", openidUsage)
	})
	if err != nil {
		return err
	}
	if j.appid == "" || openid == "" {
		return usagef("--appid and --openid are required")
	}
	if j.jobID == "" {
		j.jobID = newJobID()
	}
	subject, job := build(events.NewSubjects(cfg.Prefix), j, openid)
	return publishAndWait(ctx, env, cfg, subject, j, job)
}

func cmdOAuth(ctx context.Context, env *cmdEnv, args []string) error {
	var j jobFlags
	var code, state string
	cfg, _, err := parseConfig(env, "oauth", config.FlagsNATS, args, func(fs *flag.FlagSet) {
		j.register(fs)
		fs.StringVar(&code, "code", "", "the OAuth `code` the authorize redirect handed the callback (required)")
		fs.StringVar(&state, "state", "", "the OAuth state")
	})
	if err != nil {
		return err
	}
	if j.appid == "" || code == "" {
		return usagef("--appid and --code are required")
	}
	if j.jobID == "" {
		j.jobID = newJobID()
	}
	job := events.OAuthCodeReceived{JobID: j.jobID, AppID: j.appid, Code: code, State: state, Lang: j.lang}
	return publishAndWait(ctx, env, cfg, events.NewSubjects(cfg.Prefix).OAuthCodeReceived, j, job)
}

// publishAndWait publishes a job with Nats-Msg-Id = job_id and prints its
// terminal result as JSON: nil for user.profile, errFailed for
// user.profile.failed.
func publishAndWait(ctx context.Context, env *cmdEnv, cfg *config.Config, subject string, j jobFlags, job any) error {
	subs := events.NewSubjects(cfg.Prefix)
	body, err := checkJob(strings.TrimPrefix(subject, subs.Prefix), job)
	if err != nil {
		return err
	}
	nc, js, err := connectAs(cfg, "wxhub-cli", grants.Provision)
	if err != nil {
		return err
	}
	defer nc.Close()
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, j.timeout)
	defer cancel()
	// A job that already ran past the duplicate window would be acked
	// silently at its done record: print its stored result instead.
	if found, err := doneResult(ctx, js, subs, j.jobID); err != nil || found != nil {
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stderr, "wxhub: job %s already ran; its stored result (nothing was published):\n", j.jobID)
		return printResult(env, subs, found)
	}

	// Subscribe before publishing so the result cannot slip past.
	w, err := newResultWaiter(nc, subs.Results(), j.jobID, env.stderr)
	if err != nil {
		return err
	}
	defer w.close()
	msg := nats.NewMsg(subject)
	msg.Data = body
	msg.Header.Set(events.HeaderMsgID, j.jobID)
	msg.Header.Set(events.HeaderCorrelationID, j.jobID)
	published := time.Now()
	ack, err := publishJob(ctx, env.stderr, js.Local(), msg, j.jobID) // a publish: no API prefix
	switch {
	case err == nil:
	case parent.Err() != nil: // interrupted (Ctrl-C): NATS is not to blame
		return fmt.Errorf("publish %s: interrupted before JetStream acknowledged it (%w): job %s may or may not be stored, and may still run; running again with --job-id %s is safe",
			subject, err, j.jobID, j.jobID)
	case cas.DuplicateInProcess(err), errors.As(err, new(*jetstream.APIError)):
		// JetStream answered: it is running, and refused this job.
		return fmt.Errorf("publish %s: %w", subject, err)
	default:
		return fmt.Errorf("publish %s: %w (is wxhub running at %s?)", subject, err, redact.URL(cfg.NATS.URL))
	}
	found, err := awaitResult(ctx, js, subs, w, ack.Duplicate)
	if err == nil && found == nil {
		if err := parent.Err(); err != nil {
			return fmt.Errorf("no result for job %s: %w", j.jobID, err) // interrupted
		}
		// The result may have come and gone unseen: look it up.
		found, err = resultAfterTimeout(parent, js, subs, j.jobID, time.Since(published))
		if found == nil {
			return errors.Join(fmt.Errorf("no result for job %s within %v, and none stored in %s: %w (is a worker running? see `wxhub status`)",
				j.jobID, j.timeout, events.StreamResults, ctx.Err()), err)
		}
	}
	if err != nil {
		return err
	}
	return printResult(env, subs, found)
}

// publishAgainWaits are the waits before a job is published again after
// JetStream refused it with error 10158 (cas.DuplicateInProcess), about
// 0.2 s in all: on a replicated stream another publish with the same
// job_id (a second run with one --job-id at the same moment) was being
// stored, which takes a few milliseconds.
var publishAgainWaits = []time.Duration{10 * time.Millisecond, 40 * time.Millisecond, 150 * time.Millisecond}

// publishJob publishes msg, the job jobID, and returns the stream's ack.
// A publish refused because another with the same Nats-Msg-Id is being
// stored right now (10158) stored nothing: it is published again after
// each of publishAgainWaits until it is acked, as a duplicate once the
// other is stored (the caller then waits for the result as for any
// duplicate), saying so once on stderr. When the waits are used up it
// fails with an error that DuplicateInProcess still knows.
func publishJob(ctx context.Context, stderr io.Writer, js jetstream.JetStream, msg *nats.Msg, jobID string) (*jetstream.PubAck, error) {
	var waited time.Duration
	for i := 0; ; i++ {
		ack, err := js.PublishMsg(ctx, msg)
		err = broker.TrimDoubledNATSPrefix(err) // "nats: nats: API error: ..."
		if !cas.DuplicateInProcess(err) {
			return ack, err
		}
		if i == len(publishAgainWaits) {
			return nil, fmt.Errorf("job %s was still being stored by another publish of it after %v of publishing again (%w); it is most likely stored and its result on the way: running again with --job-id %s is safe and waits for it",
				jobID, waited, err, jobID)
		}
		if i == 0 {
			fmt.Fprintf(stderr, "wxhub: job %s is being stored by another publish of it right now; publishing again, to be acked as a duplicate\n", jobID)
		}
		if err := pause(ctx, publishAgainWaits[i], err); err != nil {
			return nil, err
		}
		waited += publishAgainWaits[i]
	}
}

// awaitResult returns the published job's result: the stored one of a
// duplicate publish, else the one w receives; nil when ctx ends first.
func awaitResult(ctx context.Context, js *broker.JetStreams, subs events.Subjects, w *resultWaiter, duplicate bool) (*nats.Msg, error) {
	if duplicate {
		// The job_id was seen before: its result may already be stored.
		found, err := findStoredResult(ctx, js, subs, w.jobID)
		if err != nil || found != nil {
			return found, err
		}
	}
	return w.wait(ctx, func(ctx context.Context) (*nats.Msg, error) {
		return doneResult(ctx, js, subs, w.jobID)
	})
}

// resultPendingBytes bounds what a client command's result subscriptions
// queue (their message count is unbounded): a burst of other jobs'
// results must not make the client drop its own.
const resultPendingBytes = 256 << 20

// resultWaiter receives one job's result from the core result subjects.
// Its handler keeps the result whose Nats-Msg-Id is the job's (it
// decodes a body only when a result has no such header) and drops every
// other job's result at once on the subscription's goroutine: a burst of
// them is never queued behind a decoder, and never printed.
type resultWaiter struct {
	jobID   string
	found   chan *nats.Msg
	dropped chan struct{} // a slow consumer lost messages (ours among them?)
	subs    []*nats.Subscription
	stderr  io.Writer
}

func newResultWaiter(nc *nats.Conn, subjects []string, jobID string, stderr io.Writer) (*resultWaiter, error) {
	w := &resultWaiter{jobID: jobID, found: make(chan *nats.Msg, 1), dropped: make(chan struct{}, 1), stderr: stderr}
	for _, s := range subjects {
		sub, err := nc.Subscribe(s, w.onMsg)
		if err == nil {
			err = sub.SetPendingLimits(-1, resultPendingBytes)
		}
		if err != nil {
			w.close()
			return nil, fmt.Errorf("subscribe %s: %w", s, err)
		}
		w.subs = append(w.subs, sub)
	}
	prev := nc.ErrorHandler()
	nc.SetErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrSlowConsumer) && slices.Contains(w.subs, sub) {
			select {
			case w.dropped <- struct{}{}:
			default:
			}
			return
		}
		if prev != nil {
			prev(c, sub, err)
		}
	})
	return w, nil
}

func (w *resultWaiter) onMsg(m *nats.Msg) {
	if resultIDOf(m.Header, m.Data) != w.jobID {
		return
	}
	select {
	case w.found <- m:
	default: // a second copy
	}
}

func (w *resultWaiter) close() {
	for _, s := range w.subs {
		_ = s.Unsubscribe()
	}
}

// wait returns the job's result as it arrives, or nil when ctx ends
// first. Once a slow consumer lost messages it asks lost (the result of
// the job's done record) at once and then every second, as the result may
// be among them.
func (w *resultWaiter) wait(ctx context.Context, lost func(context.Context) (*nats.Msg, error)) (*nats.Msg, error) {
	var poll <-chan time.Time
	for {
		select {
		case m := <-w.found:
			return m, nil
		case <-w.dropped:
			if poll == nil {
				fmt.Fprintf(w.stderr, "wxhub: results arrive faster than this command reads them (slow consumer, some dropped): looking for job %s's done record in %s as well\n", w.jobID, events.BucketDone)
				t := time.NewTicker(time.Second)
				defer t.Stop()
				poll = t.C
			}
		case <-poll:
		case <-ctx.Done():
			return nil, nil
		}
		m, err := lost(ctx)
		if ctx.Err() != nil {
			return nil, nil // the caller's lookup after the timeout follows
		}
		if err != nil || m != nil {
			return m, err
		}
	}
}

// resultAfterTimeout looks for the stored result of a job published
// elapsed ago whose result was not seen in time, under its own deadline
// (the wait's is over).
func resultAfterTimeout(parent context.Context, js *broker.JetStreams, subs events.Subjects, jobID string, elapsed time.Duration) (*nats.Msg, error) {
	ctx, cancel := context.WithTimeout(parent, 15*time.Second)
	defer cancel()
	return storedResult(ctx, js, subs, jobID, elapsed+time.Minute)
}

// jobFlagNames are the flags that set a job's fields.
var jobFlagNames = map[string]string{"/job_id": "--job-id", "/appid": "--appid", "/openid": "--openid",
	"/code": "--code", "/state": "--state", "/lang": "--lang"}

// checkJob encodes a job a client command is about to publish and
// validates it against its subject's schema (bare: without the prefix),
// so that a malformed flag is a usage error naming the flag (exit 2),
// not a published job that comes back as invalid_job.
func checkJob(bare string, job any) ([]byte, error) {
	body, err := json.Marshal(job)
	if err != nil {
		return nil, fmt.Errorf("encode the job: %w", err)
	}
	problems, err := flagProblems(bare, body)
	if err != nil || len(problems) == 0 {
		return body, err
	}
	return nil, usagef("not a valid %s job: %s", bare, strings.Join(problems, "; "))
}

// checkJobID checks a job id given on the command line against the job
// schemas' job_id pattern (every result id has its form).
func checkJobID(id string) error {
	if events.ValidJobID(id) {
		return nil
	}
	body, _ := json.Marshal(events.UserLookup{JobID: id, AppID: "wx", OpenID: "o"})
	problems, _ := flagProblems(events.SubjectUserLookup, body)
	if len(problems) == 0 {
		problems = []string{"--job-id: not a job id"}
	}
	return usagef("%s (a job's job_id, or invalid-<seq> for a job that had none)", strings.Join(problems, "; "))
}

// flagProblems are the schema's problems with body, each field named by
// the flag that sets it ("--openid: must match ..."); none when body is
// valid. The schema's problems quote no value.
func flagProblems(bare string, body []byte) ([]string, error) {
	err := events.Validate(bare, body)
	var ve *events.ValidationError
	if !errors.As(err, &ve) {
		return nil, err // nil, or a subject without a schema
	}
	problems := make([]string, 0, len(ve.Problems))
	for _, p := range ve.Problems {
		if field, rest, ok := strings.Cut(p, ": "); ok && jobFlagNames[field] != "" {
			p = jobFlagNames[field] + ": " + rest
		}
		problems = append(problems, p)
	}
	return problems, nil
}

// printResult prints a result as indented JSON: nil for user.profile;
// for user.profile.failed errFailed, and one line on stderr saying that
// the job failed and why (so that it reads apart from "no result").
func printResult(env *cmdEnv, subs events.Subjects, found *nats.Msg) error {
	printJSON(env, found.Data)
	if found.Subject != subs.UserProfileFailed {
		return nil
	}
	var f events.UserProfileFailed
	_ = json.Unmarshal(found.Data, &f)
	why := orDash(f.Error.Kind)
	if f.Error.ErrCode != 0 {
		why += fmt.Sprintf(", errcode %d", f.Error.ErrCode)
	}
	if f.Error.ErrMsg != "" {
		why += ": " + f.Error.ErrMsg
	}
	fmt.Fprintf(env.stderr, "wxhub: job %s failed (%s); its %s result is above\n", resultIDOf(found.Header, found.Data), why, events.SubjectUserProfileFailed)
	return errFailed
}

func jobIDOf(data []byte) string {
	var v struct {
		JobID string `json:"job_id"`
	}
	_ = json.Unmarshal(data, &v)
	return v.JobID
}

// findStoredResult looks for job_id's stored result (done record, else
// the results of the last dedupe window): a duplicate job was published at
// most one window ago, so its result cannot be older.
func findStoredResult(ctx context.Context, js *broker.JetStreams, subs events.Subjects, jobID string) (*nats.Msg, error) {
	stream, err := js.For(events.StreamResults).Stream(ctx, events.StreamResults)
	if err != nil {
		return nil, fmt.Errorf("results stream: %w", err)
	}
	return storedResult(ctx, js, subs, jobID, stream.CachedInfo().Config.Duplicates+time.Minute)
}

// storedResult is findResult as a message: nil when there is none.
func storedResult(ctx context.Context, js *broker.JetStreams, subs events.Subjects, jobID string, since time.Duration) (*nats.Msg, error) {
	m, err := findResult(ctx, js, subs, jobID, since)
	if err != nil || m == nil {
		return nil, err
	}
	return &nats.Msg{Subject: m.Subject, Data: m.Data, Header: m.Header}, nil
}

// doneResult returns the stored result of a job that already ran (it has
// a done record in wx_done), so that a command does not publish a job
// the worker would end silently at its done record (past the duplicate
// window the publish is not reported as a duplicate). It returns nil,
// nil when the job has no done record or wx_done cannot be opened (a
// user without access to it publishes as before), and an error when the
// job ran but its result is no longer stored.
func doneResult(ctx context.Context, js *broker.JetStreams, subs events.Subjects, jobID string) (*nats.Msg, error) {
	done, err := js.Bucket(events.BucketDone).KeyValue(ctx, events.BucketDone)
	if err != nil {
		return nil, nil
	}
	ent, err := done.Get(ctx, events.DoneKey(jobID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("done record of %s: %w", jobID, err)
	}
	since := 24 * time.Hour // results are kept 24 h
	var rec events.DoneRecord
	if json.Unmarshal(ent.Value(), &rec) == nil && !rec.DoneAt.IsZero() {
		since = time.Since(rec.DoneAt) + time.Minute
	}
	found, err := storedResult(ctx, js, subs, jobID, since)
	if err != nil {
		return nil, err
	}
	if found == nil {
		return nil, fmt.Errorf("job %s already ran (it has a done record) but its result is no longer stored in %s; run it again under a new id with --job-id", jobID, events.StreamResults)
	}
	return found, nil
}
