package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers"
	"github.com/wxhub/wxhub/internal/metrics"
)

// Fault stages (Config.Fault) of the reaper, ending a job that used all
// its deliveries; the job is still in WX_JOBS at both.
const (
	// FaultExhaustedDeadLetterMarked: the job's dead-letter mark is
	// written in wx_done, its dead letter is not stored yet.
	FaultExhaustedDeadLetterMarked = "exhausted-dead-letter-marked"
	// FaultExhaustedDeadLetterStored: the dead letter is stored, the
	// failure is not published yet.
	FaultExhaustedDeadLetterStored = "exhausted-dead-letter-stored"
)

// endTimeout bounds one attempt to end a job (reaper.end).
const endTimeout = 10 * time.Second

// AdvisoryMaxDeliveries is the prefix of the subjects on which JetStream
// announces that a message of a consumer used up its MaxDeliver; the
// stream and consumer names follow, e.g.
// "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.WX_JOBS.wxhub-worker-user-lookup".
const AdvisoryMaxDeliveries = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"

// MaxDeliverQueue is the core NATS queue group of the workers' advisory
// subscriptions: each advisory goes to one worker process.
const MaxDeliverQueue = "wxhub-maxdeliver"

// maxDeliveriesAdvisory holds the fields we read of nats-server's
// JSConsumerDeliveryExceededAdvisory.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// jobConsumer names one durable job consumer.
type jobConsumer struct {
	bare    string // "user.lookup"
	subject string // with prefix
	name    string // durable name
}

func (w *Worker) jobConsumers() []jobConsumer {
	var out []jobConsumer
	for _, c := range []struct{ bare, subject string }{
		{events.SubjectUserLookup, w.subjects.UserLookup},
		{events.SubjectOAuthCodeReceived, w.subjects.OAuthCodeReceived},
		{events.SubjectOAuthUserInfo, w.subjects.OAuthUserInfo},
	} {
		out = append(out, jobConsumer{bare: c.bare, subject: c.subject, name: ConsumerName(c.bare)})
	}
	return out
}

// exhaustedRef asks the reaper to end one job message.
type exhaustedRef struct {
	c          jobConsumer
	seq        uint64
	deliveries int
	via        string // "advisory" or "sweep"
}

// reaper ends the jobs that used all their deliveries without a terminal
// result (their worker died on the last one): it hears JetStream's
// max-deliveries advisories through a queue subscription and sweeps the
// jobs stream for given-up messages it missed.
type reaper struct {
	w       *Worker
	byName  map[string]jobConsumer
	queue   chan exhaustedRef
	dropped atomic.Int64

	ended  atomic.Int64 // failures published (not duplicates)
	sweeps atomic.Int64 // sweeps completed

	mu       sync.Mutex
	undelete map[uint64]bool // handled, but DeleteMsg was refused: skip
}

func newReaper(w *Worker) *reaper {
	r := &reaper{w: w, byName: map[string]jobConsumer{}, queue: make(chan exhaustedRef, 1024), undelete: map[uint64]bool{}}
	for _, c := range w.jobConsumers() {
		r.byName[c.name] = c
	}
	return r
}

// subscribe starts the advisory queue subscription on the worker's main
// connection.
func (r *reaper) subscribe() (*nats.Subscription, error) {
	subj := AdvisoryMaxDeliveries + "." + events.StreamJobs + ".*"
	sub, err := r.w.cfg.Conn.QueueSubscribe(subj, MaxDeliverQueue, func(m *nats.Msg) {
		var a maxDeliveriesAdvisory
		if err := json.Unmarshal(m.Data, &a); err != nil {
			r.w.log.Warn("unreadable max-deliveries advisory", "err", err)
			return
		}
		c, ok := r.byName[a.Consumer]
		if !ok || a.Stream != events.StreamJobs || a.StreamSeq == 0 {
			return
		}
		select {
		case r.queue <- exhaustedRef{c: c, seq: a.StreamSeq, deliveries: int(a.Deliveries), via: "advisory"}:
		default:
			// The sweep finds it later.
			r.dropped.Add(1)
		}
	})
	if err == nil {
		err = r.w.cfg.Conn.FlushTimeout(10 * time.Second) // registered before the first pull
	}
	if err != nil {
		return nil, fmt.Errorf("worker: subscribe to max-deliveries advisories: %w", err)
	}
	return sub, nil
}

