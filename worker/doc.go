// Package worker runs wxhub's job workers: a Watermill router over
// batched JetStream pull subscriptions that feeds user.lookup,
// oauth.code.received and oauth.userinfo jobs to package handlers and
// publishes their results.
//
// # Topology
//
// The admin provisions the streams, buckets and one durable pull consumer
// per job subject on the WX_JOBS stream (ConsumerName:
// wxhub-worker-user-lookup, wxhub-worker-oauth-code-received,
// wxhub-worker-oauth-userinfo) with
// explicit AckWait, MaxDeliver, MaxAckPending and MaxWaiting (`wxhub
// provision`, or Provision here); the worker's NATS grant cannot create
// or change any of them (package broker/grants). Run only binds: it fails
// naming what is missing, or a durable whose AckWait or MaxDeliver differ
// from the worker's own. Every worker process binds to the same
// durables, so starting another process adds capacity; JetStream hands
// each job to one of them. The duplicate window is the streams' (10
// minutes by default, broker.Topology.DuplicateWindow).
//
// # Concurrency without the prefetch trap
//
// Concurrency is per process: one budget of Concurrency slots shared by
// every job subject. The subscriber is the worker's own (consumer.go),
// not watermill-nats' JetStream one, which ignores its consumer
// configuration and hands each subscription one message at a time (so
// that module is not a dependency). It runs one nats.go Consume per job subject with batched pulls (PullMaxMessages
// Concurrency/2; nats.go pulls again when half of that is left). Its
// callback takes a slot before it hands the job to the router (through a
// channel buffered for Concurrency messages, so the hand-off itself never
// waits), and blocks while none is free; nats.go counts a message as delivered, and
// pulls more, only when the callback returns. So a process holds at most
// Concurrency jobs in work plus Concurrency/2 per job subject waiting for
// a slot, never the 500 nats.go would prefetch by default. A waiting
// job's AckWait runs, so a job whose work starts more than
// (AckWait − JobTimeout − FinishTimeout)/2 after it was delivered or
// published first restarts its AckWait (InProgress): every job gets a
// full AckWait for its JobTimeout + FinishTimeout, which must be shorter
// than AckWait. Each job runs on the router's goroutine for its message,
// whose stack is grown to 16 KiB in one step before the handler starts
// (no copies of a deep stack as the handler path grows it, and no
// hand-off to another goroutine and back); the job's contexts derive
// from the delivery itself, not from the router's chain of context
// values, so the lookups on the job's path walk a short chain.
//
// # Acks, retries and results
//
// A handler returns only after the job's result and done record are
// stored; returning nil then acks (a plain Ack: a lost ack costs one
// redelivery that ends at the done record); a *handlers.RetryError naks
// with the delay it carries; the last delivery
// never naks but publishes a failure with retryable=true. Results go
// through Publisher to the internal stored subjects with Nats-Msg-Id = the
// result id and no other headers but the correlation id; WX_RESULTS stores
// them as user.profile / user.profile.failed and republishes them there
// (broker.Topology), so a second terminal result for a job is dropped
// before anyone sees it. KVDoneStore keeps the wx_done records that end
// later deliveries of a finished job. Config.Validate refuses settings in
// which a delivery can outlive its AckWait (JobTimeout + FinishTimeout),
// the duplicate window is not longer than AckWait, or a job's deliveries
// do not fit in the jobs' max age.
//
// # Jobs whose worker died on their last delivery
//
// If a process dies (SIGKILL, OOM, network cut) while it runs a job's
// last delivery (MaxDeliver), JetStream does not redeliver it, and with
// WorkQueue retention keeps the message in WX_JOBS. Every worker
// therefore listens, in the core NATS queue group MaxDeliverQueue (one
// process per advisory), to JetStream's max-deliveries advisory of its
// durable consumers (AdvisoryMaxDeliveries.WX_JOBS.<consumer>). For each
// advisory it reads the job from the stream by sequence; if the job has a
// done record (its result is stored) the message is only deleted.
// Otherwise it first keeps the job's bytes on the dead-letter subject
// with a Wx-Dead-Letter-Reason header, then publishes a
// user.profile.failed with kind timeout, retryable=true and attempts =
// MaxDeliver, both under the job's result id (handlers.ResultID), and
// only then deletes the message from WX_JOBS. Dead letter first: once the
// failure is out a retry would skip the job, so the bytes must already be
// kept; while either publish fails the message stays for the next sweep.
// If the stream reports the failure as a duplicate, the job already had
// its terminal result (stored without its done record) and the dead
// letter just kept is superfluous. All of this is idempotent: several
// processes may end the same job, one result and one dead letter survive
// the dedupe. Past the duplicate window (a worker that died after keeping
// the dead letter, and no worker up again within the window) the
// Nats-Msg-Id no longer dedupes the dead letter; so before keeping it the
// worker writes the job's dead-letter mark in wx_done
// (events.DeadLetterMark: WX_DEADLETTERS' last sequence then), and an
// attempt that finds a mark looks for the dead letter stored after it on
// the job's dead-letter subject before storing one (storeDeadLetter).
//
// Advisories are fire-and-forget. With MaxDeliver 1 the server gives up
// at AckWait; if no worker is subscribed then, the advisory is lost. So
// every SweepInterval (and at start) each worker also sweeps: any job
// message still in WX_JOBS at or below its consumer's ack floor was given
// up on. The ack floor only passes such a message once a later job is
// acked, so on an idle system the sweep finds it with the next traffic.
// (With MaxDeliver 2 or more the server gives up on a pull consumer only
// when a worker pulls again, and the worker subscribes before it pulls,
// so the advisory is heard.)
//
// NATS permissions: the worker's user must be allowed to subscribe to
// $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.WX_JOBS.> and to publish
// $JS.API.STREAM.MSG.DELETE.WX_JOBS and $JS.API.STREAM.MSG.GET.WX_DEADLETTERS
// (under $JS.CORE.API in the accounts layout). Without the delete permission the
// failure and dead letter are still published and the job stays in
// WX_JOBS; its done record keeps later sweeps from publishing again.
//
// # Tokens
//
// TokenCache keeps every app's token in memory, fed by reads of the
// wx_tokens bucket (TokenCache.Follow): each app at start, an app again
// when a token.refreshed event names it, every app every TokenPoll, and
// an app a job waits a newer token for at once and every WaitPoll. It
// never watches the bucket (a watch's deliveries would land in the
// holders' account; see package grants). Jobs never read KV and wait for
// a newer version on a channel. Invalidator publishes token.invalidated,
// at most once per token version per process per InvalidateInterval.
// While an app's token is past its expires_at (handlers.TokenExpired) its
// jobs send WeChat nothing and ReadyError names the app
// (handlers.ErrNoFreshToken).
//
// # Stopping
//
// When Run's context is cancelled the worker stops pulling, naks what
// arrives meanwhile, lets jobs in flight finish for up to ShutdownGrace,
// then cancels them (nak for immediate redelivery elsewhere), stops its
// job subscriptions, closes the router, and returns nil.
//
// Everything, job pulls and acks included, goes over Config.Conn, which
// the worker never closes (a second connection for jobs cost 10-25% of
// jobs/s: its writes could not share a flush with the results' and KV's).
package worker
