package worker

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/events"
)

func TestFitDeadLetterCutsOnlyWhatDoesNotFit(t *testing.T) {
	newMsg := func(n int) *nats.Msg {
		m := nats.NewMsg("wxhub.deadletter.user.lookup")
		m.Header.Set(events.HeaderMsgID, "j1")
		m.Header.Set(events.HeaderDeadLetterReason, "invalid_job: too long")
		m.Data = []byte(strings.Repeat("x", n))
		return m
	}
	const max = 1000
	fits := newMsg(0)
	fits.Data = []byte(strings.Repeat("x", max-int(wireSize(fits))))
	for _, tc := range []struct {
		name      string
		m         *nats.Msg
		max       int64
		truncated bool
	}{
		{"small", newMsg(10), max, false},
		{"exactly max", fits, max, false},
		{"one byte over", newMsg(len(fits.Data) + 1), max, true},
		{"far over", newMsg(50 * max), max, true},
		{"no limit known", newMsg(50 * max), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := append([]byte(nil), tc.m.Data...)
			fitDeadLetter(tc.m, tc.max)
			got := tc.m.Header.Get(HeaderDeadLetterTruncated)
			if !tc.truncated {
				if got != "" || string(tc.m.Data) != string(orig) {
					t.Fatalf("changed a dead letter that fits: header %q, %d of %d bytes", got, len(tc.m.Data), len(orig))
				}
				return
			}
			if got != strconv.Itoa(len(orig)) {
				t.Fatalf("%s = %q, want the original size %d", HeaderDeadLetterTruncated, got, len(orig))
			}
			if s := wireSize(tc.m); s != tc.max {
				t.Fatalf("truncated to %d bytes on the wire, want exactly max_payload %d", s, tc.max)
			}
			if !strings.HasPrefix(string(orig), string(tc.m.Data)) {
				t.Fatal("the kept body is not the job's first bytes")
			}
		})
	}
}

// findDeadLetter finds a job's dead letter only on the job's subject,
// after the mark's sequence and no later than its reach.
func TestFindDeadLetterLooksOnlyWhereTheMarkSays(t *testing.T) {
	env := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	subs := events.NewSubjects("")
	publish := func(bare, msgID string) uint64 {
		t.Helper()
		m := nats.NewMsg(subs.StoredDeadLetter(bare))
		m.Data = []byte(`{}`)
		m.Header.Set(events.HeaderMsgID, msgID)
		ack, err := env.JS.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	before := publish(events.SubjectUserLookup, "job-1") // an older job message with the same id
	publish(events.SubjectUserLookup, "job-0")
	publish(events.SubjectOAuthCodeReceived, "job-4")
	want := publish(events.SubjectUserLookup, "job-2")
	publish(events.SubjectUserLookup, "job-3")
	stream, err := env.JS.Stream(ctx, events.StreamDeadLetters)
	if err != nil {
		t.Fatal(err)
	}
	later, earlier := time.Now().Add(time.Hour), time.Now().Add(-time.Hour)
	for _, tc := range []struct {
		name    string
		msgID   string
		after   uint64
		until   time.Time
		wantSeq uint64
	}{
		{"stored after the mark", "job-2", before, later, want},
		{"stored before the mark", "job-1", before, later, 0},
		{"stored later than the mark's reach", "job-2", before, earlier, 0},
		{"on another job subject", "job-4", 0, later, 0},
		{"never stored", "job-9", 0, later, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq, ok, err := findDeadLetter(ctx, stream, subs.DeadLetter(events.SubjectUserLookup), tc.msgID, tc.after, tc.until)
			if err != nil || ok != (tc.wantSeq != 0) || seq != tc.wantSeq {
				t.Fatalf("findDeadLetter = %d, %v, %v; want %d", seq, ok, err, tc.wantSeq)
			}
		})
	}
}

// The dead-letter mark: written once (a second writer is told another
// attempt is at it), rewritten over its revision only, and an unreadable
// mark counts as none but can be overwritten.
func TestDeadLetterMarkStore(t *testing.T) {
	env := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := NewKVDoneStore(env.JS)
	key := events.DeadLetterMarkKey("job-1", 7)
	if _, _, _, found, err := s.deadLetterMark(ctx, key); found || err != nil {
		t.Fatalf("mark before any: found %v, %v", found, err)
	}
	m := events.DeadLetterMark{JobID: "job-1", JobSubject: events.SubjectUserLookup, JobSeq: 7, After: 3, By: "w1"}
	if err := s.putDeadLetterMark(ctx, key, m, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.putDeadLetterMark(ctx, key, m, 0); !errors.Is(err, errMarkTaken) {
		t.Fatalf("second create: %v, want errMarkTaken", err)
	}
	got, at, rev, found, err := s.deadLetterMark(ctx, key)
	if err != nil || !found || got != m || at.IsZero() || time.Since(at) > time.Minute {
		t.Fatalf("mark %+v at %v, found %v, %v", got, at, found, err)
	}
	m.After = 9
	if err := s.putDeadLetterMark(ctx, key, m, rev+1); !errors.Is(err, errMarkTaken) {
		t.Fatalf("update over a wrong revision: %v, want errMarkTaken", err)
	}
	if err := s.putDeadLetterMark(ctx, key, m, rev); err != nil {
		t.Fatal(err)
	}
	kv, err := env.JS.KeyValue(ctx, events.BucketDone)
	if err != nil {
		t.Fatal(err)
	}
	bad, err := kv.Put(ctx, key, []byte("not json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, rev, found, err := s.deadLetterMark(ctx, key); found || err != nil || rev != bad {
		t.Fatalf("unreadable mark: found %v, rev %d (want %d), %v", found, rev, bad, err)
	}
	if err := s.putDeadLetterMark(ctx, key, m, bad); err != nil {
		t.Fatalf("overwrite the unreadable mark: %v", err)
	}
}
