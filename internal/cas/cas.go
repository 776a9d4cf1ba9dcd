// Package cas tells a lost compare-and-set write on JetStream from every
// other error.
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
