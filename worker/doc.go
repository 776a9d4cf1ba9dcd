// Package worker runs wxhub's job workers: a Watermill router over
// watermill-nats/v2 JetStream subscriptions that feeds user.lookup and
// oauth.code.received jobs to package handlers and publishes their
// results.
//
// # Topology
//
// At start Run provisions the streams and buckets (broker.Provision,
// idempotent) and creates or updates one durable pull consumer per job
// subject on the WX_JOBS stream (ConsumerName: wxhub-worker-user-lookup,
// wxhub-worker-oauth-code-received) with explicit AckWait, MaxDeliver,
// MaxAckPending and MaxWaiting. Every worker process binds to the same
// durables, so starting another process adds capacity; JetStream hands
// each job to one of them. The duplicate window is the streams' (10
// minutes by default, broker.Topology.DuplicateWindow).
//
// # Concurrency without the prefetch trap
//
// watermill-nats' JetStream subscriber runs one nats.go Consume per
// Subscribe, and its callback blocks until the router acks or naks the
// message: one subscription handles one job at a time. nats.go would
// still prefetch 500 messages per subscription, and those would wait in
// the client while their AckWait runs out and then be delivered twice.
// So the worker adds Concurrency router handlers per job subject (64 by
// default), each its own pull subscription on the shared durable with
// PullMaxMessages(1): nats.go asks for the next message only after the
// callback (job plus ack) returned, so a process holds exactly as many
// jobs as it works on, and each job's AckWait starts when its work
// starts. JobTimeout bounds a job's work and must be shorter than AckWait.
//
// # Acks, retries and results
//
// A handler returning nil acks (synchronously, DoubleAck); a
// *handlers.RetryError naks with the delay it carries (the delivery
// wrapper replaces watermill-nats' fixed nak delay); the last delivery
// never naks but publishes a failure with retryable=true. Results go
// through Publisher (JetStream publish with Nats-Msg-Id = job_id), so a
// second terminal result for a job is dropped by the stream.
//
// # Jobs whose worker died on their last delivery
//
// If a process dies (SIGKILL, OOM, network cut) while it runs a job's
// last delivery (MaxDeliver), JetStream does not redeliver it, and with
// WorkQueue retention keeps the message in WX_JOBS. Every worker
// therefore listens, in the core NATS queue group MaxDeliverQueue (one
// process per advisory), to JetStream's max-deliveries advisory of its
// durable consumers (AdvisoryMaxDeliveries.WX_JOBS.<consumer>). For each
// advisory it reads the job from the stream by sequence and publishes a
// user.profile.failed with kind timeout, retryable=true and attempts =
// MaxDeliver, under the job's Nats-Msg-Id (its job_id, or
// "invalid-<stream seq>" for an unreadable job); if the stream reports the
// publish as a duplicate, the job already had its terminal result and
// nothing more is done. Otherwise the job's bytes go to the dead-letter
// subject with a Wx-Dead-Letter-Reason header. Then the message is
// deleted from WX_JOBS. All of this is idempotent: several processes may
// end the same job, one result survives the dedupe.
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
// $JS.API.STREAM.MSG.DELETE.WX_JOBS. Without the delete permission the
// failure and dead letter are still published, the job stays in WX_JOBS,
// and a sweep of another process may publish a second failure once the
// dedupe window has passed.
//
// # Tokens
//
// TokenCache watches the wx_tokens bucket and keeps every app's token in
// memory; jobs never read KV and wait for a newer version on a channel,
// never by polling. Invalidator publishes token.invalidated, at most once
// per token version per process per InvalidateInterval.
//
// # Stopping
//
// When Run's context is cancelled the worker stops pulling, naks what
// arrives meanwhile, lets jobs in flight finish for up to ShutdownGrace,
// then cancels them (nak for immediate redelivery elsewhere), closes the
// router and its own job connection, and returns nil.
//
// The job subscriptions use a second NATS connection dialled with
// Config.Conn's options, because watermill-nats' subscriber drains its
// connection when it closes; Config.Conn itself is never closed.
package worker
