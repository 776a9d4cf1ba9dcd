package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/handlers"
	"github.com/wxhub/wxhub/internal/cas"
)

// KVOAuthStore is the handlers.OAuthStore on the wx_oauth bucket (values
// expire with the bucket's TTL, the jobs' max age). The bucket is
// looked up on first use.
type KVOAuthStore struct{ lazyBucket }

var _ handlers.OAuthStore = (*KVOAuthStore)(nil)

// NewKVOAuthStore returns a store on js's wx_oauth bucket.
func NewKVOAuthStore(js jetstream.JetStream) *KVOAuthStore {
	return &KVOAuthStore{lazyBucket{js: js, name: events.BucketOAuth}}
}

// lazyBucket is a KV bucket looked up on first use, so that a store's
// constructor makes no network call; a failed lookup is tried again on
// the next use.
type lazyBucket struct {
	js   jetstream.JetStream
	name string

	mu sync.Mutex
	kv jetstream.KeyValue
}

func (b *lazyBucket) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.kv == nil {
		kv, err := b.js.KeyValue(ctx, b.name)
		if err != nil {
			return nil, fmt.Errorf("bucket %s: %w", b.name, err)
		}
		b.kv = broker.NATSOnceKeyValue(kv)
	}
	return b.kv, nil
}

// Get implements handlers.OAuthStore.
func (s *KVOAuthStore) Get(ctx context.Context, key string) (handlers.OAuthRecord, uint64, error) {
	kv, err := s.bucket(ctx)
	if err != nil {
		return handlers.OAuthRecord{}, 0, err
	}
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return handlers.OAuthRecord{}, 0, handlers.ErrOAuthNotFound
	}
	if err != nil {
		return handlers.OAuthRecord{}, 0, err
	}
	var rec handlers.OAuthRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return handlers.OAuthRecord{}, 0, fmt.Errorf("record %s: %w", key, err)
	}
	return rec, e.Revision(), nil
}

// Create implements handlers.OAuthStore.
func (s *KVOAuthStore) Create(ctx context.Context, key string, rec handlers.OAuthRecord) (uint64, error) {
	kv, err := s.bucket(ctx)
	if err != nil {
		return 0, err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	rev, err := kv.Create(ctx, key, b)
	if cas.Lost(err) { // over a delete marker a replicated bucket's 10164 comes bare
		return 0, handlers.ErrOAuthExists
	}
	return rev, err
}

// Update implements handlers.OAuthStore.
func (s *KVOAuthStore) Update(ctx context.Context, key string, rec handlers.OAuthRecord, rev uint64) (uint64, error) {
	kv, err := s.bucket(ctx)
	if err != nil {
		return 0, err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	nrev, err := kv.Update(ctx, key, b, rev)
	if cas.Lost(err) {
		return 0, handlers.ErrOAuthConflict
	}
	return nrev, err
}

// Delete implements handlers.OAuthStore.
func (s *KVOAuthStore) Delete(ctx context.Context, key string, rev uint64) error {
	kv, err := s.bucket(ctx)
	if err != nil {
		return err
	}
	err = kv.Delete(ctx, key, jetstream.LastRevision(rev))
	if cas.Lost(err) {
		return handlers.ErrOAuthConflict
	}
	return err
}

// Wait implements handlers.OAuthStore: it watches the key.
func (s *KVOAuthStore) Wait(ctx context.Context, key string, rev uint64) error {
	kv, err := s.bucket(ctx)
	if err != nil {
		return err
	}
	w, err := kv.Watch(ctx, key)
	if err != nil {
		return fmt.Errorf("watch %s: %w", key, err)
	}
	defer func() { _ = w.Stop() }()
	seen := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("watch %s: closed", key)
			}
			if e == nil { // the initial value is in
				if !seen {
					return nil // gone meanwhile (deleted or expired)
				}
				continue
			}
			seen = true
			if e.Revision() != rev || e.Operation() != jetstream.KeyValuePut {
				return nil
			}
		}
	}
}

// KVDoneStore is the handlers.DoneStore on the wx_done bucket (records
// expire with the bucket's TTL, the jobs' max age). The bucket is looked
// up on first use.
type KVDoneStore struct{ lazyBucket }

var _ handlers.DoneStore = (*KVDoneStore)(nil)

// NewKVDoneStore returns a store on js's wx_done bucket.
func NewKVDoneStore(js jetstream.JetStream) *KVDoneStore {
	return &KVDoneStore{lazyBucket{js: js, name: events.BucketDone}}
}

