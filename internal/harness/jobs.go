package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
)

// OutcomeOK is the outcome of a job whose terminal result is user.profile;
// a failed job's outcome is its error.kind.
const OutcomeOK = "ok"

// Tracker follows the jobs of one run: it names them (RunID-<n>), records
// when each was published, and counts every terminal result per job_id
// (the Nats-Msg-Id header) twice over: as a stream reader (WX_RESULTS from
// the end of the stream as it was at Start, with an ordered consumer) and
// as a core NATS subscriber to user.profile and user.profile.failed (what
// business systems that just subscribe see). Results of other runs are
// ignored. Methods are safe for concurrent use.
type Tracker struct {
	RunID string

	js      jetstream.JetStream
	subj    events.Subjects
	cc      jetstream.ConsumeContext
	subs    []*nats.Subscription // core subscriptions
	startSq uint64

	mu       sync.Mutex
	jobs     []jobState
	resolved int // jobs with at least one result
	accepted int // jobs whose publish was acknowledged
	pubErrs  int
	lastSeq  uint64 // last WX_RESULTS sequence consumed
	waiters  []waiter
	onFirst  func(i int)
}

type jobState struct {
	pub     time.Time
	first   time.Time
	results int32
	core    int32 // results seen by the core subscriber
	acked   bool
	outcome string
}

type waiter struct {
	cond func() bool
	ch   chan struct{}
}

// JobRecord is what the Tracker knows about one job.
type JobRecord struct {
	ID        string
	Published time.Time // zero if never published
	Acked     bool      // the jobs stream acknowledged the publish
	First     time.Time // first terminal result received; zero if none
	Results   int       // terminal results read from the stream
	Core      int       // terminal results seen by the core subscriber
	Outcome   string    // OutcomeOK or the failure kind of the first result
}

// Latency is First − Published (0 when unresolved).
func (r JobRecord) Latency() time.Duration {
	if r.First.IsZero() || r.Published.IsZero() {
		return 0
	}
	return r.First.Sub(r.Published)
}

// NewTracker returns a tracker for runID (unique per run, no spaces) with
// subjects under prefix. Call Start before publishing.
func NewTracker(js jetstream.JetStream, prefix, runID string) *Tracker {
	return &Tracker{RunID: runID, js: js, subj: events.NewSubjects(prefix)}
}

