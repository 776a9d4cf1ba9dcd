// Package handlers holds the worker's job logic as Watermill handler
// functions: UserLookup for user.lookup and OAuthCode for
// oauth.code.received. Each handler validates the job against its JSON
// Schema, calls WeChat with the app's current global access_token, and
// ends in exactly one terminal result (user.profile or
// user.profile.failed).
//
// Results: a handler publishes the result to its internal stored subject
// (wxhub.result.user.profile, wxhub.result.user.profile.failed), never to
// the public one; the WX_RESULTS stream stores it under the public subject
// and only then republishes it to core subscribers, so the duplicate a
// redelivery publishes (same Nats-Msg-Id, dropped by the stream) reaches
// nobody. Once the result is stored the handler writes the job's done
// record (DoneStore, the wx_done bucket, TTL = the jobs' max age); every
// delivery looks there first and acks a done job at once, without a
// WeChat call or a second result. Every result, dead letter and done
// record is named by the job's result id (ResultID): its body's job_id,
// else its Nats-Msg-Id header, else invalid-<stream seq>; the payload's
// job_id always equals it.
//
// Time: a delivery's work is bounded by JobTimeout and what ends it
// (storing the OAuth outcome, the result, the done record) by
// FinishTimeout; the worker keeps the two below the consumer's AckWait,
// so a job is never redelivered while a delivery of it still runs.
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
// When a newer version is held already it retries with it at once and
// reports nothing (the report would be stale). A token more than
// TokenExpiryMargin past its expires_at is never sent to WeChat: the job
// waits for a newer one just as after a rejection, then fails as
// token_unavailable (retryable) wrapping ErrNoFreshToken.
//
// OAuth rules: a code is exchanged at most once by any job but its owner.
// Before exchanging, the handler claims the code in the OAuthStore (key:
// hex sha256(appid+code)) for its job; after, it stores the identity, then
// the outcome. The owner's redelivery finishes from what is stored (or
// exchanges again if its earlier delivery died before WeChat answered);
// another job with the same code waits for the owner's outcome and
// republishes a copy, never exchanging, unless it is another login: when
// both jobs name an OAuth state and they differ, the other job fails at
// once with 40163 (code been used), so a used code replayed in someone
// else's login never yields the owner's profile; and a copy is given only
// within CodeCopyWindow (10 minutes, a code's longest life) of the claim,
// later any job but the owner fails so too. An exchange answering -1 is not
// retried: WeChat counts the code as used, so the job fails (kind wechat,
// errcode -1) saying the code was spent. The user's access_token and refresh_token are never published or
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
// deadletter.<job subject> (published to wxhub.deadletter.<job subject>,
// stored and republished like a result) with a Wx-Dead-Letter-Reason
// header.
//
// Handlers read the delivery's attempt count, stream sequence and job
// subject from message metadata (MetaDelivered, MetaStreamSeq,
// MetaSubject); package worker's unmarshaler sets them.
package handlers
