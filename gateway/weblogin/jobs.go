package weblogin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/events"
)

// Outcome is how an oauth.code.received job ended, as far as the browser
// needs to know: Kind is "" on user.profile, else the failure kind of
// user.profile.failed (events.Kind*).
type Outcome struct {
	Kind string
}

// Failed reports whether the job ended in user.profile.failed.
func (o Outcome) Failed() bool { return o.Kind != "" }

// ErrNotPublished wraps the error of a job that was surely not published:
// the connection is closed, no stream answered (no responders), the
// reconnect buffer is full, or JetStream refused it. No job goes on, so
// the browser gets no wxhub_job.
var ErrNotPublished = errors.New("weblogin: job not published")

// ErrNotAcknowledged wraps the error of a job whose publish was not
// acknowledged in time (ctx's deadline, or a timeout): the message may be
// in flight, or held in the client's reconnect buffer and sent when NATS
// returns, so the job may well run. Its id is fixed and JetStream dedupes
// by it: the browser is answered as for a wait timeout, with wxhub_job.
// The error wraps the timeout too (context.DeadlineExceeded).
var ErrNotAcknowledged = errors.New("weblogin: job publish not acknowledged")

// JobRunner publishes an oauth.code.received job with correlationID as
// its Wx-Correlation-Id (the worker carries it onto the result) and waits
// for its result until ctx ends (then it returns ctx's error, and the job
// goes on without the browser). An error from publishing wraps
// ErrNotPublished when the job surely was not published, else
// ErrNotAcknowledged (ctx's deadline too).
type JobRunner interface {
	RunOAuthJob(ctx context.Context, job events.OAuthCodeReceived, correlationID string) (Outcome, error)
}

// NATSJobs runs jobs over NATS: it publishes to JetStream with the job_id
// as Nats-Msg-Id (a republish within the dedupe window is dropped) and
// follows the result subjects on one core subscription, matching results
// to waiters by Nats-Msg-Id (else the payload's job_id).
type NATSJobs struct {
	js       jetstream.JetStream
	subjects events.Subjects
	subs     []*nats.Subscription

	mu      sync.Mutex
	waiters map[string]chan Outcome
}

// NewNATSJobs subscribes to the result subjects under prefix. Close
// unsubscribes.
func NewNATSJobs(nc *nats.Conn, prefix string) (*NATSJobs, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("weblogin: jetstream: %w", err)
	}
	j := &NATSJobs{js: js, subjects: events.NewSubjects(prefix), waiters: make(map[string]chan Outcome)}
	for _, subj := range j.subjects.Results() {
		sub, err := nc.Subscribe(subj, j.onResult)
		if err != nil {
			j.Close()
			return nil, fmt.Errorf("weblogin: subscribe %s: %w", subj, err)
		}
		j.subs = append(j.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		j.Close()
		return nil, fmt.Errorf("weblogin: subscribe results: %w", err)
	}
	return j, nil
}

// Close ends the result subscriptions.
func (j *NATSJobs) Close() {
	for _, s := range j.subs {
		_ = s.Unsubscribe()
	}
}

