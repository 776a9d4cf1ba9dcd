package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/metrics"
	"github.com/wxhub/wxhub/wechat"
)

// Handlers runs jobs. It is safe for concurrent use: the router calls its
// handler funcs from many goroutines.
type Handlers struct {
	cfg      Config
	subjects events.Subjects
	apps     map[string]App
	log      *slog.Logger

	stats struct {
		deliveries, succeeded, failed, invalid, retried, republished atomic.Int64
	}
}

// Stats counts what one Handlers did since it was made.
type Stats struct {
	Deliveries  int64 // job deliveries handled
	Succeeded   int64 // user.profile published
	Failed      int64 // user.profile.failed published (invalid jobs included)
	Invalid     int64 // jobs rejected as bad input or unknown appid
	Retried     int64 // deliveries nak'd for a later retry
	Republished int64 // OAuth results republished from a stored outcome
}

// New checks cfg and returns Handlers.
func New(cfg Config) (*Handlers, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Handlers{cfg: cfg, subjects: events.NewSubjects(cfg.Prefix), apps: map[string]App{}, log: cfg.Logger}
	for _, a := range cfg.Apps {
		h.apps[a.AppID] = a
	}
	return h, nil
}

// NakDelayMin is the shortest redelivery delay in effect (Config.NakDelayMin
// or its default): the delay for a failure that asked for none.
func (h *Handlers) NakDelayMin() time.Duration { return h.cfg.NakDelayMin }

// Stats returns the counters so far.
func (h *Handlers) Stats() Stats {
	return Stats{
		Deliveries:  h.stats.deliveries.Load(),
		Succeeded:   h.stats.succeeded.Load(),
		Failed:      h.stats.failed.Load(),
		Invalid:     h.stats.invalid.Load(),
		Retried:     h.stats.retried.Load(),
		Republished: h.stats.republished.Load(),
	}
}

// Subjects returns the subject names the handlers use.
func (h *Handlers) Subjects() events.Subjects { return h.subjects }

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

// publish sends payload to subject with the job's Nats-Msg-Id and
// correlation id. It does not use the job's context: a result for work
// already done is published even while the worker stops.
func (h *Handlers) publish(ctx context.Context, j *job, subject string, payload []byte, extra map[string]string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.PublishTimeout)
	defer cancel()
	m := message.NewMessage(watermill.NewUUID(), payload)
	m.Metadata.Set(events.HeaderMsgID, j.msgID())
	if j.corrID != "" {
		m.Metadata.Set(events.HeaderCorrelationID, j.corrID)
	}
	for k, v := range extra {
		m.Metadata.Set(k, v)
	}
	m.SetContext(ctx)
	if err := h.cfg.Publisher.Publish(subject, m); err != nil {
		return fmt.Errorf("handlers: publish %s: %w", subject, err)
	}
	return nil
}

func (h *Handlers) publishProfile(ctx context.Context, j *job, p events.UserProfile) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("handlers: encode profile: %w", err)
	}
	return h.publishProfileBytes(ctx, j, b)
}

func (h *Handlers) publishProfileBytes(ctx context.Context, j *job, b []byte) error {
	if err := h.publish(ctx, j, h.subjects.UserProfile, b, nil); err != nil {
		h.observe(j, metrics.OutcomeRetry)
		return err
	}
	h.stats.succeeded.Add(1)
	h.observe(j, metrics.OutcomeSuccess)
	if h.log.Enabled(context.Background(), slog.LevelDebug) { // skip building the attributes
		h.log.Debug("job done", j.logAttrs()...)
	}
	return nil
}

func (h *Handlers) failure(j *job, fe events.FailureError) events.UserProfileFailed {
	return events.UserProfileFailed{
		JobID:      j.jobID,
		JobSubject: j.d.Subject,
		AppID:      j.appID,
		Error:      fe,
		Attempts:   j.d.Delivered,
		FailedAt:   h.cfg.Now().UTC(),
	}
}

func (h *Handlers) publishFailure(ctx context.Context, j *job, f events.UserProfileFailed) error {
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("handlers: encode failure: %w", err)
	}
	return h.publishFailureBytes(ctx, j, b, f.Error)
}

func (h *Handlers) publishFailureBytes(ctx context.Context, j *job, b []byte, fe events.FailureError) error {
	if err := h.publish(ctx, j, h.subjects.UserProfileFailed, b, nil); err != nil {
		h.observe(j, metrics.OutcomeRetry)
		return err
	}
	h.stats.failed.Add(1)
	h.observe(j, metrics.OutcomeFailed)
	h.log.Info("job failed", append(j.logAttrs(), "kind", fe.Kind, "errcode", fe.ErrCode, "retryable", fe.Retryable, "reason", fe.ErrMsg)...)
	return nil
}

