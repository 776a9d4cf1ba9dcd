package handlers

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Metadata keys the worker's unmarshaler sets on every job message.
const (
	// MetaDelivered is the delivery count of this job message (1 on the
	// first delivery), from the JetStream metadata.
	MetaDelivered = "Wx-Delivered"
	// MetaStreamSeq is the job's sequence in the jobs stream: the same on
	// every delivery, so it names a job that has no usable job_id.
	MetaStreamSeq = "Wx-Stream-Seq"
	// MetaSubject is the subject the job arrived on (with prefix).
	MetaSubject = "Wx-Subject"
	// MetaMsgID is the job message's Nats-Msg-Id header: it names the
	// result of a job whose body has no usable job_id (ResultID).
	MetaMsgID = "Wx-Job-Msg-Id"
)

// Delivery is what a handler knows about one delivery of a job message.
type Delivery struct {
	Subject   string // with prefix
	Delivered int    // 1 on the first delivery
	StreamSeq uint64
}

// DeliveryOf reads the delivery metadata of msg; fallbackSubject is used
// when MetaSubject is missing.
func DeliveryOf(msg *message.Message, fallbackSubject string) Delivery {
	d := Delivery{Subject: msg.Metadata.Get(MetaSubject), Delivered: 1}
	if d.Subject == "" {
		d.Subject = fallbackSubject
	}
	if n, err := strconv.Atoi(msg.Metadata.Get(MetaDelivered)); err == nil && n > 0 {
		d.Delivered = n
	}
	if n, err := strconv.ParseUint(msg.Metadata.Get(MetaStreamSeq), 10, 64); err == nil {
		d.StreamSeq = n
	}
	return d
}

// RetryError asks for the delivery to be nak'd and redelivered after
// Delay (0: at once).
type RetryError struct {
	Delay time.Duration
	Err   error
}

func (e *RetryError) Error() string {
	return fmt.Sprintf("retry in %s: %v", e.Delay, e.Err)
}

func (e *RetryError) Unwrap() error { return e.Err }

// RetryDelay returns the delay a handler asked for with a *RetryError in
// err's chain, and whether there is one.
func RetryDelay(err error) (time.Duration, bool) {
	var re *RetryError
	if errors.As(err, &re) {
		return re.Delay, true
	}
	return 0, false
}
