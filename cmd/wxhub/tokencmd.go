package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/holder"
	"github.com/wxhub/wxhub/internal/config"
	"github.com/wxhub/wxhub/wechat"
)

// tokenView is what `wxhub token get` prints: metadata, and the token only
// when asked for.
type tokenView struct {
	AppID       string    `json:"appid"`
	Version     uint64    `json:"version"`
	Mode        string    `json:"mode"`
	FetchedAt   time.Time `json:"fetched_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	ExpiresIn   string    `json:"expires_in"`
	Holder      string    `json:"holder,omitempty"`
	Fingerprint string    `json:"fingerprint"`
	AccessToken string    `json:"access_token,omitempty"`
}

func cmdToken(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) == 0 || (args[0] != "get" && args[0] != "invalidate" && args[0] != "refresh") {
		return usagef("want `wxhub token get --appid A [--show-token]` or `wxhub token invalidate --appid A` (alias: refresh)")
	}
	sub := args[0]
	var appid string
	var show bool
	var timeout time.Duration
	cfg, _, err := parseConfig(env, "token", config.FlagsNATS, args[1:], func(fs *flag.FlagSet) {
		fs.StringVar(&appid, "appid", "", "WeChat `appid` (required)")
		fs.DurationVar(&timeout, "timeout", 15*time.Second, "how long to wait")
		if sub == "get" {
			fs.BoolVar(&show, "show-token", false, "also print the access_token itself (a credential: handle with care)")
		}
	})
	if err != nil {
		return err
	}
	if appid == "" {
		return usagef("--appid is required")
	}
	nc, js, err := connectAs(cfg, "wxhub-cli", grants.Provision)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	kv, err := js.Bucket(events.BucketTokens).KeyValue(ctx, events.BucketTokens)
	if err != nil {
		return fmt.Errorf("bucket %s: %w%s", events.BucketTokens, err, accountsHint(js))
	}
	if sub != "get" {
		return requestRefresh(ctx, env, nc, kv, cfg.Prefix, appid, timeout)
	}
	rec, err := readToken(ctx, kv, appid)
	if errors.Is(err, errNoToken) {
		return fmt.Errorf("%w: %s", err, whyNoToken(ctx, nc, js, cfg.Prefix, appid))
	}
	if err != nil {
		return err
	}
	v := tokenView{AppID: rec.AppID, Version: rec.Version, Mode: rec.Mode, FetchedAt: rec.FetchedAt,
		ExpiresAt: rec.ExpiresAt, ExpiresIn: time.Until(rec.ExpiresAt).Round(time.Second).String(),
		Holder: rec.Holder, Fingerprint: wechat.Fingerprint(rec.AccessToken)}
	if show {
		v.AccessToken = rec.AccessToken
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintln(env.stdout, string(out))
	return nil
}

// errNoToken: wx_tokens has no record for the app.
var errNoToken = errors.New("no token stored")

// whyNoToken asks the running holders (wxhub.status) about an app that
// has no token and says what they report: the lockouts of the one that
// leads it (its failed first fetch: backoff and its error), not_leading,
// or that none is configured with it. It names no secret: a holder's
// lockouts carry none.
func whyNoToken(ctx context.Context, nc *nats.Conn, js *broker.JetStreams, prefix, appid string) string {
	procs, err := gatherStatus(ctx, nc, prefix, presenceWait)
	if err != nil {
		return fmt.Sprintf("asking the holders failed: %v", err)
	}
	holders := 0
	for _, p := range procs {
		if p.Role == "holder" {
			holders++
		}
	}
	if holders == 0 {
		return "no holder answers on this NATS (start `wxhub holder` or `wxhub run` configured with this app)"
	}
	b, err := openStatusBuckets(ctx, js)
	if err != nil {
		return err.Error()
	}
	a, ok := b.app(ctx, appid, time.Now(), procs)
	if !ok {
		return fmt.Sprintf("none of the %d holders that answered is configured with this app (`wxhub status` lists the apps they hold)", holders)
	}
	st := statusReport{Apps: []appStatus{a}, Processes: procs}
	mergeLockouts(&st)
	if len(st.Apps[0].Lockouts) == 0 {
		return "holder " + a.Leader + " leads this app and reports no lockout: its first fetch may be under way (see `wxhub status`)"
	}
	parts := make([]string, 0, len(st.Apps[0].Lockouts))
	for _, l := range st.Apps[0].Lockouts {
		parts = append(parts, l.String())
	}
	who := "the holders report"
	if a.Leader != "-" {
		who = "holder " + a.Leader + " leads this app and reports"
	}
	return who + " " + strings.Join(parts, "; ")
}

func readToken(ctx context.Context, kv jetstream.KeyValue, appid string) (events.TokenRecord, error) {
	var rec events.TokenRecord
	e, err := kv.Get(ctx, appid)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return rec, fmt.Errorf("%w for %s", errNoToken, appid)
	}
	if err != nil {
		return rec, fmt.Errorf("read token: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, fmt.Errorf("token record for %s is not valid JSON: %w", appid, err)
	}
	return rec, nil
}

// requestRefresh asks the app's leading holder for a manual refresh
// (wxhub.token.refresh, request/reply; reason manual). It is not a report
// of a rejected token, so it never trips conflict detection. A refusal is
// printed as one line naming the lockout (conflict, quota_reserve,
// force_limit, force_exhausted, quota_exhausted, backoff, rate_limited,
// not_leading).
//
// The request names the version stored now, the one to replace: a holder
// that finds a newer one stored answers with it and fetches nothing. So
// asking again is safe, and the command does, within --timeout, while the
// answer is not_leading (the leader stops or lost its lease: no refresh
// was made) or none comes (nobody leads yet, a takeover is under way): the
// holder that leads next makes the refresh, once. A refresh that has not
// ended when --timeout is near is answered "refresh under way" (the
// request says how long the command waits): printed, exit 1, never as
// failed.
func requestRefresh(ctx context.Context, env *cmdEnv, nc *nats.Conn, kv jetstream.KeyValue, prefix, appid string, timeout time.Duration) error {
	var replace uint64 // 0: no token stored; any token a holder stores replaces it
	rec, err := readToken(ctx, kv, appid)
	switch {
	case err == nil:
		replace = rec.Version
	case !errors.Is(err, errNoToken):
		return err
	}
	subs := events.NewSubjects(prefix)
	host, _ := os.Hostname()
	req := events.TokenRefreshRequest{AppID: appid, Requester: "wxhub-cli@" + host, Version: &replace}
	fmt.Fprintf(env.stderr, "asking the holder leading %s for a manual refresh of version %d...\n", appid, replace)
	reply, refusal, err := askRefresh(ctx, nc, subs, req, func(r events.TokenRefreshReply) {
		fmt.Fprintf(env.stderr, "%s; asking the holder that leads next...\n", r.Error)
	})
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		fmt.Fprintf(env.stderr, "refresh refused: %s: no holder is running on this NATS (start `wxhub holder` or `wxhub run`)\n", holder.LockoutNotLeading)
		return errFailed
	case errors.Is(err, context.DeadlineExceeded) && refusal != nil:
		fmt.Fprintf(env.stderr, "%s (no holder took %s over within %v; see `wxhub status`)\n", refusal.Error, appid, timeout)
		return errFailed
	case errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintf(env.stderr, "refresh refused: %s: no holder leads %s (no answer within %v; is it configured with this app? see `wxhub status`)\n", holder.LockoutNotLeading, appid, timeout)
		return errFailed
	case err != nil:
		return fmt.Errorf("request %s: %w", subs.TokenRefreshRequest, err)
	}
	if reply.Error != "" {
		fmt.Fprintln(env.stderr, reply.Error)
		return errFailed
	}
	out, _ := json.MarshalIndent(reply, "", "  ")
	fmt.Fprintln(env.stdout, string(out))
	return nil
}

// How `wxhub token invalidate` asks again: this long after a not_leading
// answer (a takeover is under way), and after this long without an answer
// (nobody leads yet, or the leader is busy; the request names the version
// it replaces, so a second copy makes no second refresh).
const (
	reaskAfterRefusal = 250 * time.Millisecond
	reaskAfterSilence = 2 * time.Second
)

// askRefresh publishes the refresh request req, and again while the
// answers are not_leading (each passed to refused) or none comes, all with
// one reply subject (replyInbox), until ctx ends. Each copy says how long
// is left of ctx (timeout_ms): the holder answers before that, with
// under_way if the refresh has not ended. It returns the first other
// answer; when ctx ends, ctx's error and the last not_leading answer (nil
// if none came). nats.ErrNoResponders: no holder subscribes at all.
func askRefresh(ctx context.Context, nc *nats.Conn, subs events.Subjects, req events.TokenRefreshRequest, refused func(events.TokenRefreshReply)) (events.TokenRefreshReply, *events.TokenRefreshReply, error) {
	inbox := replyInbox(subs.Prefix)
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return events.TokenRefreshReply{}, nil, err
	}
	defer sub.Unsubscribe()
	var last *events.TokenRefreshReply
	for {
		if deadline, ok := ctx.Deadline(); ok {
			req.TimeoutMS = max(time.Until(deadline).Milliseconds(), 1)
		}
		data, _ := json.Marshal(req)
		if err := nc.PublishRequest(subs.TokenRefreshRequest, inbox, data); err != nil {
			return events.TokenRefreshReply{}, last, err
		}
		askAgain := time.Now().Add(reaskAfterSilence)
		for time.Now().Before(askAgain) {
			wctx, cancel := context.WithDeadline(ctx, askAgain)
			m, err := sub.NextMsgWithContext(wctx)
			cancel()
			if ctx.Err() != nil {
				return events.TokenRefreshReply{}, last, ctx.Err()
			}
			if err != nil {
				break // no answer in time: ask again
			}
			if m.Header.Get("Status") == "503" && len(m.Data) == 0 {
				return events.TokenRefreshReply{}, last, nats.ErrNoResponders
			}
			var reply events.TokenRefreshReply
			if err := json.Unmarshal(m.Data, &reply); err != nil {
				return reply, last, fmt.Errorf("unreadable answer from the holder: %w", err)
			}
			if reply.Refused != holder.LockoutNotLeading {
				return reply, last, nil
			}
			if last == nil || last.Error != reply.Error {
				refused(reply)
			}
			last = &reply
			if soon := time.Now().Add(reaskAfterRefusal); soon.Before(askAgain) {
				askAgain = soon
			}
		}
	}
}
