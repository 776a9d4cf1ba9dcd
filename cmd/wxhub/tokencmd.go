package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
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
	if len(args) == 0 || (args[0] != "get" && args[0] != "invalidate") {
		return usagef("want `wxhub token get --appid A [--show-token]` or `wxhub token invalidate --appid A`")
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
	nc, js, err := connect(cfg, "wxhub-cli")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	kv, err := js.KeyValue(ctx, events.BucketTokens)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", events.BucketTokens, err)
	}
	rec, err := readToken(ctx, kv, appid)
	if err != nil {
		return err
	}
	if sub == "get" {
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
	return invalidateAndWait(ctx, env, nc, js, cfg, rec)
}

func readToken(ctx context.Context, kv jetstream.KeyValue, appid string) (events.TokenRecord, error) {
	var rec events.TokenRecord
	e, err := kv.Get(ctx, appid)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return rec, fmt.Errorf("no token stored for %s (is a holder configured with this app?)", appid)
	}
	if err != nil {
		return rec, fmt.Errorf("read token: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, fmt.Errorf("token record for %s is not valid JSON: %w", appid, err)
	}
	return rec, nil
}

// invalidateAndWait reports the current token as rejected and waits for
// the holder's token.refreshed with a newer version.
func invalidateAndWait(ctx context.Context, env *cmdEnv, nc *nats.Conn, js jetstream.JetStream, cfg *config.Config, rec events.TokenRecord) error {
	subs := events.NewSubjects(cfg.Prefix)
	refreshed := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe(subs.TokenRefreshed, refreshed)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	report, _ := json.Marshal(events.TokenInvalidated{AppID: rec.AppID, Version: rec.Version, ErrCode: wechat.CodeInvalidCredential, Reporter: "wxhub-cli"})
	if _, err := js.Publish(ctx, subs.TokenInvalidated, report); err != nil {
		return fmt.Errorf("publish %s: %w", subs.TokenInvalidated, err)
	}
	fmt.Fprintf(env.stderr, "reported version %d of %s as rejected; waiting for the holder...\n", rec.Version, rec.AppID)
	for {
		select {
		case m := <-refreshed:
			var ev events.TokenRefreshed
			if json.Unmarshal(m.Data, &ev) == nil && ev.AppID == rec.AppID && ev.Version > rec.Version {
				out, _ := json.MarshalIndent(ev, "", "  ")
				fmt.Fprintln(env.stdout, string(out))
				return nil
			}
		case <-ctx.Done():
			fmt.Fprintf(env.stderr, "no new token yet: the holder refreshes at most once per 30 s per app and ignores reports against a token it fetched moments ago (see its log / token.conflict)\n")
			return errFailed
		}
	}
}
