package events

// Bare subject names, without any configured prefix.
const (
	SubjectUserLookup        = "user.lookup"
	SubjectOAuthCodeReceived = "oauth.code.received"
	// SubjectOAuthUserInfo is the job "fetch this user's profile again with
	// the OAuth tokens in the vault" (apps with the vault on).
	SubjectOAuthUserInfo      = "oauth.userinfo"
	SubjectUserProfile        = "user.profile"
	SubjectUserProfileFailed  = "user.profile.failed"
	SubjectTokenRefreshed     = "token.refreshed"
	SubjectTokenInvalidated   = "token.invalidated"
	SubjectTokenRefreshFailed = "token.refresh_failed"
	SubjectTokenConflict      = "token.conflict"
	// SubjectDeadLetterPrefix is followed by the job subject, e.g.
	// "deadletter.user.lookup"; the message body is the original job bytes.
	SubjectDeadLetterPrefix = "deadletter."
	// SubjectStatus is the scatter-gather request `wxhub status` sends;
	// every running holder and worker answers it (no secrets).
	SubjectStatus = "wxhub.status"
	// SubjectStoredResultPrefix is followed by a result subject, e.g.
	// "wxhub.result.user.profile": the internal subject workers publish
	// results to. Only the WX_RESULTS stream listens there; it stores
	// each result under its public subject (user.profile,
	// user.profile.failed) and only then republishes it to core
	// subscribers, so a duplicate publish, dropped by the stream, never
	// reaches anyone.
	SubjectStoredResultPrefix = "wxhub.result."
	// SubjectTokenRefreshRequest is the request/reply subject on which
	// the app's leading holder answers a manual refresh request
	// (TokenRefreshRequest → TokenRefreshReply; `wxhub token
	// invalidate`). Not a report: no conflict detection, its own rate
	// limit.
	SubjectTokenRefreshRequest = "wxhub.token.refresh"
	// SubjectStoredDeadLetterPrefix is followed by a job subject, e.g.
	// "wxhub.deadletter.user.lookup": the internal subject dead letters
	// are published to. WX_DEADLETTERS stores them as deadletter.<job
	// subject> and then republishes them there, as WX_RESULTS does.
	SubjectStoredDeadLetterPrefix = "wxhub.deadletter."
	// SubjectReply, followed by "." and a unique token, is where wxhub's
	// admin commands ask holders, workers and gateways to answer (`wxhub
	// status`, `wxhub token invalidate`) instead of an _INBOX, so that
	// answering needs no allow_responses grant (see broker/grants).
	SubjectReply = "wxhub.reply"
)

// KV bucket names.
const (
	BucketTokens = "wx_tokens"
	BucketLeases = "wx_leases"
	BucketQuota  = "wx_quota"
	BucketOAuth  = "wx_oauth"
	// BucketDone keeps one record per finished job (key: DoneKey of the
	// result id), for as long as the job could still be delivered.
	BucketDone = "wx_done"
	// BucketLoginState holds web-login states (gateway/weblogin): key =
	// the nonce sent to WeChat as state, TTL 10 minutes, used once.
	BucketLoginState = "wx_login_state"
	// BucketVault keeps users' OAuth tokens, AES-256-GCM encrypted (see
	// package handlers/vault); only workers and the vault admin may read it.
	BucketVault = "wx_vault"
)

// JetStream stream names (stream names cannot contain dots).
const (
	StreamJobs        = "WX_JOBS"
	StreamResults     = "WX_RESULTS"
	StreamTokenEvents = "WX_TOKEN_EVENTS"
	StreamDeadLetters = "WX_DEADLETTERS"
)

// Message headers.
const (
	// HeaderMsgID is JetStream's dedupe header; jobs and their results both
	// carry the job_id in it.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderCorrelationID carries a correlation id from job to result.
	HeaderCorrelationID = "Wx-Correlation-Id"
	// HeaderDeadLetterReason says why a job went to the dead-letter subject.
	HeaderDeadLetterReason = "Wx-Dead-Letter-Reason"
	// HeaderDeadLetterTruncated marks a dead letter whose job, with the
	// dead letter's headers added, did not fit in the server's
	// max_payload: its body is the job's first bytes, cut to fit, and the
	// value is the job's original size in bytes.
	HeaderDeadLetterTruncated = "Wx-Dead-Letter-Truncated"
)

