package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/wechat"
)

// storeError is a failure of a store (wx_oauth, wx_done): worth a retry.
type storeError struct {
	what string
	err  error
}

func (e *storeError) Error() string {
	if e.what == "" {
		return "oauth store: " + e.err.Error()
	}
	return e.what + ": " + e.err.Error()
}
func (e *storeError) Unwrap() error { return e.err }

// claimedElsewhereError: another job owns the code and has not finished.
type claimedElsewhereError struct{ job, by string }

func (e *claimedElsewhereError) Error() string {
	return fmt.Sprintf("the code is being exchanged by job %s (worker %s), which has not finished; this job never exchanges it a second time", e.job, e.by)
}

// OAuthCode handles an oauth.code.received job: exchange the code once
// (GET /sns/oauth2/access_token), for scope snsapi_userinfo also fetch
// /sns/userinfo, then one user.profile or user.profile.failed.
//
// The job that claims the code first owns it. The owner's own
// redeliveries finish from what it stored (the outcome, or the identity
// WeChat returned), or exchange again if an earlier delivery died before
// WeChat answered. Another job with the same code never exchanges it: it
// waits (within its JobTimeout) for the owner's outcome and republishes a
// copy under its own job_id, or is retried later, and on its last
// delivery fails saying which job owns the code.
func (h *Handlers) OAuthCode(msg *message.Message) error {
	return h.run(msg, events.SubjectOAuthCodeReceived, h.subjects.OAuthCodeReceived, h.oauthCode)
}

func (h *Handlers) oauthCode(ctx context.Context, j *job) error {
	oc, err := events.DecodeOAuthCodeReceived(j.msg.Payload)
	if err != nil {
		return h.rejectInvalid(j, err)
	}
	app, ok := h.apps[oc.AppID]
	if !ok {
		return h.reject(j, events.KindConfig, fmt.Sprintf("appid %s is not configured on this worker", oc.AppID))
	}
	if app.Secret == "" {
		return h.reject(j, events.KindConfig, fmt.Sprintf("appid %s has no AppSecret on this worker, and exchanging an OAuth code needs it: set WXHUB_SECRET_%s or the app's secret_file", oc.AppID, strings.ToUpper(oc.AppID)))
	}
	key := OAuthKey(oc.AppID, oc.Code)

	for range 8 { // a few rounds of racing claims and owner updates, then a retry
		rec, rev, err := h.cfg.OAuth.Get(ctx, key)
		switch {
		case errors.Is(err, ErrOAuthNotFound):
			claim := OAuthRecord{State: OAuthClaimed, ClaimedBy: h.cfg.Reporter, ClaimedAt: h.cfg.Now().UTC(), JobID: j.jobID, JobState: oc.State}
			rev, err := h.cfg.OAuth.Create(ctx, key, claim)
			if errors.Is(err, ErrOAuthExists) {
				continue
			}
			if err != nil {
				return h.settle(ctx, j, &storeError{err: err})
			}
			return h.exchange(ctx, j, oc, app, key, claim, rev)
		case err != nil:
			return h.settle(ctx, j, &storeError{err: err})
		}
		switch {
		case rec.JobID != j.jobID && otherLogin(rec.JobState, oc.State):
			// The code is another login's (its state differs): a used
			// code replayed in a new login must not log in as that user.
			h.log.Warn("OAuth code belongs to another login (its state differs): refused", append(j.logAttrs(), "exchanged_by_job", rec.JobID)...)
			return h.publishFailure(j, h.failure(j, events.FailureError{Kind: events.KindWeChat, ErrCode: wechat.CodeCodeBeenUsed,
				ErrMsg: fmt.Sprintf("code been used: the code belongs to job %s, another login (a different state); the user must authorize again", rec.JobID)}))
		case rec.State == OAuthDone && rec.JobID != j.jobID && h.cfg.Now().Sub(rec.ClaimedAt) > CodeCopyWindow:
			// Past any code's life WeChat itself would refuse the code: a
			// job other than the owner gets no copy.
			h.log.Warn("OAuth code was exchanged too long ago to give another job its outcome: refused", append(j.logAttrs(), "exchanged_by_job", rec.JobID, "claimed_at", rec.ClaimedAt)...)
			return h.publishFailure(j, h.failure(j, events.FailureError{Kind: events.KindWeChat, ErrCode: wechat.CodeCodeBeenUsed,
				ErrMsg: fmt.Sprintf("code been used: job %s exchanged the code more than %s ago; the user must authorize again", rec.JobID, CodeCopyWindow)}))
		case rec.State == OAuthDone:
			return h.republish(ctx, j, rec)
		case rec.JobID == j.jobID && j.d.Delivered > 1:
			// Our own earlier delivery, over by now (a delivery ends
			// below its AckWait), left the code unfinished.
			if rec.State == OAuthExchanged || rec.State == OAuthUserInfoPending {
				// The user's token died with that delivery unless the
				// vault keeps it; else the stored identity is all there is.
				return h.pendingUserInfo(ctx, j, oc, app, key, rec, rev)
			}
			// It died before WeChat answered (or its answer was lost):
			// ask again; WeChat answers, or says the code was used.
			claim := rec
			claim.ClaimedBy, claim.ClaimedAt = h.cfg.Reporter, h.cfg.Now().UTC()
			nrev, err := h.cfg.OAuth.Update(ctx, key, claim, rev)
			if errors.Is(err, ErrOAuthConflict) {
				continue
			}
			if err != nil {
				return h.settle(ctx, j, &storeError{err: err})
			}
			h.log.Info("exchanging the code again after an unfinished earlier delivery", append(j.logAttrs(), "claimed_by", rec.ClaimedBy)...)
			return h.exchange(ctx, j, oc, app, key, claim, nrev)
		default:
			// Another job (or a twin message of this one) owns the code:
			// wait for its outcome.
			if err := h.cfg.OAuth.Wait(ctx, key, rev); err != nil {
				if ctx.Err() != nil {
					return h.settle(ctx, j, &claimedElsewhereError{job: rec.JobID, by: rec.ClaimedBy})
				}
				return h.settle(ctx, j, &storeError{err: err})
			}
		}
	}
	return h.settle(ctx, j, &storeError{err: errors.New("the record kept changing")})
}

