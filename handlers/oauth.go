package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/wechat"
)

// storeError is a failure of the OAuth store: worth a retry.
type storeError struct{ err error }

func (e *storeError) Error() string { return "oauth store: " + e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// claimedElsewhereError: another delivery holds a fresh claim on the code.
type claimedElsewhereError struct{ by string }

func (e *claimedElsewhereError) Error() string {
	return fmt.Sprintf("the code is being exchanged by %s", e.by)
}

// OAuthCode handles an oauth.code.received job: exchange the code once
// (GET /sns/oauth2/access_token), for scope snsapi_userinfo also fetch
// /sns/userinfo, then one user.profile or user.profile.failed. A
// redelivery, or another job with the same code, republishes the stored
// outcome and never exchanges again.
func (h *Handlers) OAuthCode(msg *message.Message) error {
	j := h.newJob(msg, events.SubjectOAuthCodeReceived, h.subjects.OAuthCodeReceived)
	ctx, cancel := context.WithTimeout(msg.Context(), h.cfg.JobTimeout)
	defer cancel()

	oc, err := events.DecodeOAuthCodeReceived(msg.Payload)
	if err != nil {
		return h.rejectInvalid(ctx, j, err)
	}
	j.jobID, j.appID = oc.JobID, oc.AppID
	app, ok := h.apps[oc.AppID]
	if !ok {
		return h.reject(ctx, j, events.KindConfig, fmt.Sprintf("appid %s is not configured on this worker", oc.AppID))
	}
	key := OAuthKey(oc.AppID, oc.Code)

	for range 4 { // a few rounds of racing claims, then a retry
		rec, rev, err := h.cfg.OAuth.Get(ctx, key)
		switch {
		case errors.Is(err, ErrOAuthNotFound):
			claim := OAuthRecord{State: OAuthClaimed, ClaimedBy: h.cfg.Reporter, ClaimedAt: h.cfg.Now().UTC(), JobID: oc.JobID}
			rev, err := h.cfg.OAuth.Create(ctx, key, claim)
			if errors.Is(err, ErrOAuthExists) {
				continue
			}
			if err != nil {
				return h.settle(ctx, j, &storeError{err})
			}
			return h.exchange(ctx, j, oc, app, key, claim, rev)
		case err != nil:
			return h.settle(ctx, j, &storeError{err})
		}
		switch rec.State {
		case OAuthDone:
			return h.republish(ctx, j, rec)
		case OAuthExchanged:
			if h.cfg.Now().Sub(rec.ClaimedAt) < h.cfg.ClaimTimeout {
				// The exchanging job is still fetching the profile.
				return h.settle(ctx, j, &claimedElsewhereError{by: rec.ClaimedBy})
			}
			// The exchanging worker died before storing the result; the
			// user's token died with it, so the identity is all there is.
			p := h.identityProfile(j, rec.OpenID, rec.Scope, rec.UnionID, rec.IsSnapshotUser)
			return h.finishOAuth(ctx, j, key, rec, rev, p)
		default: // claimed
			if h.cfg.Now().Sub(rec.ClaimedAt) < h.cfg.ClaimTimeout {
				return h.settle(ctx, j, &claimedElsewhereError{by: rec.ClaimedBy})
			}
			// The claimant died mid-exchange: take over. The code may be
			// used already; WeChat then says 40163 and the job fails.
			claim := OAuthRecord{State: OAuthClaimed, ClaimedBy: h.cfg.Reporter, ClaimedAt: h.cfg.Now().UTC(), JobID: oc.JobID}
			nrev, err := h.cfg.OAuth.Update(ctx, key, claim, rev)
			if errors.Is(err, ErrOAuthConflict) {
				continue
			}
			if err != nil {
				return h.settle(ctx, j, &storeError{err})
			}
			h.log.Warn("taking over an abandoned OAuth claim", append(j.logAttrs(), "claimed_by", rec.ClaimedBy, "claimed_at", rec.ClaimedAt)...)
			return h.exchange(ctx, j, oc, app, key, claim, nrev)
		}
	}
	return h.settle(ctx, j, &storeError{errors.New("the record kept changing")})
}

// exchange trades the claimed code and ends the job.
func (h *Handlers) exchange(ctx context.Context, j *job, oc events.OAuthCodeReceived, app App, key string, claim OAuthRecord, rev uint64) error {
	var tok wechat.OAuthToken
	err := h.retryTransient(ctx, func(ctx context.Context) error {
		var err error
		tok, err = h.cfg.WeChat.ExchangeCode(ctx, app.AppID, app.Secret, oc.Code)
		return err
	})
	if err != nil {
		fe, retry := classify(err)
		if retry {
			// Unknown whether WeChat used the code: release the claim so
			// a later delivery asks again (and gets the answer or 40163).
			if derr := h.cfg.OAuth.Delete(context.WithoutCancel(ctx), key, rev); derr != nil {
				h.log.Warn("cannot release the OAuth claim", append(j.logAttrs(), "err", derr)...)
			}
			return h.settle(ctx, j, err)
		}
		f := h.failure(j, fe)
		b, merr := json.Marshal(f)
		if merr != nil {
			return fmt.Errorf("handlers: encode failure: %w", merr)
		}
		claim.State, claim.ResultSubject, claim.Result = OAuthDone, events.SubjectUserProfileFailed, b
		if _, serr := h.cfg.OAuth.Update(context.WithoutCancel(ctx), key, claim, rev); serr != nil {
			h.log.Warn("cannot store the OAuth failure", append(j.logAttrs(), "err", serr)...)
		}
		return h.publishFailureBytes(ctx, j, b, fe)
	}
	h.log.Debug("code exchanged", append(j.logAttrs(), "token", tok)...)

	// Keep the identity (never the user's tokens) before anything else.
	claim.State, claim.OpenID, claim.Scope, claim.UnionID, claim.IsSnapshotUser = OAuthExchanged, tok.OpenID, tok.Scope, tok.UnionID, tok.IsSnapshotUser
	if nrev, serr := h.cfg.OAuth.Update(context.WithoutCancel(ctx), key, claim, rev); serr != nil {
		h.log.Warn("cannot store the OAuth exchange", append(j.logAttrs(), "err", serr)...)
	} else {
		rev = nrev
	}

	p := h.identityProfile(j, tok.OpenID, tok.Scope, tok.UnionID, tok.IsSnapshotUser)
	if hasScope(tok.Scope, "snsapi_userinfo") {
		var ui wechat.SNSUserInfo
		err := h.retryTransient(ctx, func(ctx context.Context) error {
			var err error
			ui, err = h.cfg.WeChat.SNSUserInfo(ctx, tok.AccessToken, tok.OpenID, oc.Lang)
			return err
		})
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
	return h.finishOAuth(ctx, j, key, claim, rev, p)
}

func (h *Handlers) identityProfile(j *job, openid, scope, unionid string, snapshot int) events.UserProfile {
	return events.UserProfile{
		JobID: j.jobID, AppID: j.appID, OpenID: openid, Source: events.SourceSNSOAuth2,
		UnionID: unionid, Scope: scope, IsSnapshotUser: snapshot, CompletedAt: h.cfg.Now().UTC(),
	}
}

// finishOAuth stores the profile as the code's outcome, then publishes it.
func (h *Handlers) finishOAuth(ctx context.Context, j *job, key string, rec OAuthRecord, rev uint64, p events.UserProfile) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("handlers: encode profile: %w", err)
	}
	rec.State, rec.ResultSubject, rec.Result, rec.JobID = OAuthDone, events.SubjectUserProfile, b, j.jobID
	if _, err := h.cfg.OAuth.Update(context.WithoutCancel(ctx), key, rec, rev); err != nil {
		h.log.Warn("cannot store the OAuth outcome", append(j.logAttrs(), "err", err)...)
	}
	return h.publishProfileBytes(ctx, j, b)
}

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
				return h.settle(ctx, j, &storeError{err})
			}
			p.JobID, p.AppID = j.jobID, j.appID
			var err error
			if b, err = json.Marshal(p); err != nil {
				return fmt.Errorf("handlers: encode profile: %w", err)
			}
		}
		return h.publishProfileBytes(ctx, j, b)
	default:
		var f events.UserProfileFailed
		if err := json.Unmarshal(rec.Result, &f); err != nil {
			return h.settle(ctx, j, &storeError{err})
		}
		b := []byte(rec.Result)
		if rec.JobID != j.jobID {
			f.JobID, f.JobSubject, f.Attempts = j.jobID, j.d.Subject, j.d.Delivered
			var err error
			if b, err = json.Marshal(f); err != nil {
				return fmt.Errorf("handlers: encode failure: %w", err)
			}
		}
		return h.publishFailureBytes(ctx, j, b, f.Error)
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
