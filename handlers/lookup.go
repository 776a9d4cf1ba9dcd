package handlers

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/wechat"
)

// UserLookup handles a user.lookup job: GET /cgi-bin/user/info with the
// app's global token, then one user.profile or user.profile.failed.
func (h *Handlers) UserLookup(msg *message.Message) error {
	return h.run(msg, events.SubjectUserLookup, h.subjects.UserLookup, h.userLookup)
}

func (h *Handlers) userLookup(ctx context.Context, j *job) error {
	lk, err := events.DecodeUserLookup(j.msg.Payload)
	if err != nil {
		return h.rejectInvalid(j, err)
	}
	j.jobID, j.appID = lk.JobID, lk.AppID
	if _, ok := h.apps[lk.AppID]; !ok {
		return h.reject(j, events.KindConfig, fmt.Sprintf("appid %s is not configured on this worker", lk.AppID))
	}

	var info wechat.UserInfo
	err = h.withToken(ctx, lk.AppID, func(ctx context.Context, token string) error {
		return h.retryTransient(ctx, func(ctx context.Context) error {
			var err error
			info, err = h.cfg.WeChat.UserInfo(ctx, token, lk.OpenID, lk.Lang)
			return err
		})
	})
	if err != nil {
		return h.settle(ctx, j, err)
	}
	sub := info.Subscribe
	p := events.UserProfile{
		JobID:          lk.JobID,
		AppID:          lk.AppID,
		OpenID:         info.OpenID,
		Source:         events.SourceUserInfo,
		UnionID:        info.UnionID,
		Subscribe:      &sub,
		SubscribeTime:  info.SubscribeTime,
		SubscribeScene: info.SubscribeScene,
		QRScene:        info.QRScene,
		QRSceneStr:     info.QRSceneStr,
		Remark:         info.Remark,
		TagIDList:      info.TagIDList,
		Language:       info.Language,
		CompletedAt:    h.cfg.Now().UTC(),
	}
	if p.OpenID == "" {
		p.OpenID = lk.OpenID
	}
	return h.publishProfile(j, p)
}
