package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers/vault"
	"github.com/wxhub/wxhub/internal/config"
	"github.com/wxhub/wxhub/wechat"
)

// vaultApps reports whether any app has the vault on.
func vaultApps(cfg *config.Config) bool {
	for _, a := range cfg.Apps {
		if a.Vault {
			return true
		}
	}
	return false
}

// openVault opens the user-token vault with the configured keyring. A
// missing, malformed or wrong key is a configuration error (exit 2), never
// an empty vault.
func openVault(ctx context.Context, js jetstream.JetStream, cfg *config.Config, owner string, log *slog.Logger) (*vault.Vault, error) {
	if cfg.Vault.Keys == "" {
		return nil, usagef("vault: no keys (set --vault-keys-file, vault.keys_file or WXHUB_VAULT_KEYS; `wxhub vault keygen --id k1` makes one)")
	}
	ring, err := vault.ParseKeyring(cfg.Vault.Keys)
	if err != nil {
		return nil, usageError{err}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := vault.Open(ctx, js, ring, vault.Options{Owner: owner, Logger: log})
	if errors.Is(err, vault.ErrWrongKey) || errors.Is(err, vault.ErrMissingKey) || errors.Is(err, vault.ErrOptions) {
		return nil, usageError{err}
	}
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("%w (provisioning creates it: run `wxhub provision` first)", err)
	}
	return v, err
}

// vaultUsage is the vault commands' usage line.
const vaultUsage = "want `wxhub vault keygen|rotate|forget|check` (-h for the flags of each); rotate, forget and check connect as the worker user (wx_vault is the workers' bucket)"

// cmdVault runs the vault's key and record commands. rotate, forget and
// check read and write wx_vault, the workers' bucket: in the accounts
// layout (--nats-accounts) it lives in WORKER, whose only writers are the
// worker user, and no other account may write a KV bucket across
// accounts. So these commands connect with the worker's credentials and
// see the streams as the worker does (grants.Worker, wx_vault local): the
// vault key holder is the workers' operator. Without accounts (`wxhub
// run`, one account) any user that may write wx_vault will do.
func cmdVault(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) == 0 {
		return usagef(vaultUsage)
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "keygen":
		var id string
		fs := flag.NewFlagSet("wxhub vault keygen", flag.ContinueOnError)
		fs.SetOutput(env.stderr)
		fs.StringVar(&id, "id", "", "key `id` (1-32 letters, digits, _ or -; required)")
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return usageError{err}
		}
		line, err := vault.NewKeyLine(id)
		if err != nil {
			return usageError{err}
		}
		fmt.Fprintln(env.stdout, line)
		return nil
	case "rotate", "forget", "check":
	default:
		return usagef("unknown subcommand %q: %s", sub, vaultUsage)
	}

	var appid, openid, baseURL string
	timeout := time.Minute
	cfg, _, err := parseConfig(env, "vault "+sub, config.FlagsNATS|config.FlagsVault, args, func(fs *flag.FlagSet) {
		fs.Usage = func() {
			fmt.Fprintf(fs.Output(), "Usage of wxhub vault %s (connect with the worker user's NATS credentials: wx_vault is the workers' bucket):\n", sub)
			fs.PrintDefaults()
		}
		fs.DurationVar(&timeout, "timeout", timeout, "how long the command may take")
		if sub != "rotate" {
			fs.StringVar(&appid, "appid", "", "WeChat `appid` (required)")
			fs.StringVar(&openid, "openid", "", "the user's `openid` (required)")
		}
		if sub == "check" {
			fs.StringVar(&baseURL, "wechat-base-url", "https://api.weixin.qq.com", "WeChat API base `URL`")
		}
	})
	if err != nil {
		return err
	}
	if sub != "rotate" && (appid == "" || openid == "") {
		return usagef("--appid and --openid are required")
	}
	if err := cfg.ResolveSecrets(env.getenv); err != nil {
		return usageError{err}
	}
	nc, js, err := connectAs(cfg, "wxhub-vault", grants.Worker)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	log := newLogger(env, config.Log{Format: "text", Level: "warn"})
	v, err := openVault(ctx, js.Bucket(events.BucketVault), cfg, "wxhub-vault-"+sub, log)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if cfg.NATS.Accounts {
			return fmt.Errorf("%w; with --nats-accounts wx_vault is in the %s account: run `wxhub vault %s` with the %s user's credentials (not the admin's)",
				err, grants.StreamAccount(grants.KVStream(events.BucketVault)), sub, grants.Worker.User())
		}
		return fmt.Errorf("%w; on a NATS with wxhub's accounts layout (deploy/nats) pass --nats-accounts and the %s user's credentials", err, grants.Worker.User())
	}
	if err != nil {
		return err
	}
	print := func(x any) {
		b, _ := json.MarshalIndent(x, "", "  ")
		fmt.Fprintln(env.stdout, string(b))
	}
	switch sub {
	case "rotate":
		st, err := v.Rotate(ctx)
		print(rotateView{Records: st.Records, Reencrypted: st.Reencrypted, Late: st.Late, AlreadyCurrent: st.Current, Gone: st.Gone,
			Failed: st.Failed, CurrentKey: st.CurrentKeyID, RetiredKeys: st.RetiredKeys})
		return err
	case "forget":
		existed, err := v.Forget(ctx, appid, openid)
		if err != nil {
			return err
		}
		print(struct {
			AppID   string `json:"appid"`
			OpenID  string `json:"openid"`
			Existed bool   `json:"existed"`
		}{appid, openid, existed})
		return nil
	default: // check
		return vaultCheck(ctx, env, v, baseURL, appid, openid, print)
	}
}

