package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
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
	nc, js, err := connectAs(cfg, "wxhub-cli", grants.Provision)
	if err != nil {
		return err
	}
	defer nc.Close()
	subs := events.NewSubjects(cfg.Prefix)
	ctx, cancel := context.WithTimeout(ctx, j.timeout)
	defer cancel()

	// Subscribe before publishing so the result cannot slip past.
	results := make(chan *nats.Msg, 64)
	var subsList []*nats.Subscription
	for _, s := range subs.Results() {
		sub, err := nc.ChanSubscribe(s, results)
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", s, err)
		}
		subsList = append(subsList, sub)
	}
	defer func() {
		for _, s := range subsList {
			_ = s.Unsubscribe()
		}
	}()
	body, _ := json.Marshal(job)
	msg := nats.NewMsg(subject)
	msg.Data = body
	msg.Header.Set(events.HeaderMsgID, j.jobID)
	msg.Header.Set(events.HeaderCorrelationID, j.jobID)
	ack, err := js.Local().PublishMsg(ctx, msg) // a publish: no API prefix
	if err != nil {
		return fmt.Errorf("publish %s: %w (is wxhub running at %s?)", subject, err, redact.URL(cfg.NATS.URL))
	}
	var found *nats.Msg
	if ack.Duplicate {
		// The job_id was seen before: its result may already be stored.
		found, err = findStoredResult(ctx, js, subs, j.jobID)
		if err != nil {
			return err
		}
	}
	for found == nil {
		select {
		case m := <-results:
			if m.Header.Get(events.HeaderMsgID) == j.jobID || jobIDOf(m.Data) == j.jobID {
				found = m
			}
		case <-ctx.Done():
			return fmt.Errorf("no result for job %s within %v: %w", j.jobID, j.timeout, ctx.Err())
		}
	}
	return printResult(env, subs, found)
}

// printResult prints a result as indented JSON: nil for user.profile,
// errFailed for user.profile.failed.
func printResult(env *cmdEnv, subs events.Subjects, found *nats.Msg) error {
	var pretty json.RawMessage = found.Data
	out, err := json.MarshalIndent(pretty, "", "  ")
	if err != nil {
		out = found.Data
	}
	fmt.Fprintln(env.stdout, string(out))
	if found.Subject == subs.UserProfileFailed {
		return errFailed
	}
	return nil
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
	m, err := findResult(ctx, js, subs, jobID, stream.CachedInfo().Config.Duplicates+time.Minute)
	if err != nil || m == nil {
		return nil, err
	}
	return &nats.Msg{Subject: m.Subject, Data: m.Data, Header: m.Header}, nil
}