// Subjects holds every subject name with a prefix applied. The zero value
// is not useful; build one with NewSubjects.
type Subjects struct {
	Prefix             string
	UserLookup         string
	OAuthCodeReceived  string
	OAuthUserInfo      string
	UserProfile        string
	UserProfileFailed  string
	TokenRefreshed     string
	TokenInvalidated   string
	TokenRefreshFailed string
	TokenConflict      string
	// TokenRefreshRequest: manual refresh requests (request/reply).
	TokenRefreshRequest string
	DeadLetterPrefix    string
	// StoredUserProfile and StoredUserProfileFailed are the internal
	// subjects results are published to (see SubjectStoredResultPrefix).
	StoredUserProfile       string
	StoredUserProfileFailed string
	// StoredResultPrefix is Prefix + SubjectStoredResultPrefix.
	StoredResultPrefix string
	// StoredDeadLetterPrefix is Prefix + SubjectStoredDeadLetterPrefix.
	StoredDeadLetterPrefix string
}

// NewSubjects returns the subject names under prefix. An empty prefix gives
// the bare names; a prefix without a trailing dot gets one ("wx" → "wx.").
func NewSubjects(prefix string) Subjects {
	if prefix != "" && prefix[len(prefix)-1] != '.' {
		prefix += "."
	}
	return Subjects{
		Prefix:              prefix,
		UserLookup:          prefix + SubjectUserLookup,
		OAuthCodeReceived:   prefix + SubjectOAuthCodeReceived,
		OAuthUserInfo:       prefix + SubjectOAuthUserInfo,
		UserProfile:         prefix + SubjectUserProfile,
		UserProfileFailed:   prefix + SubjectUserProfileFailed,
		TokenRefreshed:      prefix + SubjectTokenRefreshed,
		TokenInvalidated:    prefix + SubjectTokenInvalidated,
		TokenRefreshFailed:  prefix + SubjectTokenRefreshFailed,
		TokenConflict:       prefix + SubjectTokenConflict,
		TokenRefreshRequest: prefix + SubjectTokenRefreshRequest,
		DeadLetterPrefix:    prefix + SubjectDeadLetterPrefix,

		StoredUserProfile:       prefix + SubjectStoredResultPrefix + SubjectUserProfile,
		StoredUserProfileFailed: prefix + SubjectStoredResultPrefix + SubjectUserProfileFailed,
		StoredResultPrefix:      prefix + SubjectStoredResultPrefix,
		StoredDeadLetterPrefix:  prefix + SubjectStoredDeadLetterPrefix,
	}
}

// Jobs returns the job subjects.
func (s Subjects) Jobs() []string {
	return []string{s.UserLookup, s.OAuthCodeReceived, s.OAuthUserInfo}
}

// Results returns the public result subjects: the subjects results are
// stored under in WX_RESULTS (filter a consumer on them) and republished
// on to core subscribers.
func (s Subjects) Results() []string { return []string{s.UserProfile, s.UserProfileFailed} }

// StoredResults returns the internal subjects workers publish results to
// (the WX_RESULTS stream's own subjects).
func (s Subjects) StoredResults() []string {
	return []string{s.StoredUserProfile, s.StoredUserProfileFailed}
}

// Tokens returns the token event subjects.
func (s Subjects) Tokens() []string {
	return []string{s.TokenRefreshed, s.TokenInvalidated, s.TokenRefreshFailed, s.TokenConflict}
}

// DeadLetter returns the dead-letter subject for a job subject.
func (s Subjects) DeadLetter(jobSubject string) string {
	return s.DeadLetterPrefix + jobSubject
}

// StoredDeadLetter returns the internal subject to publish a job's dead
// letter to (see SubjectStoredDeadLetterPrefix).
func (s Subjects) StoredDeadLetter(jobSubject string) string {
	return s.StoredDeadLetterPrefix + jobSubject
}