func (j *NATSJobs) onResult(m *nats.Msg) {
	id := m.Header.Get(jetstream.MsgIDHeader)
	var body struct {
		JobID string `json:"job_id"`
		Error struct {
			Kind string `json:"kind"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &body); err != nil && id == "" {
		return
	}
	if id == "" {
		id = body.JobID
	}
	o := Outcome{}
	if m.Subject == j.subjects.UserProfileFailed {
		o.Kind = body.Error.Kind
		if o.Kind == "" {
			o.Kind = events.KindInternal
		}
	}
	j.mu.Lock()
	ch := j.waiters[id]
	delete(j.waiters, id)
	j.mu.Unlock()
	if ch != nil {
		ch <- o // buffered, one result per waiter
	}
}

// RunOAuthJob publishes job and waits for its result.
func (j *NATSJobs) RunOAuthJob(ctx context.Context, job events.OAuthCodeReceived, correlationID string) (Outcome, error) {
	b, err := json.Marshal(job)
	if err != nil {
		return Outcome{}, fmt.Errorf("weblogin: encode job: %w", err)
	}
	ch := make(chan Outcome, 1)
	j.mu.Lock()
	if _, dup := j.waiters[job.JobID]; dup {
		j.mu.Unlock()
		return Outcome{}, fmt.Errorf("weblogin: job %s is already waited for", job.JobID)
	}
	j.waiters[job.JobID] = ch // before publishing: no result slips past
	j.mu.Unlock()
	defer func() {
		j.mu.Lock()
		if j.waiters[job.JobID] == ch {
			delete(j.waiters, job.JobID)
		}
		j.mu.Unlock()
	}()

	msg := nats.NewMsg(j.subjects.OAuthCodeReceived)
	msg.Header.Set(jetstream.MsgIDHeader, job.JobID)
	if correlationID == "" {
		correlationID = job.JobID
	}
	msg.Header.Set(events.HeaderCorrelationID, correlationID)
	msg.Data = b
	if err := j.publish(ctx, msg); err != nil {
		return Outcome{}, err
	}
	select {
	case o := <-ch:
		return o, nil
	case <-ctx.Done():
		return Outcome{}, ctx.Err()
	}
}

// A publish that no stream took (no responders: no stream captures the
// subject, e.g. WX_JOBS absent or without it, or interest not yet known
// on this server) is tried again noRespondersRetries times,
// noRespondersWait apart: nats.go's defaults, but counted here.
const (
	noRespondersRetries = 2
	noRespondersWait    = 250 * time.Millisecond
)

// publish sends msg to JetStream and returns publishError's verdict.
// nats.go's own retry of a no-responders publish is off (it lets ctx's
// deadline end the pause between attempts and then reports the
// deadline, which reads as "may be stored" though no attempt was taken by
// anybody): this loop retries instead, and when every attempt it sent had
// no responders, the job surely was not stored (ErrNotPublished wrapping
// jetstream.ErrNoStreamResponse), however little of ctx was left. It
// tries again only while at least two pauses of ctx are left, so that an
// attempt is not cut short by the deadline.
func (j *NATSJobs) publish(ctx context.Context, msg *nats.Msg) error {
	for attempt := 0; ; attempt++ {
		_, err := j.js.PublishMsg(ctx, msg, jetstream.WithRetryAttempts(0))
		switch {
		case err == nil:
			return nil
		case !noResponders(err) || attempt == noRespondersRetries:
			return publishError(err)
		}
		if d, ok := ctx.Deadline(); ok && time.Until(d) < 2*noRespondersWait {
			return publishError(err)
		}
		t := time.NewTimer(noRespondersWait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return publishError(err) // this attempt's no responders: nothing stored
		}
	}
}

// noResponders reports a publish no stream took.
func noResponders(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
}

// publishError tells a publish that surely did not happen (ErrNotPublished)
// from one that may have (ErrNotAcknowledged): a timeout while the
// message may be buffered or in flight. Unknown errors count as
// uncertain: the job may run, and the browser keeps its wxhub_job.
func publishError(err error) error {
	err = broker.TrimDoubledNATSPrefix(err) // a refusal: "nats: nats: API error: ..."
	if publishedSurelyNot(err) {
		return fmt.Errorf("%w: %w", ErrNotPublished, err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%w (%w)", context.DeadlineExceeded, err)
	}
	return fmt.Errorf("%w: %w", ErrNotAcknowledged, err)
}

// publishedSurelyNot reports an error after which the message was not
// sent, or was refused: nothing stores it later.
func publishedSurelyNot(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) { // JetStream answered: refused
		return true
	}
	for _, sure := range []error{
		nats.ErrConnectionClosed, nats.ErrNoResponders, jetstream.ErrNoStreamResponse,
		nats.ErrReconnectBufExceeded, nats.ErrMaxPayload, nats.ErrBadSubject,
		nats.ErrPermissionViolation, nats.ErrAuthorization, nats.ErrConnectionDraining,
		nats.ErrInvalidConnection, nats.ErrInvalidMsg, nats.ErrHeadersNotSupported,
	} {
		if errors.Is(err, sure) {
			return true
		}
	}
	return false
}

var _ JobRunner = (*NATSJobs)(nil)
