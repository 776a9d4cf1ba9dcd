package handlers

import (
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/metrics"
)

// job is one delivery being handled.
type job struct {
	bare      string // bare job subject, e.g. "user.lookup"
	d         Delivery
	msg       *message.Message
	jobID     string
	appID     string
	corrID    string
	startedAt time.Time
}

func (h *Handlers) newJob(msg *message.Message, bare, subject string) *job {
	h.stats.deliveries.Add(1)
	return &job{bare: bare, d: DeliveryOf(msg, subject), msg: msg, corrID: msg.Metadata.Get(events.HeaderCorrelationID), startedAt: time.Now()}
}

// msgID is the Nats-Msg-Id of the job's results: its job_id, or for a job
// without a usable one, an id derived from its place in the jobs stream.
func (j *job) msgID() string {
	if j.jobID != "" {
		return j.jobID
	}
	return "invalid-" + strconv.FormatUint(j.d.StreamSeq, 10)
}

func (j *job) last(maxDeliver int) bool { return j.d.Delivered >= maxDeliver }

func (j *job) logAttrs() []any {
	return []any{"subject", j.d.Subject, "job_id", j.jobID, "appid", j.appID, "delivered", j.d.Delivered, "correlation_id", j.corrID}
}

func (h *Handlers) observe(j *job, outcome string) {
	metrics.JobsTotal.WithLabelValues(j.bare, outcome).Inc()
	metrics.JobDuration.WithLabelValues(j.bare).Observe(time.Since(j.startedAt).Seconds())
}
