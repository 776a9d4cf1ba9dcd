package handlers

import (
	"context"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/metrics"
)

// ResultID names the result of a job: its body's job_id when that is
// well-formed, else its Nats-Msg-Id header when that is a well-formed
// job_id, else "invalid-<stream seq>". Every result and dead letter of
// the job carries it as Nats-Msg-Id and as the payload's job_id, and the
// job's done record is kept under it.
func ResultID(payload []byte, msgIDHeader string, streamSeq uint64) string {
	id, _ := events.PeekJobIdentity(payload)
	return resultID(id, msgIDHeader, streamSeq)
}

// resultID is ResultID given the job_id peeked from the body.
func resultID(peeked, msgIDHeader string, streamSeq uint64) string {
	if peeked != "" {
		return peeked
	}
	if events.ValidJobID(msgIDHeader) {
		return msgIDHeader
	}
	return "invalid-" + strconv.FormatUint(streamSeq, 10)
}

// job is one delivery being handled.
type job struct {
	bare      string // bare job subject, e.g. "user.lookup"
	d         Delivery
	msg       *message.Message
	jobID     string // the result id (ResultID)
	appID     string
	corrID    string
	startedAt time.Time
	// finish is the context of the steps that end a delivery whose work
	// is done (storing an OAuth outcome, publishing the result, writing
	// the done record): not cancelled when the worker stops, but over at
	// startedAt + JobTimeout + FinishTimeout, below the AckWait.
	finish   context.Context
	rejected bool // ended as bad input: counted as outcome invalid, not failed
}

func (h *Handlers) newJob(msg *message.Message, bare, subject string) *job {
	h.stats.deliveries.Add(1)
	d := DeliveryOf(msg, subject)
	j := &job{bare: bare, d: d, msg: msg, corrID: msg.Metadata.Get(events.HeaderCorrelationID), startedAt: time.Now()}
	id, appID := events.PeekJobIdentity(msg.Payload) // once: it scans the body
	j.jobID, j.appID = resultID(id, msg.Metadata.Get(MetaMsgID), d.StreamSeq), appID
	if j.corrID == "" { // no CorrelationID middleware in front: the same rule
		j.corrID = defaultCorrelationID(msg, j.jobID, d.StreamSeq)
	}
	return j
}

// run handles one delivery: it bounds the work by JobTimeout and the
// whole delivery by JobTimeout + FinishTimeout, and ends a job that has a
// done record at once (ack: no WeChat call, no second result).
func (h *Handlers) run(msg *message.Message, bare, subject string, work func(ctx context.Context, j *job) error) error {
	j := h.newJob(msg, bare, subject)
	fctx, fcancel := context.WithDeadline(context.WithoutCancel(msg.Context()), j.startedAt.Add(h.cfg.JobTimeout+h.cfg.FinishTimeout))
	defer fcancel()
	j.finish = fctx
	ctx, cancel := context.WithTimeout(msg.Context(), h.cfg.JobTimeout)
	defer cancel()

	rec, done, err := h.cfg.Done.Done(ctx, j.jobID)
	if err != nil {
		return h.settle(ctx, j, &storeError{what: "done records", err: err})
	}
	if done {
		h.stats.alreadyDone.Add(1)
		metrics.JobsTotal.WithLabelValues(j.bare, metrics.OutcomeDuplicate).Inc()
		h.log.Info("job already finished; acking without a second result",
			append(j.logAttrs(), "result_subject", rec.ResultSubject, "result_seq", rec.ResultSeq, "done_at", rec.DoneAt)...)
		return nil
	}
	return work(ctx, j)
}

func (j *job) last(maxDeliver int) bool { return j.d.Delivered >= maxDeliver }

func (j *job) logAttrs() []any {
	return []any{"subject", j.d.Subject, "job_id", j.jobID, "appid", j.appID, "delivered", j.d.Delivered, "correlation_id", j.corrID}
}

func (h *Handlers) observe(j *job, outcome string) {
	metrics.JobsTotal.WithLabelValues(j.bare, outcome).Inc()
	metrics.JobDuration.WithLabelValues(j.bare).Observe(time.Since(j.startedAt).Seconds())
}
