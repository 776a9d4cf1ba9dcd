package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/metrics"
)

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