type rotateView struct {
	Records     int `json:"records"`
	Reencrypted int `json:"reencrypted"`
	// Late: of Reencrypted, written under a retired key while rotate
	// ran (a worker still has the old keyring).
	Late           int      `json:"late"`
	AlreadyCurrent int      `json:"already_current"`
	Gone           int      `json:"gone"`
	Failed         int      `json:"failed"`
	CurrentKey     string   `json:"current_key"`
	RetiredKeys    []string `json:"retired_keys"`
}

// checkView is what `wxhub vault check` prints: never a token.
type checkView struct {
	AppID            string    `json:"appid"`
	OpenID           string    `json:"openid"`
	Stored           bool      `json:"stored"`
	KeyID            string    `json:"kid,omitempty"`
	Scope            string    `json:"scope,omitempty"`
	AccessExpiresAt  time.Time `json:"access_expires_at,omitzero"`
	RefreshExpiresAt time.Time `json:"refresh_expires_at,omitzero"`
	Valid            bool      `json:"valid"`
	ErrCode          int       `json:"errcode,omitempty"`
	ErrMsg           string    `json:"errmsg,omitempty"`
}

// vaultCheck asks /sns/auth whether the stored access token still works.
// Exit status 1 when it does not (or there is no record).
func vaultCheck(ctx context.Context, env *cmdEnv, v *vault.Vault, baseURL, appid, openid string, print func(any)) error {
	view := checkView{AppID: appid, OpenID: openid}
	rec, err := v.Get(ctx, appid, openid)
	if errors.Is(err, vault.ErrNotFound) {
		print(view)
		return errFailed
	}
	if err != nil {
		return err
	}
	view.Stored, view.KeyID, view.Scope = true, rec.KeyID, rec.Tokens.Scope
	view.AccessExpiresAt, view.RefreshExpiresAt = rec.Tokens.AccessExpiresAt, rec.Tokens.RefreshExpiresAt
	wc, err := newWeChatClient(baseURL)
	if err != nil {
		return usageError{err}
	}
	err = wc.CheckSNSToken(ctx, rec.Tokens.AccessToken, openid)
	var api *wechat.APIError
	switch {
	case err == nil:
		view.Valid = true
	case errors.As(err, &api):
		view.ErrCode, view.ErrMsg = api.Code, api.Msg
	default:
		return err
	}
	print(view)
	if !view.Valid {
		return errFailed
	}
	return nil
}
