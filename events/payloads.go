package events

import "time"

// UserLookup is the job on user.lookup: fetch a follower's profile with
// GET /cgi-bin/user/info.
type UserLookup struct {
	JobID  string `json:"job_id"`
	AppID  string `json:"appid"`
	OpenID string `json:"openid"`
	Lang   string `json:"lang,omitempty"`
}

// OAuthCodeReceived is the job on oauth.code.received: exchange an OAuth
// code (once) and, for snsapi_userinfo, fetch the user's profile.
type OAuthCodeReceived struct {
	JobID string `json:"job_id"`
	AppID string `json:"appid"`
	Code  string `json:"code"`
	State string `json:"state,omitempty"`
	Lang  string `json:"lang,omitempty"`
}

// OAuthUserInfo is the job on oauth.userinfo: fetch the profile of a user
// who logged in with snsapi_userinfo, with the tokens kept in the vault
// (GET /sns/userinfo, refreshing the user's access_token when it has
// expired). A user without a usable grant fails with kind reauthorize.
type OAuthUserInfo struct {
	JobID  string `json:"job_id"`
	AppID  string `json:"appid"`
	OpenID string `json:"openid"`
	Lang   string `json:"lang,omitempty"`
}

// Profile sources.
const (
	SourceUserInfo    = "user.info"
	SourceSNSUserInfo = "sns.userinfo"
	SourceSNSOAuth2   = "sns.oauth2"
)

// UserProfile is the success result on user.profile. It never carries a
// user's access_token or refresh_token.
type UserProfile struct {
	JobID          string    `json:"job_id"`
	AppID          string    `json:"appid"`
	OpenID         string    `json:"openid"`
	Source         string    `json:"source"`
	UnionID        string    `json:"unionid,omitempty"`
	Subscribe      *int      `json:"subscribe,omitempty"`
	SubscribeTime  int64     `json:"subscribe_time,omitempty"`
	SubscribeScene string    `json:"subscribe_scene,omitempty"`
	QRScene        int64     `json:"qr_scene,omitempty"`
	QRSceneStr     string    `json:"qr_scene_str,omitempty"`
	Remark         string    `json:"remark,omitempty"`
	TagIDList      []int64   `json:"tagid_list,omitempty"`
	Language       string    `json:"language,omitempty"`
	Nickname       string    `json:"nickname,omitempty"`
	HeadImgURL     string    `json:"headimgurl,omitempty"`
	Sex            *int      `json:"sex,omitempty"`
	Province       string    `json:"province,omitempty"`
	City           string    `json:"city,omitempty"`
	Country        string    `json:"country,omitempty"`
	Privilege      []string  `json:"privilege,omitempty"`
	Scope          string    `json:"scope,omitempty"`
	IsSnapshotUser int       `json:"is_snapshotuser,omitempty"`
	CompletedAt    time.Time `json:"completed_at"`
}

// Failure kinds (error.kind in user.profile.failed).
const (
	KindInvalidJob       = "invalid_job"
	KindWeChat           = "wechat"
	KindQuota            = "quota"
	KindTokenUnavailable = "token_unavailable"
	KindConfig           = "config"
	KindTimeout          = "timeout"
	KindInternal         = "internal"
	// KindReauthorize: the user has no usable grant any more (no vault
	// record, refresh_token expired or revoked: 40030, 42002, 42007, or a
	// snsapi_base grant): send them through the login again. Never
	// retryable.
	KindReauthorize = "reauthorize"
)

// FailureError describes why a job failed.
type FailureError struct {
	Kind      string `json:"kind"`
	ErrCode   int    `json:"errcode,omitempty"`
	ErrMsg    string `json:"errmsg,omitempty"`
	Retryable bool   `json:"retryable"`
}

// UserProfileFailed is the terminal failure result on user.profile.failed.
// JobID and AppID may be empty when the job was too malformed to read them.
type UserProfileFailed struct {
	JobID      string       `json:"job_id"`
	JobSubject string       `json:"job_subject"`
	AppID      string       `json:"appid"`
	Error      FailureError `json:"error"`
	Attempts   int          `json:"attempts"`
	FailedAt   time.Time    `json:"failed_at"`
}