// run handles advisories and sweeps every interval until ctx is done.
// One goroutine per process: a process never ends the same job twice at
// once; other processes may, which the job_id dedupe makes harmless.
func (r *reaper) run(ctx context.Context, interval time.Duration) {
	r.sweep(ctx)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ref := <-r.queue:
			r.endLogged(ctx, ref)
		case <-tick.C:
			r.sweep(ctx)
		}
	}
}

// sweep ends every job message that is still in the jobs stream but below
// its consumer's ack floor. With WorkQueue retention an acked message is
// removed, and the ack floor only passes a message that is acked or has
// used all its deliveries, so what is left there was given up on.
func (r *reaper) sweep(ctx context.Context) {
	defer r.sweeps.Add(1)
	if r.w.cfg.Conn.IsClosed() {
		return
	}
	stream, err := r.w.jobsJS().Stream(ctx, events.StreamJobs)
	if err != nil {
		r.w.log.Warn("max-deliveries sweep: stream", "err", err)
		return
	}
	for _, c := range r.w.jobConsumers() {
		cons, ok := r.w.consumers[c.subject]
		if !ok {
			continue
		}
		info, err := cons.Info(ctx)
		if err != nil {
			r.w.log.Warn("max-deliveries sweep: consumer info", "consumer", c.name, "err", err)
			continue
		}
		floor := info.AckFloor.Stream
		for seq := uint64(1); seq <= floor && ctx.Err() == nil; {
			raw, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(c.subject))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				r.w.log.Warn("max-deliveries sweep: get message", "consumer", c.name, "seq", seq, "err", err)
				break
			}
			if raw.Sequence > floor {
				break
			}
			r.endLogged(ctx, exhaustedRef{c: c, seq: raw.Sequence, deliveries: info.Config.MaxDeliver, via: "sweep"})
			seq = raw.Sequence + 1
		}
	}
}

func (r *reaper) endLogged(ctx context.Context, ref exhaustedRef) {
	if err := r.end(ctx, ref); err != nil && ctx.Err() == nil {
		r.w.log.Warn("could not end a job that used all its deliveries; the sweep tries again",
			"subject", ref.c.subject, "stream_seq", ref.seq, "via", ref.via, "err", err)
	}
}

