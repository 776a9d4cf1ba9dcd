package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers/vault"
	"github.com/wxhub/wxhub/wechat"
)

// Vault rules (apps with App.Vault on):
//
//   - After a successful code exchange the user's tokens are stored in the
//     vault (encrypted; see package handlers/vault), whatever the scope,
//     except that a snsapi_base grant never replaces a stored
//     snsapi_userinfo (or snsapi_login) one whose refresh_token is alive:
//     a silent base login must not cost the user their profile grant.
//   - oauth.userinfo {job_id, appid, openid, lang} fetches /sns/userinfo
//     with the stored access_token, refreshing it first (once, however
//     many jobs ask at the same time) when it has expired, and once more
//     when WeChat rejects it (42001, 40001, 40014).
//   - The user must authorize again (kind reauthorize, retryable false)
//     when there is no record, the refresh_token has expired, WeChat
//     refuses the refresh (40030, 42002, 42007: the record is deleted,
//     with a revision check, so a new login stored meanwhile is kept),
//     or the grant was snsapi_base (48001; found before any refresh, so
//     a base grant is never refreshed only to be refused).
//   - When /sns/userinfo fails transiently right after an exchange, the
//     oauth.code.received job is retried later with the stored token
//     instead of ending with the identity-only profile (which it still
//     does on its last delivery).

// userInfoMargin: an access token with less left than this is refreshed
// first.
const userInfoMargin = time.Minute

// defaultRefreshTTL is a web app's refresh_token life.
const defaultRefreshTTL = 30 * 24 * time.Hour

func (a App) refreshTTL() time.Duration {
	if a.RefreshTTL > 0 {
		return a.RefreshTTL
	}
	return defaultRefreshTTL
}

// reauthorizeError: the user has no usable grant; only a new login helps.
type reauthorizeError struct {
	reason string
	err    error // WeChat's answer, when it gave one
}

func (e *reauthorizeError) Error() string {
	if e.err != nil {
		return "the user must authorize again: " + e.reason + ": " + e.err.Error()
	}
	return "the user must authorize again: " + e.reason
}
func (e *reauthorizeError) Unwrap() error { return e.err }

// vaultBrokenError: a record that does not decrypt (missing or wrong key,
// or tampered with). Retrying does not help; the operator must.
type vaultBrokenError struct{ err error }

func (e *vaultBrokenError) Error() string { return "vault record unreadable: " + e.err.Error() }
func (e *vaultBrokenError) Unwrap() error { return e.err }

// OAuthUserInfo handles an oauth.userinfo job: the user's current profile
// from /sns/userinfo with the tokens in the vault, then one user.profile
// (source sns.userinfo) or user.profile.failed.
func (h *Handlers) OAuthUserInfo(msg *message.Message) error {
	return h.run(msg, events.SubjectOAuthUserInfo, h.subjects.OAuthUserInfo, h.oauthUserInfo)
}

func (h *Handlers) oauthUserInfo(ctx context.Context, j *job) error {
	job, err := events.DecodeOAuthUserInfo(j.msg.Payload)
	if err != nil {
		return h.rejectInvalid(j, err)
	}
	j.jobID, j.appID = job.JobID, job.AppID
	app, ok := h.apps[job.AppID]
	if !ok {
		return h.reject(j, events.KindConfig, fmt.Sprintf("appid %s is not configured on this worker", job.AppID))
	}
	if !app.Vault || h.cfg.Vault == nil {
		return h.reject(j, events.KindConfig, fmt.Sprintf("the vault is off for appid %s: oauth.userinfo needs it", job.AppID))
	}
	ui, rec, err := h.vaultUserInfo(ctx, app, job.OpenID, job.Lang)
	if err != nil {
		return h.settleVault(ctx, j, err)
	}
	p := events.UserProfile{JobID: j.jobID, AppID: j.appID, OpenID: job.OpenID, UnionID: rec.Tokens.UnionID,
		Scope: rec.Tokens.Scope, IsSnapshotUser: rec.Tokens.IsSnapshotUser, CompletedAt: h.cfg.Now().UTC()}
	fillSNS(&p, ui)
	return h.publishProfile(j, p)
}

// fillSNS copies /sns/userinfo's answer into a profile.
func fillSNS(p *events.UserProfile, ui wechat.SNSUserInfo) {
	sex := ui.Sex
	p.Source, p.Nickname, p.HeadImgURL, p.Sex = events.SourceSNSUserInfo, ui.Nickname, ui.HeadImgURL, &sex
	p.Province, p.City, p.Country, p.Privilege = ui.Province, ui.City, ui.Country, ui.Privilege
	if ui.UnionID != "" {
		p.UnionID = ui.UnionID
	}
}