// Done implements handlers.DoneStore.
func (s *KVDoneStore) Done(ctx context.Context, resultID string) (events.DoneRecord, bool, error) {
	kv, err := s.bucket(ctx)
	if err != nil {
		return events.DoneRecord{}, false, err
	}
	e, err := kv.Get(ctx, events.DoneKey(resultID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return events.DoneRecord{}, false, nil
	}
	if err != nil {
		return events.DoneRecord{}, false, err
	}
	var rec events.DoneRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		// Unreadable, but present: the job finished.
		return events.DoneRecord{JobID: resultID}, true, nil
	}
	return rec, true, nil
}

// MarkDone implements handlers.DoneStore.
func (s *KVDoneStore) MarkDone(ctx context.Context, rec events.DoneRecord) error {
	kv, err := s.bucket(ctx)
	if err != nil {
		return err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, events.DoneKey(rec.JobID), b)
	return err
}

// errMarkTaken: another attempt wrote or rewrote the dead-letter mark
// meanwhile.
var errMarkTaken = errors.New("another worker is storing this dead letter")

// deadLetterMark reads the dead-letter mark at key: the mark, when it was
// written (the server's time) and its revision; found is false when there
// is none, or when it is unreadable (rev then says what to overwrite).
func (s *KVDoneStore) deadLetterMark(ctx context.Context, key string) (mark events.DeadLetterMark, at time.Time, rev uint64, found bool, err error) {
	kv, err := s.bucket(ctx)
	if err != nil {
		return mark, at, 0, false, err
	}
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return mark, at, 0, false, nil
	}
	if err != nil {
		return mark, at, 0, false, err
	}
	if err := json.Unmarshal(e.Value(), &mark); err != nil {
		return events.DeadLetterMark{}, at, e.Revision(), false, nil
	}
	return mark, e.Created(), e.Revision(), true, nil
}

// putDeadLetterMark writes the dead-letter mark at key: a new one when rev
// is 0, else over revision rev. A mark written or rewritten meanwhile by
// another attempt gives errMarkTaken.
func (s *KVDoneStore) putDeadLetterMark(ctx context.Context, key string, mark events.DeadLetterMark, rev uint64) error {
	kv, err := s.bucket(ctx)
	if err != nil {
		return err
	}
	b, err := json.Marshal(mark)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = kv.Create(ctx, key, b)
	} else {
		_, err = kv.Update(ctx, key, b, rev)
	}
	if cas.Lost(err) {
		return errMarkTaken
	}
	return err
}

// Invalidator publishes token.invalidated reports. One process reports a
// given token version at most once per Interval, however many jobs saw it
// rejected: the holder needs one report, not a storm.
type Invalidator struct {
	js       jetstream.JetStream
	subject  string
	reporter string
	interval time.Duration
	now      func() time.Time

	mu   sync.Mutex
	last map[string]time.Time // appid/version → last report
	sent int
}

var _ handlers.Invalidator = (*Invalidator)(nil)

// NewInvalidator returns an Invalidator publishing on the token.invalidated
// subject under prefix; interval 0 means 30 s.
func NewInvalidator(js jetstream.JetStream, prefix, reporter string, interval time.Duration) *Invalidator {
	if interval <= 0 {
		interval = 30 * time.Second
	}
	return &Invalidator{js: js, subject: events.NewSubjects(prefix).TokenInvalidated, reporter: reporter,
		interval: interval, now: time.Now, last: map[string]time.Time{}}
}

// Invalidate implements handlers.Invalidator.
func (i *Invalidator) Invalidate(ctx context.Context, appid string, version uint64, errcode int) error {
	key := appid + "/" + strconv.FormatUint(version, 10)
	now := i.now()
	i.mu.Lock()
	if t, ok := i.last[key]; ok && now.Sub(t) < i.interval {
		i.mu.Unlock()
		return nil
	}
	i.last[key] = now
	for k, t := range i.last { // keep the map small
		if now.Sub(t) > 10*i.interval {
			delete(i.last, k)
		}
	}
	i.mu.Unlock()

	b, err := json.Marshal(events.TokenInvalidated{AppID: appid, Version: version, ErrCode: errcode, Reporter: i.reporter})
	if err != nil {
		return err
	}
	m := nats.NewMsg(i.subject)
	m.Data = b
	m.Header.Set(events.HeaderMsgID, fmt.Sprintf("tokinv-%s-%d-%s-%d", appid, version, i.reporter, now.UnixNano()/int64(i.interval)))
	if _, err := i.js.PublishMsg(ctx, m); err != nil {
		i.mu.Lock()
		delete(i.last, key) // let the next job try again
		i.mu.Unlock()
		return fmt.Errorf("worker: publish %s: %w", i.subject, err)
	}
	i.mu.Lock()
	i.sent++
	i.mu.Unlock()
	return nil
}

// Sent returns how many reports were published.
func (i *Invalidator) Sent() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.sent
}