// codeSpentError: the exchange answered -1, and WeChat counts the code as
// used even then, so asking again can only answer 40163.
type codeSpentError struct{ err error }

func (e *codeSpentError) Error() string {
	return "the code was spent: WeChat answered the exchange with a system error and counts the code as used, so it is not exchanged again; the user must authorize again: " + e.err.Error()
}
func (e *codeSpentError) Unwrap() error { return e.err }

// exchange trades the claimed code and ends the job.
func (h *Handlers) exchange(ctx context.Context, j *job, oc events.OAuthCodeReceived, app App, key string, claim OAuthRecord, rev uint64) error {
	var tok wechat.OAuthToken
	err := h.retryTransient(ctx, func(ctx context.Context) error {
		var err error
		tok, err = h.cfg.WeChat.ExchangeCode(ctx, app.AppID, app.Secret, oc.Code)
		if wechat.ErrCode(err) == wechat.CodeSystemError {
			return &codeSpentError{err: err}
		}
		return err
	})
	if err != nil {
		fe, retry := classify(err)
		var spent *codeSpentError
		if errors.As(err, &spent) {
			fe = events.FailureError{Kind: events.KindWeChat, ErrCode: wechat.ErrCode(err), ErrMsg: spent.Error()}
			retry = false
		}
		if retry && !j.last(h.cfg.MaxDeliver) {
			// Unknown whether WeChat used the code: keep the claim; this
			// job's redelivery asks again, other jobs wait for it.
			return h.settle(ctx, j, err)
		}
		f := h.failure(j, fe)
		b, merr := json.Marshal(f)
		if merr != nil {
			return fmt.Errorf("handlers: encode failure: %w", merr)
		}
		claim.State, claim.ResultSubject, claim.Result = OAuthDone, events.SubjectUserProfileFailed, b
		if _, serr := h.cfg.OAuth.Update(j.finish, key, claim, rev); serr != nil {
			h.log.Warn("cannot store the OAuth failure", append(j.logAttrs(), "err", serr)...)
		}
		return h.publishFailureBytes(j, b, fe)
	}
	h.log.Debug("code exchanged", append(j.logAttrs(), "token", tok)...)

	// Keep the identity (never the user's tokens) before anything else.
	claim.State, claim.OpenID, claim.Scope, claim.UnionID, claim.IsSnapshotUser = OAuthExchanged, tok.OpenID, tok.Scope, tok.UnionID, tok.IsSnapshotUser
	if nrev, serr := h.cfg.OAuth.Update(j.finish, key, claim, rev); serr != nil {
		h.log.Warn("cannot store the OAuth exchange", append(j.logAttrs(), "err", serr)...)
	} else {
		rev = nrev
	}

	stored := h.storeInVault(j, app, tok)
	p := h.identityProfile(j, tok.OpenID, tok.Scope, tok.UnionID, tok.IsSnapshotUser)
	if profileScope(tok.Scope) {
		var ui wechat.SNSUserInfo
		err := h.retryTransient(ctx, func(ctx context.Context) error {
			var err error
			ui, err = h.cfg.WeChat.SNSUserInfo(ctx, tok.AccessToken, tok.OpenID, oc.Lang)
			return err
		})
		if err != nil && stored && h.retryLater(j, err) {
			// The vault has the token: this job's redelivery tries
			// /sns/userinfo again rather than settle for the identity.
			pending := claim
			pending.State = OAuthUserInfoPending
			if _, serr := h.cfg.OAuth.Update(j.finish, key, pending, rev); serr == nil {
				h.log.Info("sns/userinfo failed after the exchange; retrying later with the stored token", append(j.logAttrs(), "errcode", wechat.ErrCode(err))...)
				return h.settle(ctx, j, err)
			}
		}
		if err != nil {
			h.log.Warn("sns/userinfo failed after the exchange; publishing the identity only",
				append(j.logAttrs(), "errcode", wechat.ErrCode(err), "err", err)...)
		} else {
			sex := ui.Sex
			p.Source, p.Nickname, p.HeadImgURL, p.Sex = events.SourceSNSUserInfo, ui.Nickname, ui.HeadImgURL, &sex
			p.Province, p.City, p.Country, p.Privilege = ui.Province, ui.City, ui.Country, ui.Privilege
			if ui.UnionID != "" {
				p.UnionID = ui.UnionID
			}
		}
	}
	return h.finishOAuth(j, key, claim, rev, p)
}

