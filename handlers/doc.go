// Package handlers holds the worker's job logic as Watermill handler
// functions: UserLookup for user.lookup and OAuthCode for
// oauth.code.received. Each handler validates the job against its JSON
// Schema, calls WeChat with the app's current global access_token, and
// publishes exactly one terminal result (user.profile or
// user.profile.failed) with the job_id as Nats-Msg-Id, so that JetStream
// drops a second terminal result for the same job.
//
// A handler's return value tells the router what to do with the delivery:
//
//   - nil: the job is finished (a result was published, or it was
//     republished from a stored outcome): ack.
//   - a *RetryError: the job should be tried again later: nak, with the
//     delay the error carries. On the last delivery (MaxDeliver) a handler
//     never asks for a retry: it publishes a failure with retryable=true.
//   - any other error: publishing failed or the message store is down:
//     nak with the default delay.
//
// Token rules: a handler reads the token from a TokenSource (an in-memory
// copy of the wx_tokens bucket). On 40001, 40014 or 42001 it reports the
// rejected version through the Invalidator, waits (bounded, event-driven)
// for a newer version and retries; a token rotation never fails a job.
//
// OAuth rules: a code is exchanged at most once. Before exchanging, the
// handler claims the code in the OAuthStore (key: hex sha256(appid+code));
// after, it stores the outcome, and a redelivery republishes the stored
// result. The user's access_token and refresh_token are never published or
// logged; they are stored only for apps with the vault on, encrypted (see
// userinfo.go and package handlers/vault). Without the vault, if
// /sns/userinfo keeps failing after a successful exchange, the job ends
// with the identity-only profile (source "sns.oauth2": openid, unionid,
// scope), because the code cannot be exchanged again; with it, the job is
// retried later with the stored token.
//
// OAuthUserInfo handles oauth.userinfo: the profile of a user who logged
// in before, from /sns/userinfo with the vault's tokens; kind reauthorize
// when the user must log in again.
//
// Bad input (not JSON, too large, schema violations, unknown appid) ends in
// a user.profile.failed with kind invalid_job or config and a message that
// says what is wrong, and the original bytes go to the dead-letter subject
// deadletter.<job subject> with a Wx-Dead-Letter-Reason header.
//
// Handlers read the delivery's attempt count, stream sequence and job
// subject from message metadata (MetaDelivered, MetaStreamSeq,
// MetaSubject); package worker's unmarshaler sets them.
package handlers