// reject ends a bad job: the original bytes go to the dead-letter subject,
// then one user.profile.failed says why. Dead letter first: when the
// failure result is out, the evidence is already kept.
func (h *Handlers) reject(ctx context.Context, j *job, kind, reason string) error {
	if len(reason) > 4000 {
		reason = reason[:4000] + "..."
	}
	dl := map[string]string{events.HeaderDeadLetterReason: kind + ": " + headerSafe(reason)}
	if err := h.publish(ctx, j, h.subjects.DeadLetter(j.bare), j.msg.Payload, dl); err != nil {
		return err
	}
	h.stats.invalid.Add(1)
	metrics.JobsTotal.WithLabelValues(j.bare, metrics.OutcomeInvalid).Inc()
	return h.publishFailure(ctx, j, h.failure(j, events.FailureError{Kind: kind, ErrMsg: reason}))
}

// headerSafe keeps a header value on one line and short.
func headerSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c == 0x7f {
			b[i] = ' '
		}
	}
	if len(b) > 512 {
		b = append(b[:512], "..."...)
	}
	return string(b)
}

// rejectInvalid turns a decoding error into the right rejection.
func (h *Handlers) rejectInvalid(ctx context.Context, j *job, err error) error {
	j.jobID, j.appID = events.PeekJobIdentity(j.msg.Payload)
	var ve *events.ValidationError
	reason := err.Error()
	if errors.As(err, &ve) {
		reason = ve.Error()
	}
	return h.reject(ctx, j, events.KindInvalidJob, reason)
}

// tokenUnavailableError: no usable token came in time.
type tokenUnavailableError struct{ err error }

func (e *tokenUnavailableError) Error() string { return "no usable access_token: " + e.err.Error() }
func (e *tokenUnavailableError) Unwrap() error { return e.err }

// classify maps a job error to the failure it would end in, and whether a
// later delivery may do better.
func classify(err error) (fe events.FailureError, retry bool) {
	fe.ErrCode = wechat.ErrCode(err)
	fe.ErrMsg = err.Error()
	var tu *tokenUnavailableError
	if errors.As(err, &tu) {
		fe.Kind, fe.Retryable = events.KindTokenUnavailable, true
		return fe, true
	}
	var se *storeError
	var ce *claimedElsewhereError
	if errors.As(err, &se) || errors.As(err, &ce) {
		fe.Kind, fe.Retryable = events.KindInternal, true
		return fe, true
	}
	var api *wechat.APIError
	isAPI := errors.As(err, &api)
	switch wechat.Classify(err) {
	case wechat.ClassNone: // cancelled: the worker is stopping
		fe.Kind, fe.Retryable, fe.ErrMsg = events.KindInternal, true, "worker stopped before the job finished"
		return fe, true
	case wechat.ClassTransient:
		fe.Kind, fe.Retryable = events.KindWeChat, true
		var te *wechat.TransportError
		if !isAPI && (errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &te) && te.Timeout)) {
			fe.Kind = events.KindTimeout
		}
		return fe, true
	case wechat.ClassToken:
		fe.Kind, fe.Retryable = events.KindTokenUnavailable, true
		return fe, true
	case wechat.ClassQuota:
		fe.Kind, fe.Retryable = events.KindQuota, true
	case wechat.ClassConfig:
		fe.Kind = events.KindConfig
	case wechat.ClassBug:
		fe.Kind = events.KindInternal
	default:
		fe.Kind = events.KindWeChat
		if !isAPI {
			fe.Kind = events.KindInternal
		}
	}
	return fe, false
}

// nakDelay is the redelivery delay after the given delivery gave up.
func (h *Handlers) nakDelay(delivered int, err error) time.Duration {
	if wechat.Classify(err) == wechat.ClassNone {
		return 0 // stopping: let another worker take it at once
	}
	if wechat.ErrCode(err) == wechat.CodeMinuteQuota {
		return h.cfg.NakDelayMax // "retry next minute"
	}
	d := h.cfg.NakDelayMin
	for i := 1; i < delivered && d < h.cfg.NakDelayMax; i++ {
		d *= 2
	}
	return min(d, h.cfg.NakDelayMax)
}

// settle ends a delivery whose work failed with err: a retry (nak) while
// deliveries remain and the error may pass, else one terminal failure.
func (h *Handlers) settle(ctx context.Context, j *job, err error) error {
	fe, retry := classify(err)
	if retry && !j.last(h.cfg.MaxDeliver) {
		h.stats.retried.Add(1)
		h.observe(j, metrics.OutcomeRetry)
		delay := h.nakDelay(j.d.Delivered, err)
		h.log.Info("job will be retried", append(j.logAttrs(), "delay", delay, "err", err)...)
		return &RetryError{Delay: delay, Err: err}
	}
	return h.publishFailure(ctx, j, h.failure(j, fe))
}