// settleVault ends a delivery whose vault work failed: reauthorize and
// unreadable records end at once, anything else as settle decides.
func (h *Handlers) settleVault(ctx context.Context, j *job, err error) error {
	var re *reauthorizeError
	var vb *vaultBrokenError
	switch {
	case errors.As(err, &re):
		return h.publishFailure(j, h.failure(j, events.FailureError{Kind: events.KindReauthorize, ErrCode: wechat.ErrCode(err), ErrMsg: err.Error()}))
	case errors.As(err, &vb):
		h.log.Error("vault record unreadable", append(j.logAttrs(), "err", err)...)
		return h.publishFailure(j, h.failure(j, events.FailureError{Kind: events.KindInternal, ErrMsg: err.Error()}))
	}
	return h.settle(ctx, j, err)
}

// vaultUserInfo fetches /sns/userinfo with the user's stored tokens.
func (h *Handlers) vaultUserInfo(ctx context.Context, app App, openid, lang string) (wechat.SNSUserInfo, vault.Record, error) {
	req := vault.FreshRequest{
		AppID: app.AppID, OpenID: openid, Margin: userInfoMargin, RefreshTTL: app.refreshTTL(),
		Refresh: func(ctx context.Context, refreshToken string) (wechat.OAuthToken, error) {
			var tok wechat.OAuthToken
			err := h.retryTransient(ctx, func(ctx context.Context) error {
				var err error
				tok, err = h.cfg.WeChat.RefreshOAuthToken(ctx, app.AppID, refreshToken)
				return err
			})
			return tok, err
		},
	}
	// The scope first: a snsapi_base grant is never refreshed only to be
	// refused.
	if rec, err := h.cfg.Vault.Get(ctx, app.AppID, openid); err == nil && !profileScope(rec.Tokens.Scope) {
		return wechat.SNSUserInfo{}, rec, scopeError(rec.Tokens.Scope)
	}
	for attempt := 0; ; attempt++ {
		rec, refreshed, err := h.cfg.Vault.Fresh(ctx, req)
		if err != nil {
			return wechat.SNSUserInfo{}, rec, h.vaultError(ctx, app.AppID, openid, rec.Revision, err)
		}
		if refreshed {
			h.log.Info("user token refreshed", "appid", app.AppID, "openid", openid, "tokens", rec.Tokens)
		}
		if !profileScope(rec.Tokens.Scope) {
			return wechat.SNSUserInfo{}, rec, scopeError(rec.Tokens.Scope)
		}
		var ui wechat.SNSUserInfo
		err = h.retryTransient(ctx, func(ctx context.Context) error {
			var err error
			ui, err = h.cfg.WeChat.SNSUserInfo(ctx, rec.Tokens.AccessToken, openid, lang)
			return err
		})
		switch {
		case err == nil:
			return ui, rec, nil
		case wechat.IsTokenInvalid(err) && attempt == 0:
			// Our clock said valid, WeChat says no: refresh once more.
			req.Rejected, req.RejectedRevision = rec.Tokens.AccessToken, rec.Revision
			continue
		case wechat.IsTokenInvalid(err):
			return ui, rec, &reauthorizeError{reason: "WeChat rejects the refreshed token", err: err}
		case grantDead(wechat.ErrCode(err)):
			return ui, rec, h.vaultError(ctx, app.AppID, openid, rec.Revision, err)
		case wechat.ErrCode(err) == wechat.CodeAPIUnauthorized:
			return ui, rec, &reauthorizeError{reason: "the grant does not allow /sns/userinfo", err: err}
		}
		return ui, rec, err
	}
}

func scopeError(scope string) error {
	return &reauthorizeError{reason: "the user granted " + scope + " only; a login with snsapi_userinfo is needed"}
}

// vaultError maps a vault failure to the job's error, deleting a record
// that can never work again: the one at rev, the revision that failed. A
// record written since (the user logged in again meanwhile) is kept.
func (h *Handlers) vaultError(ctx context.Context, appid, openid string, rev uint64, err error) error {
	var forget bool
	var out error
	switch code := wechat.ErrCode(err); {
	case errors.Is(err, vault.ErrNotFound):
		out = &reauthorizeError{reason: "no stored OAuth grant for this user (never stored, expired or forgotten)"}
	case errors.Is(err, vault.ErrRefreshExpired):
		out, forget = &reauthorizeError{reason: "the refresh_token has expired"}, true
	case grantDead(code):
		out, forget = &reauthorizeError{reason: "WeChat says the grant is no longer valid", err: err}, true
	case errors.Is(err, vault.ErrDecrypt), errors.Is(err, vault.ErrUnknownKey), errors.Is(err, vault.ErrCorrupt):
		return &vaultBrokenError{err: err}
	case !fromWeChat(err) && ctx.Err() == nil:
		// The KV store failed: a retry may do better.
		return &storeError{what: "vault", err: err}
	default:
		return err
	}
	if forget && rev != 0 {
		res, ferr := h.cfg.Vault.ForgetIf(context.WithoutCancel(ctx), appid, openid, rev)
		switch {
		case ferr != nil:
			h.log.Warn("cannot delete a dead vault record", "appid", appid, "openid", openid, "err", ferr)
		case res == vault.ChangedMeanwhile:
			h.log.Info("dead vault record not deleted: it changed meanwhile (a new login?)", "appid", appid, "openid", openid, "revision", rev)
		}
	}
	return out
}