// Reasons for a token refresh (token.refreshed reason).
const (
	ReasonStartup     = "startup"
	ReasonScheduled   = "scheduled"
	ReasonInvalidated = "invalidated"
	ReasonManual      = "manual"
	ReasonTakeover    = "takeover"
)

// TokenRefreshed is published by the holder after it stored a new token. It
// never carries the token itself.
type TokenRefreshed struct {
	AppID     string    `json:"appid"`
	Version   uint64    `json:"version"`
	ExpiresAt time.Time `json:"expires_at"`
	FetchedAt time.Time `json:"fetched_at"`
	Reason    string    `json:"reason"`
	Holder    string    `json:"holder,omitempty"`
}

// TokenInvalidated is a report from any token user that WeChat rejected the
// token with the given version.
type TokenInvalidated struct {
	AppID    string `json:"appid"`
	Version  uint64 `json:"version"`
	ErrCode  int    `json:"errcode"`
	Reporter string `json:"reporter,omitempty"`
}

// TokenRefreshFailed is published by the holder when a refresh failed.
type TokenRefreshFailed struct {
	AppID         string    `json:"appid"`
	ErrCode       int       `json:"errcode"`
	ErrMsg        string    `json:"errmsg,omitempty"`
	NextAttemptAt time.Time `json:"next_attempt_at"`
}

// TokenRefreshRequest asks the app's leading holder for a manual refresh
// (reason manual): core NATS request/reply on wxhub.token.refresh, sent by
// `wxhub token invalidate`. It is not a report: it never counts towards
// conflict detection; it has its own rate limit. Only the leader answers,
// with a TokenRefreshReply; no answer means no holder leads the app. A
// leader that stops answers Refused not_leading and makes no refresh: ask
// again (with Version set, asking again never makes a second refresh).
type TokenRefreshRequest struct {
	AppID     string `json:"appid"`
	Requester string `json:"requester,omitempty"`
	// Version, when set, is the stored version the requester wants
	// replaced (0: none was stored). A holder that finds a newer token
	// stored answers with it and fetches nothing, so a request asked
	// again (a retry, a second try during a failover) never makes a second
	// refresh. Unset: refresh whatever is stored.
	Version *uint64 `json:"version,omitempty"`
	// TimeoutMS is how long the requester waits for the answer, in
	// milliseconds (0: not said; the holder then answers within 10 s). The
	// holder answers before it ends: with the outcome, or, when the
	// refresh has not ended by then, that it is under way
	// (TokenRefreshReply.UnderWay).
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// TokenRefreshReply is the leader's answer to a TokenRefreshRequest: the
// new version, or why no refresh was made (Refused: a lockout state such
// as conflict, quota_reserve, force_limit, backoff, rate_limited, with
// when it ends), or that the refresh is still under way (UnderWay), or an
// error.
type TokenRefreshReply struct {
	AppID     string    `json:"appid"`
	Version   uint64    `json:"version,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Holder    string    `json:"holder,omitempty"`
	Refused   string    `json:"refused,omitempty"` // the lockout state
	Until     time.Time `json:"until,omitzero"`
	// UnderWay: the refresh had not ended when the answer was due (the
	// requester's timeout): it goes on, and its outcome is announced as
	// usual (token.refreshed with the new version, or token.refresh_failed).
	// Not a failure; Error says so in one line.
	UnderWay bool   `json:"under_way,omitempty"`
	Error    string `json:"error,omitempty"` // one line, names the state when refused
}

// TokenConflict is published by the holder when reports arrive against a
// token it fetched moments ago: another system is fetching tokens for this
// appid and knocking ours out.
type TokenConflict struct {
	AppID   string `json:"appid"`
	Version uint64 `json:"version"`
	Detail  string `json:"detail,omitempty"`
}
