package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
)

// HeaderDeadLetterTruncated is events.HeaderDeadLetterTruncated (a job
// that fit when published may not fit once Wx-Dead-Letter-Reason and
// Wx-Correlation-Id are added).
const HeaderDeadLetterTruncated = events.HeaderDeadLetterTruncated

// fitDeadLetter cuts m's body so that m, headers included, fits in max
// bytes (the connection's MaxPayload), and then sets
// HeaderDeadLetterTruncated. A message that fits, or max <= 0, is left as
// it is. Headers alone over max cannot be fitted; the publish then fails.
func fitDeadLetter(m *nats.Msg, max int64) {
	if max <= 0 || wireSize(m) <= max {
		return
	}
	orig := len(m.Data)
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	m.Header.Set(HeaderDeadLetterTruncated, strconv.Itoa(orig))
	keep := max - (wireSize(m) - int64(orig))
	if keep < 0 {
		keep = 0
	}
	if keep < int64(orig) {
		m.Data = m.Data[:keep:keep]
	}
}

// wireSize is what the server checks against max_payload: the encoded
// headers plus the body.
func wireSize(m *nats.Msg) int64 {
	return int64(m.Size() - len(m.Subject) - len(m.Reply))
}

// markReach is how long after its dead-letter mark an attempt to end a
// job may have stored the dead letter: the attempt's own deadline, and a
// minute for the clocks of the servers leading wx_done and WX_DEADLETTERS.
const markReach = endTimeout + time.Minute

// storeDeadLetter stores msg, the dead letter of the given-up job message
// raw on job subject bare, once. Within WX_DEADLETTERS' duplicate window
// its Nats-Msg-Id (the result id) dedupes a retry; past it (a worker died
// after storing it, and the retry came later than the window) the job's
// dead-letter mark (events.DeadLetterMark), written before the dead
// letter, leads the retry to the one stored. It returns the dead letter's
// sequence and whether an earlier attempt had stored it.
func (r *reaper) storeDeadLetter(ctx context.Context, bare string, raw *jetstream.RawStreamMsg, msg *nats.Msg) (uint64, bool, error) {
	w := r.w
	msgID := msg.Header.Get(events.HeaderMsgID)
	key := events.DeadLetterMarkKey(msgID, raw.Sequence)
	stream, err := w.streams.For(events.StreamDeadLetters).Stream(ctx, events.StreamDeadLetters)
	if err != nil {
		return 0, false, fmt.Errorf("stream %s: %w", events.StreamDeadLetters, err)
	}
	mark, at, rev, found, err := w.done.deadLetterMark(ctx, key)
	if err != nil {
		return 0, false, fmt.Errorf("dead-letter mark: %w", err)
	}
	if found {
		seq, ok, err := findDeadLetter(ctx, stream, w.subjects.DeadLetter(bare), msgID, mark.After, at.Add(markReach))
		if err != nil || ok {
			return seq, ok, err
		}
		// The earlier attempt stopped before storing it: try again,
		// under a new mark.
	}
	mark = events.DeadLetterMark{JobID: msgID, JobSubject: raw.Subject, JobSeq: raw.Sequence,
		After: stream.CachedInfo().State.LastSeq, By: w.cfg.ID}
	if err := w.done.putDeadLetterMark(ctx, key, mark, rev); err != nil {
		return 0, false, fmt.Errorf("dead-letter mark: %w", err)
	}
	w.fault(FaultExhaustedDeadLetterMarked, msgID)
	ack, err := w.js.PublishMsg(ctx, msg)
	if err != nil {
		return 0, false, fmt.Errorf("publish dead letter: %w", err)
	}
	return ack.Sequence, ack.Duplicate, nil
}

// findDeadLetter looks on subject of WX_DEADLETTERS, among the dead
// letters stored after sequence after and no later than until, for the
// one with Nats-Msg-Id msgID.
func findDeadLetter(ctx context.Context, stream jetstream.Stream, subject, msgID string, after uint64, until time.Time) (uint64, bool, error) {
	for seq := after + 1; ; {
		m, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, fmt.Errorf("look for the dead letter stored before: %w", err)
		}
		if m.Time.After(until) {
			return 0, false, nil
		}
		if m.Header.Get(events.HeaderMsgID) == msgID {
			return m.Sequence, true, nil
		}
		seq = m.Sequence + 1
	}
}
