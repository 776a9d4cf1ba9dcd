package events

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// DoneRecord is the value kept in the wx_done bucket for one finished job,
// written once its terminal result is stored in WX_RESULTS. A worker that
// gets a delivery of a job with a done record acks it and does nothing
// else: no WeChat call, no second result. The bucket's TTL is the jobs
// stream's max age, so the record outlives every delivery of the job.
type DoneRecord struct {
	// JobID is the result id: the job's job_id, else its Nats-Msg-Id,
	// else "invalid-<stream seq>".
	JobID string `json:"job_id"`
	// JobSubject is the job's subject (with prefix).
	JobSubject string `json:"job_subject"`
	// ResultSubject is the public subject of the stored result (with
	// prefix): user.profile or user.profile.failed.
	ResultSubject string `json:"result_subject"`
	// ResultSeq is the result's sequence in WX_RESULTS.
	ResultSeq uint64 `json:"result_seq"`
	// DoneAt is when the record was written.
	DoneAt time.Time `json:"done_at"`
	// By names the worker that wrote it.
	By string `json:"by,omitempty"`
}

// DoneKey is the wx_done key of a result id: hex sha256 of the id (job ids
// may hold characters, such as ':', that KV keys cannot).
func DoneKey(resultID string) string {
	sum := sha256.Sum256([]byte(resultID))
	var key [2 * sha256.Size]byte // on the stack: one allocation, the string
	hex.Encode(key[:], sum[:])
	return string(key[:])
}

// DeadLetterMark is the wx_done record (key DeadLetterMarkKey) a worker
// writes just before it stores the dead letter of a job that used all its
// deliveries. A later attempt to end the same job message (after a crash,
// perhaps past WX_DEADLETTERS' duplicate window, where Nats-Msg-Id no
// longer dedupes) looks for the dead letter among those stored after
// After, from the mark's time on, instead of storing a second one. The
// bucket's TTL outlives the job message.
type DeadLetterMark struct {
	// JobID is the result id, the dead letter's Nats-Msg-Id.
	JobID string `json:"job_id"`
	// JobSubject is the job's subject (with prefix).
	JobSubject string `json:"job_subject"`
	// JobSeq is the job message's sequence in WX_JOBS.
	JobSeq uint64 `json:"job_seq"`
	// After is WX_DEADLETTERS' last sequence before the attempt: its
	// dead letter, if stored, comes after it.
	After uint64 `json:"after_seq"`
	// By names the worker that wrote it.
	By string `json:"by,omitempty"`
}

// DeadLetterMarkKey is the wx_done key of the dead-letter mark of the job
// message with result id resultID at sequence jobSeq of WX_JOBS: "dl."
// and the hex sha256 of "<resultID>@<jobSeq>", apart from every DoneKey.
func DeadLetterMarkKey(resultID string, jobSeq uint64) string {
	return "dl." + DoneKey(resultID+"@"+strconv.FormatUint(jobSeq, 10))
}
