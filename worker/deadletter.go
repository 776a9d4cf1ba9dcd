package worker

import (
	"strconv"

	"github.com/nats-io/nats.go"

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