// end keeps the bytes of one given-up job message on the dead-letter
// subject, then publishes its terminal failure (unless the job already
// has a done record), then deletes it from the jobs stream. Any step that
// fails leaves the message for the next sweep; every step is idempotent.
func (r *reaper) end(ctx context.Context, ref exhaustedRef) error {
	r.mu.Lock()
	skip := r.undelete[ref.seq]
	r.mu.Unlock()
	if skip {
		return nil
	}
	w := r.w
	ctx, cancel := context.WithTimeout(ctx, endTimeout)
	defer cancel()
	stream, err := w.jobsJS().Stream(ctx, events.StreamJobs)
	if err != nil {
		return fmt.Errorf("stream: %w", err)
	}
	raw, err := stream.GetMsg(ctx, ref.seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // ended already, by us or another process
	}
	if err != nil {
		return fmt.Errorf("get message: %w", err)
	}
	if raw.Subject != ref.c.subject {
		return nil // not a job of this consumer
	}
	maxDeliver := w.cfg.MaxDeliver
	attempts := ref.deliveries
	if attempts <= 0 || attempts > maxDeliver {
		attempts = maxDeliver
	}
	_, appID := events.PeekJobIdentity(raw.Data)
	jobID := handlers.ResultID(raw.Data, raw.Header.Get(events.HeaderMsgID), ref.seq)
	msgID := jobID
	corrID := raw.Header.Get(events.HeaderCorrelationID)
	if _, done, err := w.done.Done(ctx, jobID); err != nil {
		return fmt.Errorf("done record: %w", err)
	} else if done {
		// Its result is stored (its worker died before the ack): delete
		// the message, publish nothing.
		w.log.Info("job that used all its deliveries already had a result", "subject", raw.Subject, "job_id", jobID, "stream_seq", ref.seq, "via", ref.via)
		return r.delete(ctx, stream, ref.seq)
	}
	reason := fmt.Sprintf("the job used all %d deliveries without an answer (its worker died or stalled during the last one)", attempts)
	b, err := json.Marshal(events.UserProfileFailed{
		JobID:      jobID,
		JobSubject: raw.Subject,
		AppID:      appID,
		Error:      events.FailureError{Kind: events.KindTimeout, ErrMsg: reason, Retryable: true},
		Attempts:   attempts,
		FailedAt:   w.cfg.Now().UTC(),
	})
	if err != nil {
		return fmt.Errorf("encode failure: %w", err)
	}
	log := w.log.With("subject", raw.Subject, "job_id", jobID, "appid", appID, "stream_seq", ref.seq, "via", ref.via, "correlation_id", corrID)
	// Dead letter first: once the failure is out, a retry sees it as a
	// duplicate (or the done record) and would keep nothing, so the bytes
	// must be stored before. A retry stores it once (storeDeadLetter),
	// even past the duplicate window. Until it is stored the job stays in
	// WX_JOBS for the next sweep.
	dl := map[string]string{events.HeaderDeadLetterReason: events.KindTimeout + ": " + reason}
	dlMsg := newResultMsg(w.subjects.StoredDeadLetter(ref.c.bare), raw.Data, msgID, corrID, dl)
	fitDeadLetter(dlMsg, w.cfg.Conn.MaxPayload())
	dlSeq, dlBefore, err := r.storeDeadLetter(ctx, ref.c.bare, raw, dlMsg)
	if err != nil {
		return err
	}
	if dlBefore {
		log.Info("the job's dead letter was stored by an earlier attempt to end it", "dead_letter_seq", dlSeq)
	}
	w.fault(FaultExhaustedDeadLetterStored, jobID)
	ack, err := w.js.PublishMsg(ctx, newResultMsg(w.subjects.StoredUserProfileFailed, b, msgID, corrID, nil))
	if err != nil {
		return fmt.Errorf("publish failure (the dead letter is stored): %w", err)
	}
	rec := events.DoneRecord{JobID: jobID, JobSubject: raw.Subject, ResultSeq: ack.Sequence, DoneAt: w.cfg.Now().UTC(), By: w.cfg.ID}
	if !ack.Duplicate {
		rec.ResultSubject = w.subjects.UserProfileFailed
	}
	if err := w.done.MarkDone(ctx, rec); err != nil {
		w.log.Warn("failure stored but the done record was not written", "job_id", jobID, "err", err)
	}
	if ack.Duplicate {
		// A terminal result is already out (its worker published it and
		// died before its done record): the job was not lost. The dead
		// letter just stored is superfluous; say which one.
		log.Info("job that used all its deliveries already had a result; its dead letter is kept anyway", "dead_letter_seq", dlSeq, "dead_letter_stored_before", dlBefore)
	} else {
		r.ended.Add(1)
		metrics.JobsTotal.WithLabelValues(ref.c.bare, metrics.OutcomeFailed).Inc()
		log.Warn("job failed: it used all its deliveries without an answer", "attempts", attempts)
	}
	return r.delete(ctx, stream, ref.seq)
}

// delete removes an ended job message from the jobs stream.
func (r *reaper) delete(ctx context.Context, stream jetstream.Stream, seq uint64) error {
	if err := stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			// Without delete permission (see the package doc) the message
			// stays: remember it so this process does not end it again.
			r.mu.Lock()
			r.undelete[seq] = true
			r.mu.Unlock()
		}
		return fmt.Errorf("delete message: %w", err)
	}
	return nil
}

// newResultMsg is a JetStream message with the job's Nats-Msg-Id.
func newResultMsg(subject string, data []byte, msgID, corrID string, hdr map[string]string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(events.HeaderMsgID, msgID)
	if corrID != "" {
		m.Header.Set(events.HeaderCorrelationID, corrID)
	}
	for k, v := range hdr {
		m.Header.Set(k, v)
	}
	return m
}

// fault calls the fault-injection hook (Config.Fault), if any.
func (w *Worker) fault(stage, resultID string) {
	if w.cfg.Fault != nil {
		w.cfg.Fault(stage, resultID)
	}
}

// Exhausted returns how many jobs this worker ended with a failure after
// they used all their deliveries without a result.
func (w *Worker) Exhausted() int64 { return w.reaper.ended.Load() }
