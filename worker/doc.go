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
