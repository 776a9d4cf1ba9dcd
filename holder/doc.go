// Package holder keeps each configured app's global access_token in the
// NATS KV bucket wx_tokens and publishes token.refreshed: the token
// lifecycle of docs/token-lifecycle.md. Several holders may run for availability;
// per appid exactly one of them, the leader, fetches from WeChat.
//
// Build one with New and run it with Run; the buckets and streams of
// package events must exist (broker.Provision). Status and Ready report
// what a holder knows (for `wxhub status` and /readyz); Refresh forces a
// refresh on the leader.
//
// # Reading the token (token users)
//
// Users read wx_tokens (key = appid, value = events.TokenRecord as JSON),
// best with a KV watch that keeps the current record in memory. When WeChat
// rejects the token (40001, 40014, 42001) they publish events.TokenInvalidated
// with the version they used on token.invalidated (core NATS or JetStream
// publish both work) and wait for a record with a higher version. See the
// package example.
//
// # Leadership
//
// Per appid, the key in wx_leases holds the leader's id with a per-key TTL
// (LeaseTTL, default 10 s). A holder acquires it with kv.Create(KeyTTL).
// The leader renews it every LeaseTTL/3 with a publish to the key's subject
// that expects the lease's last revision and carries the TTL again:
// kv.Update can neither check-and-set with a TTL nor keep one (nats.go
// v1.56.0), and a lease without a TTL would never lapse. A renewal runs on
// its own goroutine with a deadline at the lease's end, so a slow NATS
// never delays the leader's own checks. A failed renewal (revision moved)
// or a lease older than 0.9 x LeaseTTL by the holder's own clock ends its
// term at once (a timer fires at that instant): in-flight WeChat calls are
// cancelled and no write is attempted. Standbys watch the key; the TTL
// expiry appears as a purge marker (the bucket has LimitMarkerTTL) and they
// try Create at once, so takeover happens within LeaseTTL of the leader's
// death (measured: ~TTL minus the time since the last renewal). A graceful
// stop (Run's context done) purges the lease key only if its revision is
// still ours, so a standby takes over immediately. It first lets the
// refresh under way end: a WeChat call in flight is not cut (WeChat may
// have issued the token, retiring the stored one) and its token is stored,
// the lease renewed meanwhile, for at most the call's bound plus LeaseTTL
// (then the term ends and the write is given up, as when a lease is lost).
// A stopping holder starts no WeChat call, term or judgement, and
// acquires no lease. Leases and retry spacing use real time.
//
// A deposed or cut-off leader never reaches WeChat after its successor:
// each token call is bounded by min(the WeChat client's Timeout,
// LeaseTTL/3), and starts only while more than that plus LeaseTTL/10 of the
// lease is left; otherwise the refresh waits for the next renewal.
//
// # Token writes
//
// The leader reads the record and its revision R, fetches, then writes with
// kv.Update(R) (kv.Create for the first token). version is one more than
// the highest version seen, so it only grows. A fetched token is never
// thrown away because of NATS: NATS and JetStream errors (10008
// "temporarily unavailable", no responders during a stream leader
// election, timeouts) are transient, never configuration errors, and the
// write is retried with backoff (RetryInitial to min(RetryMax, LeaseTTL/3))
// for as long as the term lasts, with the token kept in memory and never
// fetched again. An attempt that timed out may have landed: a later attempt
// then finds the revision moved and the stored record ours, which counts as
// success. The quota increment before a fetch is retried the same way. If
// the term ends first, token.refresh_failed says the fetched token is lost
// and that the stored one stops working 5 minutes after the fetch; the
// successor adopts it or refreshes by the usual rules (its users' reports
// get it refreshed once it is retired). The old token stays in KV until the
// new one is written; a token is never deleted, also not when refreshes
// fail.
//
// A failed compare-and-swap means another writer stored a record while we
// fetched (a predecessor's late write, a second leader). Every fetch
// retires the tokens fetched before it, so the one to keep is the one
// WeChat issued last, judged by FetchedAt (each writer's clock, taken
// before its call) with a slack of the call's bound (fetchTimeout) plus
// twice MaxClockSkew:
//
//   - stored fetched more than the slack before ours: our fetch retired it
//     (it stops working 5 minutes later). Ours is stored over it with a
//     compare-and-swap on the revision just read, as version
//     max(ours, stored+1), keeping the later LastForcedAt; no second fetch.
//     Still the leader, we are nobody's deposed predecessor.
//   - stored fetched more than the slack after ours: it retired ours. The
//     fetched token is discarded and the stored one adopted (ErrLostRace),
//     never overwritten; token.refresh_failed says the fetched token was
//     discarded.
//   - in between the order is unknown: as above, but the stored token may
//     be the one our fetch retired, so the leader refreshes it at once
//     (reason "scheduled", the usual gates apply) instead of serving it
//     until workers report 40001, and token.refresh_failed says so.
//
// Decision: this costs at most one fetch per lost race (none when the
// order is certain), never a loop, and the token served is always WeChat's
// latest or replaced within seconds. Refreshing after every lost race would
// spend a fetch where none is needed; keeping the stored token blindly
// serves a token WeChat kills 5 minutes later.
//
// # When a fetch happens
//
//   - Start of a term: the leader first reads the record from wx_tokens
//     (not the watch's cache, which is empty if the watch failed too),
//     retrying NATS errors (RetryInitial to min(RetryMax, LeaseTTL/3)) for
//     as long as the term lasts; it judges nothing before that read
//     succeeded, and a term that ends first has fetched nothing. A fetch
//     over a stored token it could not see would retire that token.
//     A stored token that is not yet due is adopted with
//     no WeChat call and no event (restarting every holder costs nothing).
//     Otherwise the leader fetches with reason "startup", or "takeover" if it
//     saw another holder lead this appid since it started. These reasons
//     are for the term's first fetch only: once a term stored a token or
//     adopted the stored one (also after a lost race), its refreshes are
//     "scheduled".
//   - Scheduled, reason "scheduled": at ExpiresAt minus RefreshMargin
//     (default 10 min) minus a random jitter in [0, Jitter) (default 2 min)
//     chosen per version, but never earlier than half-way through the token's
//     life. Time here is Config.Now, the clock WeChat's expiry follows.
//   - token.invalidated, reason "invalidated". Every holder subscribes; only
//     the leader judges them. A standby counts them (decision "standby")
//     and keeps those of the last 2 x LeaseTTL: the holder that leads next
//     judges them with its term's, against the stored record, so a report
//     that arrived during a handover (the leader stopping or dead, or
//     nobody leading) gets its one refresh, a stale one none. Older ones
//     are dropped (no hoarding: a failover buys no fetch for them): they
//     reached a leader that judged them, or one that had not yet when it
//     died. Holders judge the reports they received (core NATS, at most
//     once), from memory, so a report that reached a leader which died
//     before its loop judged it is lost unless a standby kept it: none ran
//     or received it, or the dead leader's loop had left it unjudged longer
//     than 2 x LeaseTTL less the takeover (it waited on NATS for most of its
//     term). Nothing replaced the reported token then: its users report it
//     again on their next 40001 (a worker or gateway process at most once
//     per version every 30 s), and that report is judged. Decision: accepted
//     for now. The reports are in WX_TOKEN_EVENTS (its audit trail), but a
//     successor replaying them would have to tell those its predecessor
//     never judged from those it judged and dropped (rate_limited,
//     quota_reserve), or a failover would buy fetches. Reports are coalesced
//     per app and judged by the app's single loop (metric
//     wxhub_token_invalidations_total, label decision):
//     version != current: "stale"; reports arriving for a version whose
//     refresh is pending or done: "duplicate"; the current version was itself
//     fetched because of a report less than ConflictWindow (default 10 min)
//     ago: "conflict" (see below); less than MinForceInterval (30 s) since the
//     last forced refresh: "rate_limited" (dropped: users report again if the
//     token keeps failing); quota down to the reserve: "quota_reserve";
//     otherwise the first report is "accepted" and the rest "duplicate": one
//     refresh however many reports arrive. A report accepted while fetching
//     backs off is carried out when the backoff allows; the leader then
//     also writes on the stored record that the refresh is pending
//     (TokenRecord.InvalidatedAt, a compare-and-swap with the same token
//     and version, NATS errors retried as for token writes while the term
//     lasts and that token is stored: a lost compare-and-swap re-reads
//     the record and stops at a newer token, never marking it; a write
//     refused until the term ended, the lease lost, is made again at once
//     when this holder leads again, before its next fetch), so if it
//     stops or dies first the holder that leads next makes that refresh,
//     once, however old the report (a newer token is stored without the
//     mark: never for a stale report). A stable_token app out of
//     force_refresh calls answers a report with one normal call instead
//     ("fallback"); a pending refresh is judged so by the China day's
//     budget at the start of each term and again when the day turns, so
//     one held back past the turn is made as a forced call, also by the
//     same holder, in the same term or a later one.
//   - Refresh (manual), reason "manual": an operator's request (also over
//     NATS: request/reply on wxhub.token.refresh, answered by the leader
//     only, see events.TokenRefreshRequest), never a report, so never a
//     conflict. Its own rate limit is one per MinForceInterval (stable_token
//     also 30 s after any forced call), across failovers too (the record's
//     reason and fetched_at); the quota reserve, 45009 and the backoff
//     apply. Refusals are *RefusedError naming the lockout and matching
//     ErrRateLimited, ErrQuotaReserve or ErrBackingOff; leader only
//     (ErrNotLeader). A leader that stops makes none and answers
//     not_leading (a *RefusedError matching ErrNotLeader): the holder that
//     leads next can. One that loses its lease during the WeChat call
//     answers not_leading too (an error matching ErrNotLeader), not the
//     cut call's "context canceled". A request over NATS may name the version it wants
//     replaced: a newer stored token answers it with no fetch, so asking
//     again (`wxhub token invalidate` does, during a takeover) never makes
//     a second refresh. The answer goes out within the requester's timeout
//     (the request's timeout_ms, less a tenth; 10 s when it says none): a
//     refresh that has not ended by then is answered under_way, never as
//     failed (ErrRefreshUnderWay: it goes on, token.refreshed or
//     token.refresh_failed tells its outcome; also when another refresh of
//     the app is under way, which replaces the stored token), or, if the
//     leader's loop could not even take the request up (it waited for
//     NATS: a read, or a mark's write above), "refresh not started"
//     (ErrBusy: no refresh was made).
//
// # Conflicts
//
// With /cgi-bin/token, WeChat retires a token 5 minutes after the next
// fetch, so a rejection of our current, unexpired token means some other
// party fetched. The first such report is answered with one refresh. If the
// token fetched for it is reported too within ConflictWindow of its fetch,
// another system is fetching for this appid: the holder publishes
// token.conflict (once per version and window, also across a failover:
// the stored record then says it was announced, TokenRecord.ConflictAt,
// written like InvalidatedAt) and logs an error, and does not refetch for that version until
// ConflictWindow has passed since its fetch (a bounded fight of at most one forced fetch per window, while the
// operator fixes the other system). The token record carries why it was
// fetched (Reason) and the last forced refresh (LastForcedAt), so a new
// leader detects the conflict and keeps the rate limit: a failover buys no
// extra forced fetch.
//
// # Quota
//
// Every fetch attempt (also failed ones: WeChat's own count may be lower) is
// counted before the call in wx_quota under events.QuotaKey (appid.YYYYMMDD,
// China day of Config.Now) with compare-and-swap increments, each call
// once: the events.QuotaRecord keeps the ids of the last fetches counted,
// so a retried increment whose first attempt landed adds nothing, and a
// count whose call is not made after all (the lease got too short, the
// term ended) is taken back. Once the count
// reaches QuotaDailyLimit-QuotaReserve (2000-200), forced refreshes stop;
// scheduled ones go on. Each holder exports its QuotaDailyLimit and
// QuotaReserve for every token mode app (wxhub_token_quota_limit,
// wxhub_token_quota_reserve) next to the count (wxhub_token_quota_used),
// so an alert can compare them without repeating the configuration; they
// are in AppStatus too (QuotaLimit, QuotaReserve), which `wxhub status`
// reads for its QUOTA LEFT column. The count in AppStatus, the lockouts
// and the gauge is the current China day's: the leader reads the new
// day's counts as the day turns, and only the leader exports the gauge (a
// holder drops it when it stops leading).
// 45009 stops every fetch until the China day turns
// (events.NextChinaMidnight by Config.Now); it is recorded in the day's
// wx_quota record, so a successor or a restarted holder starts blocked
// too and makes no call that day. After the midnight attempts are spaced
// by the exponential backoff; for a stable_token force_refresh call it
// stops forced calls only (see below). -1, 45011, HTTP 5xx, network errors and
// timeouts are retried with exponential backoff (cenkalti/backoff/v4,
// RetryInitial 1 s to RetryMax 5 min, real time). 40013, 40125, 40164 and
// other permanent answers are retried every ConfigRetryInterval (5 min),
// never in a loop. Each failed attempt publishes token.refresh_failed with
// the errcode (0 for transport failures, with errmsg saying so) and
// next_attempt_at.
//
// # stable_token mode
//
// App.Mode events.ModeStableToken uses POST /cgi-bin/stable_token. Scheduled
// refreshes use force_refresh=false, which returns a new token only in the
// current one's last 5 minutes: the margin is capped at 4 min and the jitter
// at 30 s for these apps. Should WeChat still return the current token, it
// is not stored again (version unchanged) and the call is retried after a
// backoff. Reports and manual refreshes use force_refresh=true, at least
// max(MinForceInterval, 30 s) apart and at most 20 a China day, counted in
// wx_quota under events.ForceQuotaKey ("appid.YYYYMMDD.force"); the general reserve does not apply
// to stable_token apps (their normal calls do not use the 2000/day quota).
// WeChat's force limit is separate from normal calls: a 45009 on a forced
// call blocks forced calls only, until the China day turns (recorded in
// the .force key for successors); token.refresh_failed says forced
// refreshes are exhausted, reports fall back to a normal call and
// scheduled refreshes go on.
//
// # Clock skew
//
// Token lifetimes use Config.Now. Every LeaseTTL each holder publishes to
// its own key "clock.<id>" in wx_leases (per-message TTL) and reads the
// stored message's server timestamp back: its offset is Now at the middle
// of the round trip minus that stamp. Beyond MaxClockSkew (30 s) it refuses
// to lead (a leader steps down and releases its lease), logs an error and
// reports it in the metric wxhub_holder_clock_offset_seconds, the lockout
// clock_skew and ClockSkewError (for /readyz).
//
// # Lockouts
//
// Every state that stops refreshes is a Lockout (not_leading, conflict,
// quota_reserve, force_limit, force_exhausted, quota_exhausted, backoff,
// clock_skew) with its end and a one-line detail: in AppStatus.Lockouts
// (`wxhub status`), the metric wxhub_token_lockout{appid,state}, and the
// refusals of Refresh.
//
// # Events, logs, metrics
//
// token.refreshed (Nats-Msg-Id "appid.version"), token.refresh_failed and
// token.conflict go out through JetStream (stream WX_TOKEN_EVENTS) as the
// JSON of the events types; they never carry the token. Logs (log/slog)
// carry appid, version, reason and the token's fingerprint
// (wechat.Fingerprint), never a token or AppSecret; App formats without its
// secret. NATS refusals in its logs and errors say "nats: " once (nats.go
// says it twice for a JetStream publish or KV write refused: the
// holder's handles trim it with broker.TrimDoubledNATSPrefix) and still
// match errors.Is and errors.As. Metrics: wxhub_token_expires_at_seconds, _token_refreshes_total,
// _token_refresh_failures_total, _token_invalidations_total,
// _token_quota_used, _token_quota_limit, _token_quota_reserve,
// _token_lockout, _holder_leader,
// _holder_clock_offset_seconds.
package holder
