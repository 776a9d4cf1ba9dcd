// Package cas tells a lost compare-and-set write on JetStream, and a
// publish that raced another of the same Nats-Msg-Id, from every other
// error.
//
// wxhub writes leases, tokens, quota records, done records, OAuth
// records, login states and vault entries with an expected revision
// (KV Create, Update, Delete or Purge with LastRevision, or a publish
// with WithExpectLastSequencePerSubject). Losing such a race is an
// answer, not a failure: someone else wrote first. JetStream says so with
// error code 10071, or 10164 on a replicated (R>1) stream, and nats.go
// wraps either in jetstream.ErrKeyRevisionMismatch or ErrKeyExists for KV
// calls but not for a plain publish. Lost knows all of these, so that a
// test on one server and a production cluster of three take the same
// branch.
//
// A publish with a Nats-Msg-Id meets the same kind of race: on a
// replicated stream a publish that comes while another with the same id
// is proposed but not yet stored is refused with error 10158 ("duplicate
// message id is in process"), where one server, or the same publish a
// moment later, answers with a duplicate ack. DuplicateInProcess knows it.
package cas

import (
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// Lost reports whether err says a compare-and-set write lost its race:
// the subject's last sequence (the key's revision) was not the expected
// one, or a key that was to be created exists. Lost(nil) is false.
func Lost(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var api *jetstream.APIError
	return errors.As(err, &api) && (api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// ErrCodeDuplicateInProcess is JetStream's error code for a publish whose
// Nats-Msg-Id another publish is storing right now on a replicated stream
// ("duplicate message id is in process"); nats.go names no constant for it.
const ErrCodeDuplicateInProcess jetstream.ErrorCode = 10158

// DuplicateInProcess reports whether err says a publish was refused
// because another publish with the same Nats-Msg-Id was being stored at
// that moment (ErrCodeDuplicateInProcess). Nothing of the refused
// publish is stored: published again once the other is stored, it is
// acked as a duplicate. DuplicateInProcess(nil) is false.
func DuplicateInProcess(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == ErrCodeDuplicateInProcess
}
