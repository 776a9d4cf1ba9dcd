package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/metrics"
)

// Publisher stores messages in JetStream and waits for the stream's
// acknowledgement. It sends the headers in header and nothing else: a
// Publisher adds no headers of its own (package worker's Publisher).
type Publisher interface {
	Publish(ctx context.Context, subject string, data []byte, header Header) (Stored, error)
}

// Header is the headers of a result or dead letter. An empty field sends
// no header.
type Header struct {
	MsgID            string // Nats-Msg-Id (events.HeaderMsgID): the stream deduplicates on it
	CorrelationID    string // events.HeaderCorrelationID
	DeadLetterReason string // events.HeaderDeadLetterReason
}

// Stored is a stream's acknowledgement of a publish.
type Stored struct {
	Seq uint64 // the message's sequence in the stream
	// Duplicate: the stream had a message with this Nats-Msg-Id already
	// (within its duplicate window) and dropped this one.
	Duplicate bool
}

// DoneStore keeps a record per finished job (package worker implements it
// on the wx_done bucket).
type DoneStore interface {
	// Done returns the job's record and true, or false when it has none.
	Done(ctx context.Context, resultID string) (events.DoneRecord, bool, error)
	// MarkDone stores rec under rec.JobID.
	MarkDone(ctx context.Context, rec events.DoneRecord) error
}

// Fault stages (see Config.Fault).
const (
	// FaultResultStored: the result is stored in WX_RESULTS, the done
	// record is not written yet, the job is not acked.
	FaultResultStored = "result-stored"
	// FaultDoneRecorded: the done record is written, the job is not acked.
	FaultDoneRecorded = "done-recorded"
)

// publish stores payload on subject with the job's result id as
// Nats-Msg-Id and its correlation id, under the job's finish context: a
// result for work already done is published even while the worker stops.
func (h *Handlers) publish(j *job, subject string, payload []byte, deadLetterReason string) (Stored, error) {
	hdr := Header{MsgID: j.jobID, CorrelationID: j.corrID, DeadLetterReason: deadLetterReason}
	st, err := h.cfg.Publisher.Publish(j.finish, subject, payload, hdr)
	if err != nil {
		return st, fmt.Errorf("handlers: publish %s: %w", subject, err)
	}
	return st, nil
}

// publishResult stores one terminal result (public subject resultSubject,
// published to its internal stored subject), then writes the job's done
// record. The result reaches core subscribers only once stored, and a
// duplicate (an earlier delivery stored it) reaches nobody.
func (h *Handlers) publishResult(j *job, resultSubject, storedSubject string, b []byte) error {
	st, err := h.publish(j, storedSubject, b, "")
	if err != nil {
		h.observe(j, metrics.OutcomeRetry)
		return err
	}
	if st.Duplicate {
		h.stats.duplicates.Add(1)
	}
	h.fault(FaultResultStored, j.jobID)
	rec := events.DoneRecord{JobID: j.jobID, JobSubject: j.d.Subject, ResultSubject: resultSubject, ResultSeq: st.Seq,
		DoneAt: h.cfg.Now().UTC(), By: h.cfg.Reporter}
	if err := h.cfg.Done.MarkDone(j.finish, rec); err != nil {
		// The result is stored; a redelivery inside the duplicate window
		// is dropped by the stream, and the next delivery writes it.
		h.log.Warn("result stored but the done record was not written", append(j.logAttrs(), "err", err)...)
	} else {
		h.fault(FaultDoneRecorded, j.jobID)
	}
	return nil
}

func (h *Handlers) fault(stage, id string) {
	if h.cfg.Fault != nil {
		h.cfg.Fault(stage, id)
	}
}

func (h *Handlers) publishProfile(j *job, p events.UserProfile) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("handlers: encode profile: %w", err)
	}
	return h.publishProfileBytes(j, b)
}

func (h *Handlers) publishProfileBytes(j *job, b []byte) error {
	if err := h.publishResult(j, h.subjects.UserProfile, h.subjects.StoredUserProfile, b); err != nil {
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

func (h *Handlers) publishFailure(j *job, f events.UserProfileFailed) error {
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("handlers: encode failure: %w", err)
	}
	return h.publishFailureBytes(j, b, f.Error)
}

func (h *Handlers) publishFailureBytes(j *job, b []byte, fe events.FailureError) error {
	if err := h.publishResult(j, h.subjects.UserProfileFailed, h.subjects.StoredUserProfileFailed, b); err != nil {
		return err
	}
	h.stats.failed.Add(1)
	if j.rejected {
		h.observe(j, metrics.OutcomeInvalid)
	} else {
		h.observe(j, metrics.OutcomeFailed)
	}
	h.log.Info("job failed", append(j.logAttrs(), "kind", fe.Kind, "errcode", fe.ErrCode, "retryable", fe.Retryable, "reason", fe.ErrMsg)...)
	return nil
}

// reject ends a bad job: the original bytes go to the dead-letter subject,
// then one user.profile.failed says why. Dead letter first: when the
// failure result is out, the evidence is already kept.
func (h *Handlers) reject(j *job, kind, reason string) error {
	if len(reason) > 4000 {
		reason = reason[:4000] + "..."
	}
	if _, err := h.publish(j, h.subjects.StoredDeadLetter(j.bare), j.msg.Payload, kind+": "+headerSafe(reason)); err != nil {
		h.observe(j, metrics.OutcomeRetry)
		return err
	}
	h.stats.invalid.Add(1)
	j.rejected = true // one outcome per delivery: invalid, once the failure is out
	return h.publishFailure(j, h.failure(j, events.FailureError{Kind: kind, ErrMsg: reason}))
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
func (h *Handlers) rejectInvalid(j *job, err error) error {
	var ve *events.ValidationError
	reason := err.Error()
	if errors.As(err, &ve) {
		reason = ve.Error()
	}
	return h.reject(j, events.KindInvalidJob, reason)
}
