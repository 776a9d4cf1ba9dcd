package broker

import "strings"

// natsPrefix starts nats.go's error messages.
const natsPrefix = "nats: "

// TrimDoubledNATSPrefix returns err with a message that starts "nats: "
// once where err's starts "nats: nats: ", and err itself otherwise (nil
// for nil). nats.go's JetStream publish (and so a KV write) wraps a
// refusal as fmt.Errorf("nats: %w", apiErr), and the *jetstream.APIError
// says "nats: API error: ..." itself: without this a user reads
// "nats: nats: API error: ...". The error returned unwraps to err, so
// errors.Is and errors.As (an *jetstream.APIError, cas.Lost) still match.
func TrimDoubledNATSPrefix(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, natsPrefix+natsPrefix) {
		return err
	}
	return &natsOnceError{msg: msg[len(natsPrefix):], err: err}
}

type natsOnceError struct {
	msg string
	err error
}

func (e *natsOnceError) Error() string { return e.msg }
func (e *natsOnceError) Unwrap() error { return e.err }