// storeInVault keeps a fresh exchange's tokens, when the app has the vault
// on. It reports whether they are stored.
func (h *Handlers) storeInVault(j *job, app App, tok wechat.OAuthToken) bool {
	if !app.Vault || h.cfg.Vault == nil {
		return false
	}
	t := vault.FromExchange(tok, h.cfg.Vault.Now(), app.refreshTTL(), nil)
	if profileScope(tok.Scope) {
		if _, err := h.cfg.Vault.Store(j.finish, app.AppID, tok.OpenID, t); err != nil {
			h.log.Warn("cannot store the user's tokens in the vault", append(j.logAttrs(), "err", err)...)
			return false
		}
		return true
	}
	// A narrower grant (snsapi_base: a silent login) never replaces a
	// user's live snsapi_userinfo one, which oauth.userinfo needs; the
	// revision check keeps a grant another login stores meanwhile.
	for range 3 {
		cur, err := h.cfg.Vault.Get(j.finish, app.AppID, tok.OpenID)
		var rev uint64
		switch {
		case err == nil && profileScope(cur.Tokens.Scope) && cur.Tokens.RefreshValid(h.cfg.Vault.Now()):
			h.log.Info("kept the user's stored "+cur.Tokens.Scope+" grant: a "+tok.Scope+" login does not replace it", j.logAttrs()...)
			return false
		case err == nil:
			rev = cur.Revision
		case !errors.Is(err, vault.ErrNotFound):
			// Unreadable (a retired key?) or the store failed: replace it.
			h.log.Warn("cannot read the user's vault record before storing a new login; replacing it", append(j.logAttrs(), "err", err)...)
			if _, err := h.cfg.Vault.Store(j.finish, app.AppID, tok.OpenID, t); err != nil {
				h.log.Warn("cannot store the user's tokens in the vault", append(j.logAttrs(), "err", err)...)
				return false
			}
			return true
		}
		_, err = h.cfg.Vault.StoreIf(j.finish, app.AppID, tok.OpenID, t, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // another login stored meanwhile: look again
		}
		if err != nil {
			h.log.Warn("cannot store the user's tokens in the vault", append(j.logAttrs(), "err", err)...)
			return false
		}
		return true
	}
	h.log.Warn("cannot store the user's tokens in the vault: the record kept changing", j.logAttrs()...)
	return false
}

// profileScope reports whether a grant's scope entitles /sns/userinfo:
// snsapi_userinfo, or snsapi_login (website apps, /connect/qrconnect).
func profileScope(scope string) bool {
	return hasScope(scope, "snsapi_userinfo") || hasScope(scope, "snsapi_login")
}

// pendingUserInfo finishes an exchanged code whose /sns/userinfo failed:
// with the stored tokens now, or the identity only on the last delivery
// (or when the stored tokens cannot do it).
func (h *Handlers) pendingUserInfo(ctx context.Context, j *job, oc events.OAuthCodeReceived, app App, key string, rec OAuthRecord, rev uint64) error {
	p := h.identityProfile(j, rec.OpenID, rec.Scope, rec.UnionID, rec.IsSnapshotUser)
	if app.Vault && h.cfg.Vault != nil {
		ui, _, err := h.vaultUserInfo(ctx, app, rec.OpenID, oc.Lang)
		if err == nil {
			fillSNS(&p, ui)
			return h.finishOAuth(j, key, rec, rev, p)
		}
		if h.retryLater(j, err) {
			return h.settle(ctx, j, err)
		}
		h.log.Warn("sns/userinfo with the stored token failed; publishing the identity only",
			append(j.logAttrs(), "errcode", wechat.ErrCode(err), "err", err)...)
	}
	return h.finishOAuth(j, key, rec, rev, p)
}

func isReauthorize(err error) bool {
	var re *reauthorizeError
	var vb *vaultBrokenError
	return errors.As(err, &re) || errors.As(err, &vb)
}

// fromWeChat reports whether err is WeChat's answer or a failed call to it.
func fromWeChat(err error) bool {
	var api *wechat.APIError
	var te *wechat.TransportError
	return errors.As(err, &api) || errors.As(err, &te)
}

// retryLater reports whether a failed /sns/userinfo is worth another
// delivery.
func (h *Handlers) retryLater(j *job, err error) bool {
	if isReauthorize(err) || j.last(h.cfg.MaxDeliver) {
		return false
	}
	_, retry := classify(err)
	return retry
}

// grantDead: WeChat's codes for a grant that no refresh can revive (40030
// invalid refresh_token, 42002 expired, 42007 both tokens invalid).
func grantDead(code int) bool {
	return code == wechat.CodeInvalidRefresh || code == wechat.CodeRefreshExpired || code == wechat.CodeTokenException
}