// Start begins reading results published from now on, from the stream
// and as a core subscriber.
func (t *Tracker) Start(ctx context.Context) error {
	for _, subj := range t.subj.Results() {
		sub, err := t.js.Conn().Subscribe(subj, t.onCore)
		if err != nil {
			t.Stop()
			return fmt.Errorf("harness: subscribe %s: %w", subj, err)
		}
		_ = sub.SetPendingLimits(-1, -1)
		t.subs = append(t.subs, sub)
	}
	if err := t.js.Conn().FlushTimeout(10 * time.Second); err != nil {
		t.Stop()
		return fmt.Errorf("harness: subscribe: %w", err)
	}
	var info *jetstream.StreamInfo
	err := retry(ctx, 30*time.Second, func() error {
		s, err := t.js.Stream(ctx, events.StreamResults)
		if err != nil {
			return err
		}
		info, err = s.Info(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("harness: results stream: %w", err)
	}
	t.startSq = info.State.LastSeq
	t.lastSeq = info.State.LastSeq
	var cons jetstream.Consumer
	err = retry(ctx, 30*time.Second, func() error {
		var err error
		cons, err = t.js.OrderedConsumer(ctx, events.StreamResults, jetstream.OrderedConsumerConfig{
			FilterSubjects: t.subj.Results(),
			DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:    info.State.LastSeq + 1,
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("harness: results consumer: %w", err)
	}
	cc, err := cons.Consume(t.onResult, jetstream.PullMaxMessages(2048))
	if err != nil {
		return fmt.Errorf("harness: consume results: %w", err)
	}
	t.cc = cc
	return nil
}

// Stop stops reading results.
func (t *Tracker) Stop() {
	if t.cc != nil {
		t.cc.Stop()
	}
	for _, s := range t.subs {
		_ = s.Unsubscribe()
	}
	t.subs = nil
}

// onCore counts a result seen by the core subscriber.
func (t *Tracker) onCore(m *nats.Msg) {
	id := m.Header.Get(events.HeaderMsgID)
	if id == "" {
		var p struct {
			JobID string `json:"job_id"`
		}
		_ = json.Unmarshal(m.Data, &p)
		id = p.JobID
	}
	i, ok := t.index(id)
	t.mu.Lock()
	defer t.mu.Unlock()
	if ok && i < len(t.jobs) {
		t.jobs[i].core++
	}
	t.notifyLocked()
}

// OnFirstResult sets a function called (outside the tracker's lock) when a
// job receives its first terminal result.
func (t *Tracker) OnFirstResult(f func(i int)) {
	t.mu.Lock()
	t.onFirst = f
	t.mu.Unlock()
}

// JobID returns the job_id of job i.
func (t *Tracker) JobID(i int) string { return t.RunID + "-" + strconv.Itoa(i) }

func (t *Tracker) index(id string) (int, bool) {
	rest, ok := strings.CutPrefix(id, t.RunID+"-")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 {
		return 0, false
	}
	return i, true
}

func (t *Tracker) onResult(m jetstream.Msg) {
	now := time.Now()
	var seq uint64
	if md, err := m.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	id := m.Headers().Get(events.HeaderMsgID)
	outcome := OutcomeOK
	if m.Subject() == t.subj.UserProfileFailed {
		var f events.UserProfileFailed
		if err := json.Unmarshal(m.Data(), &f); err == nil && f.Error.Kind != "" {
			outcome = f.Error.Kind
		} else {
			outcome = "unreadable"
		}
		if id == "" {
			id = f.JobID
		}
	} else if id == "" {
		var p struct {
			JobID string `json:"job_id"`
		}
		_ = json.Unmarshal(m.Data(), &p)
		id = p.JobID
	}
	var first func(int)
	i, ok := t.index(id)
	t.mu.Lock()
	if seq > t.lastSeq {
		t.lastSeq = seq
	}
	if ok && i < len(t.jobs) {
		j := &t.jobs[i]
		j.results++
		if j.results == 1 {
			j.first = now
			j.outcome = outcome
			t.resolved++
			first = t.onFirst
		}
	}
	t.notifyLocked()
	t.mu.Unlock()
	if first != nil {
		first(i)
	}
}

// notifyLocked wakes the waiters whose condition now holds.
func (t *Tracker) notifyLocked() {
	keep := t.waiters[:0]
	for _, w := range t.waiters {
		if w.cond() {
			close(w.ch)
		} else {
			keep = append(keep, w)
		}
	}
	t.waiters = keep
}

// waitUntil blocks until cond (evaluated under the lock after every
// result) holds, or timeout.
func (t *Tracker) waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) error {
	t.mu.Lock()
	if cond() {
		t.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	t.waiters = append(t.waiters, waiter{cond: cond, ch: ch})
	t.mu.Unlock()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-ch:
		return nil
	case <-timer.C:
		return fmt.Errorf("harness: not all results within %v", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// next reserves the next job index and records its publish time.
func (t *Tracker) next() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.jobs = append(t.jobs, jobState{pub: time.Now()})
	return len(t.jobs) - 1
}

func (t *Tracker) ack(i int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.pubErrs++
		return
	}
	if !t.jobs[i].acked {
		t.jobs[i].acked = true
		t.accepted++
	}
	t.notifyLocked()
}

// Publish publishes one job (payload built from its job_id) with
// Nats-Msg-Id = job_id and waits for the stream's acknowledgement,
// retrying with the same id (deduplicated by the stream) until ctx or
// deadline ends. It returns the job index.
func (t *Tracker) Publish(ctx context.Context, subject string, deadline time.Duration, payload func(jobID string) []byte) (int, error) {
	i := t.next()
	id := t.JobID(i)
	data := payload(id)
	err := retry(ctx, deadline, func() error {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := t.js.Publish(pctx, subject, data, jetstream.WithMsgID(id))
		return err
	})
	t.ack(i, err)
	return i, err
}

// PublishAsync publishes one job without waiting for the acknowledgement
// (the JetStream context must have been made with enough async capacity);
// the acknowledgement or error is recorded when it arrives.
func (t *Tracker) PublishAsync(subject string, payload func(jobID string) []byte) (int, error) {
	i := t.next()
	id := t.JobID(i)
	fut, err := t.js.PublishAsync(subject, payload(id), jetstream.WithMsgID(id))
	if err != nil {
		t.ack(i, err)
		return i, err
	}
	go func() {
		select {
		case <-fut.Ok():
			t.ack(i, nil)
		case err := <-fut.Err():
			t.ack(i, err)
		}
	}()
	return i, nil
}

// WaitResolved waits until every acknowledged job has a terminal result
// and every publish is settled, or timeout.
func (t *Tracker) WaitResolved(ctx context.Context, timeout time.Duration) error {
	return t.waitUntil(ctx, timeout, func() bool {
		return t.accepted+t.pubErrs == len(t.jobs) && t.resolvedAcceptedLocked() >= t.accepted
	})
}

// WaitCore waits until the core subscriber has seen at least n results of
// this run, or timeout.
func (t *Tracker) WaitCore(ctx context.Context, n int, timeout time.Duration) error {
	return t.waitUntil(ctx, timeout, func() bool {
		got := 0
		for _, j := range t.jobs {
			got += int(j.core)
		}
		return got >= n
	})
}

// resolvedAcceptedLocked counts acknowledged jobs with a result.
func (t *Tracker) resolvedAcceptedLocked() int {
	if t.resolved < t.accepted {
		return t.resolved
	}
	n := 0
	for _, j := range t.jobs {
		if j.acked && j.results > 0 {
			n++
		}
	}
	return n
}

// resultsLastSeq reads the results stream's last sequence, retrying until
// timeout (a cluster node may be down).
func (t *Tracker) resultsLastSeq(ctx context.Context, timeout time.Duration) (uint64, error) {
	var last uint64
	err := retry(ctx, timeout, func() error {
		s, err := t.js.Stream(ctx, events.StreamResults)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		last = info.State.LastSeq
		return nil
	})
	return last, err
}

// CatchUp waits until the results consumer has read the stream up to its
// last sequence as of now (so late duplicates are counted), or timeout.
func (t *Tracker) CatchUp(ctx context.Context, timeout time.Duration) error {
	last, err := t.resultsLastSeq(ctx, timeout)
	if err != nil {
		return fmt.Errorf("harness: results stream info: %w", err)
	}
	return t.waitUntil(ctx, timeout, func() bool { return t.lastSeq >= last })
}

// Jobs returns a record per job, in publish order.
func (t *Tracker) Jobs() []JobRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]JobRecord, len(t.jobs))
	for i, j := range t.jobs {
		out[i] = JobRecord{ID: t.JobID(i), Published: j.pub, Acked: j.acked, First: j.first, Results: int(j.results), Core: int(j.core), Outcome: j.outcome}
	}
	return out
}

// Outcome sums up the jobs of a run.
type Outcome struct {
	Published     int            `json:"published"`      // acknowledged by the jobs stream
	PublishErrors int            `json:"publish_errors"` // publishes never acknowledged
	Results       int            `json:"results"`        // terminal results received (all)
	Resolved      int            `json:"resolved"`       // published jobs with a terminal result
	Duplicates    int            `json:"duplicates"`     // terminal results beyond the first, per job_id
	Lost          int            `json:"lost"`           // published jobs without a terminal result
	ByOutcome     map[string]int `json:"by_outcome"`     // "ok" or the failure kind → jobs
	// What the core subscriber saw: results, results beyond the first per
	// job_id (must be 0: results are republished only once stored), and
	// published jobs it saw no result for (it misses results while it is
	// disconnected, e.g. while its NATS node is down).
	CoreResults    int `json:"core_results"`
	CoreDuplicates int `json:"core_duplicates"`
	CoreMissed     int `json:"core_missed"`
}

// Failures lists what breaks "exactly one result per job" in o: a
// duplicate for a stream reader, a lost job, or a duplicate seen by the
// core subscriber. A result the core subscriber missed is not one (it
// misses what is published while it is disconnected).
func (o Outcome) Failures() []string {
	var f []string
	if o.Duplicates != 0 {
		f = append(f, fmt.Sprintf("%d duplicate results in WX_RESULTS (want 0)", o.Duplicates))
	}
	if o.Lost != 0 {
		f = append(f, fmt.Sprintf("%d lost jobs (want 0)", o.Lost))
	}
	if o.CoreDuplicates != 0 {
		f = append(f, fmt.Sprintf("%d duplicate results seen by a core subscriber (want 0)", o.CoreDuplicates))
	}
	return f
}

// Outcome returns the counts as of now.
func (t *Tracker) Outcome() Outcome {
	t.mu.Lock()
	defer t.mu.Unlock()
	o := Outcome{ByOutcome: map[string]int{}, PublishErrors: t.pubErrs}
	for _, j := range t.jobs {
		o.Results += int(j.results)
		if j.results > 1 {
			o.Duplicates += int(j.results) - 1
		}
		o.CoreResults += int(j.core)
		if j.core > 1 {
			o.CoreDuplicates += int(j.core) - 1
		}
		if !j.acked {
			continue
		}
		if j.core == 0 {
			o.CoreMissed++
		}
		o.Published++
		if j.results == 0 {
			o.Lost++
			continue
		}
		o.Resolved++
		o.ByOutcome[j.outcome]++
	}
	return o
}

// retry calls f until it succeeds or timeout/ctx ends, spacing attempts
// 100 ms to 1 s apart.
func retry(ctx context.Context, timeout time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wait := 100 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		if errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// Connect dials url (comma-separated for a cluster) with reconnects for
// the whole run and returns the connection and a JetStream context able
// to keep maxPending async publishes in flight.
func Connect(url, name string, maxPending int) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond), nats.ReconnectBufSize(64<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("harness: connect %s: %w", url, err)
	}
	if maxPending <= 0 {
		maxPending = 4000
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(maxPending))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// Recount reads the results stream again from where Start began up to its
// last sequence as of now, with a fresh ordered consumer, and replaces the
// per-job result counts and outcomes with what it read. Use it at the end
// of a run whose live reader may have missed messages (a NATS node was
// killed): the stream, not the live feed, is the record. A job first seen
// by Recount gets the time of the recount as its result time.
func (t *Tracker) Recount(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last, err := t.resultsLastSeq(ctx, timeout)
	if err != nil {
		return fmt.Errorf("harness: recount: %w", err)
	}
	counts := map[int]int32{}
	outcomes := map[int]string{}
	if last > t.startSq {
		cons, err := t.js.OrderedConsumer(ctx, events.StreamResults, jetstream.OrderedConsumerConfig{
			FilterSubjects: t.subj.Results(),
			DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:    t.startSq + 1,
		})
		if err != nil {
			return fmt.Errorf("harness: recount consumer: %w", err)
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(4096))
		if err != nil {
			return fmt.Errorf("harness: recount: %w", err)
		}
		defer it.Stop()
		go func() { <-ctx.Done(); it.Stop() }()
		for {
			m, err := it.Next()
			if err != nil {
				return fmt.Errorf("harness: recount stopped before sequence %d: %w", last, err)
			}
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			id := m.Headers().Get(events.HeaderMsgID)
			outcome := OutcomeOK
			if m.Subject() == t.subj.UserProfileFailed {
				var f events.UserProfileFailed
				_ = json.Unmarshal(m.Data(), &f)
				outcome = f.Error.Kind
				if id == "" {
					id = f.JobID
				}
			} else if id == "" {
				var p struct {
					JobID string `json:"job_id"`
				}
				_ = json.Unmarshal(m.Data(), &p)
				id = p.JobID
			}
			if i, ok := t.index(id); ok {
				counts[i]++
				if counts[i] == 1 {
					outcomes[i] = outcome
				}
			}
			if md.Sequence.Stream >= last {
				break
			}
		}
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.resolved = 0
	for i := range t.jobs {
		j := &t.jobs[i]
		j.results = counts[i]
		if j.results > 0 {
			t.resolved++
			j.outcome = outcomes[i]
			if j.first.IsZero() {
				j.first = now
			}
		}
	}
	if last > t.lastSeq {
		t.lastSeq = last
	}
	return nil
}