func (h *Handlers) identityProfile(j *job, openid, scope, unionid string, snapshot int) events.UserProfile {
	return events.UserProfile{
		JobID: j.jobID, AppID: j.appID, OpenID: openid, Source: events.SourceSNSOAuth2,
		UnionID: unionid, Scope: scope, IsSnapshotUser: snapshot, CompletedAt: h.cfg.Now().UTC(),
	}
}

// finishOAuth stores the profile as the code's outcome, then publishes it.
func (h *Handlers) finishOAuth(j *job, key string, rec OAuthRecord, rev uint64, p events.UserProfile) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("handlers: encode profile: %w", err)
	}
	rec.State, rec.ResultSubject, rec.Result, rec.JobID = OAuthDone, events.SubjectUserProfile, b, j.jobID
	if _, err := h.cfg.OAuth.Update(j.finish, key, rec, rev); err != nil {
		h.log.Warn("cannot store the OAuth outcome", append(j.logAttrs(), "err", err)...)
	}
	return h.publishProfileBytes(j, b)
}

// CodeCopyWindow is how long after a code was claimed another job with
// the same code (a business system's retry under a new job_id) may still
// get a copy of its outcome: the longest a code lives at WeChat (10
// minutes for website apps, 5 for the others). Later, a job other than
// the owner fails with 40163 as WeChat would answer; the owner's own
// redeliveries always finish from the stored outcome.
const CodeCopyWindow = 10 * time.Minute

// otherLogin reports whether a job with OAuth state job is another login
// than the code's owner, whose state was owner: both name a state and
// they differ. A job without a state (a business system's retry under a
// new job_id) may get the owner's outcome.
func otherLogin(owner, job string) bool { return owner != "" && job != "" && owner != job }

// republish publishes a stored outcome for this job: the same bytes for
// the same job_id (JetStream then drops it as a duplicate if the first
// made it), or a copy under this job's job_id.
func (h *Handlers) republish(ctx context.Context, j *job, rec OAuthRecord) error {
	h.stats.republished.Add(1)
	h.log.Info("republishing the stored OAuth outcome", append(j.logAttrs(), "exchanged_by_job", rec.JobID)...)
	switch rec.ResultSubject {
	case events.SubjectUserProfile:
		b := []byte(rec.Result)
		if rec.JobID != j.jobID {
			var p events.UserProfile
			if err := json.Unmarshal(rec.Result, &p); err != nil {
				return h.settle(ctx, j, &storeError{err: err})
			}
			p.JobID, p.AppID = j.jobID, j.appID
			var err error
			if b, err = json.Marshal(p); err != nil {
				return fmt.Errorf("handlers: encode profile: %w", err)
			}
		}
		return h.publishProfileBytes(j, b)
	default:
		var f events.UserProfileFailed
		if err := json.Unmarshal(rec.Result, &f); err != nil {
			return h.settle(ctx, j, &storeError{err: err})
		}
		b := []byte(rec.Result)
		if rec.JobID != j.jobID {
			f.JobID, f.JobSubject, f.Attempts = j.jobID, j.d.Subject, j.d.Delivered
			var err error
			if b, err = json.Marshal(f); err != nil {
				return fmt.Errorf("handlers: encode failure: %w", err)
			}
		}
		return h.publishFailureBytes(j, b, f.Error)
	}
}

func hasScope(scopes, want string) bool {
	for s := range strings.SplitSeq(scopes, ",") {
		if strings.TrimSpace(s) == want {
			return true
		}
	}
	return false
}
