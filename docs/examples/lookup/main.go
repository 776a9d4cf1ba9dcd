// Command lookup asks a running wxhub for a WeChat user's profile: it
// publishes one user.lookup job and prints the job's result. It needs
// nothing but nats.go, and runs as is against `make run` (the demo app):
//
//	go run ./docs/examples/lookup
//
// NATS_URL selects another server (default nats://127.0.0.1:4222).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := os.Getenv("NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	// The demo app and follower `make run` configures; use your own here.
	subject, result, err := lookup(ctx, url, "order-42-lookup", "wxdemo0000000001", "oDemo6_bmjrPTlm6_2sgVt7hMZOA")
	if err != nil {
		fmt.Fprintln(os.Stderr, "lookup:", err)
		os.Exit(1)
	}
	fmt.Println(subject, string(result)) // user.profile {...} or user.profile.failed {...}
}

// lookup publishes a user.lookup job with jobID as its idempotency key
// and returns the subject and body of its one result.
func lookup(ctx context.Context, url, jobID, appid, openid string) (string, []byte, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return "", nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", nil, err
	}

	// Subscribe to the results first, so none slips past. Every job's
	// result comes by: keep only ours, in the handler, so a busy system's
	// results never queue up here.
	mine := make(chan *nats.Msg, 1)
	for _, s := range []string{"user.profile", "user.profile.failed"} {
		sub, err := nc.Subscribe(s, func(m *nats.Msg) {
			if m.Header.Get("Nats-Msg-Id") == jobID {
				select {
				case mine <- m:
				default:
				}
			}
		})
		if err != nil {
			return "", nil, err
		}
		defer sub.Unsubscribe()
	}

	msg := nats.NewMsg("user.lookup")
	msg.Header.Set("Nats-Msg-Id", jobID)
	msg.Data = fmt.Appendf(nil, `{"job_id":%q,"appid":%q,"openid":%q}`, jobID, appid, openid)
	// No ack (error, timeout): the job may not be stored. Publishing again
	// with the same job_id is safe, JetStream drops the copy.
	ack, err := publish(ctx, js, msg)
	if err != nil {
		return "", nil, err
	}
	if ack.Duplicate {
		// This job_id was published before, within the duplicate window
		// (10 min): its result is not published again, read it from the
		// results stream.
		return pastResult(ctx, js, jobID, time.Now().Add(-11*time.Minute))
	}
	select {
	case m := <-mine:
		return m.Subject, m.Data, nil
	case <-time.After(liveWait):
		// A job_id used more than the duplicate window ago is stored as a
		// new job, and the worker ends it at once without a second result
		// (its done record): the result is in WX_RESULTS (kept 24 h). Read
		// from there, which also waits for a job still being worked on.
		return pastResult(ctx, js, jobID, time.Now().Add(-24*time.Hour))
	case <-ctx.Done():
		return "", nil, fmt.Errorf("no result for job %s: %w", jobID, ctx.Err())
	}
}

// liveWait is how long lookup waits for the result to come by before it
// reads the results stream instead.
const liveWait = 5 * time.Second

// publish publishes msg until JetStream acknowledges it or ctx ends.
func publish(ctx context.Context, js jetstream.JetStream, msg *nats.Msg) (*jetstream.PubAck, error) {
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := js.PublishMsg(actx, msg)
		cancel()
		if err == nil {
			return ack, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("publish %s: %w", msg.Subject, err)
		case <-time.After(time.Second):
		}
	}
}

// pastResult reads the stream WX_RESULTS from since on and returns the
// result whose Nats-Msg-Id is jobID, waiting for it if the job is still
// being worked on.
func pastResult(ctx context.Context, js jetstream.JetStream, jobID string, since time.Time) (string, []byte, error) {
	c, err := js.OrderedConsumer(ctx, "WX_RESULTS", jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"user.profile", "user.profile.failed"},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
	})
	if err != nil {
		return "", nil, err
	}
	it, err := c.Messages()
	if err != nil {
		return "", nil, err
	}
	defer it.Stop()
	go func() { <-ctx.Done(); it.Stop() }()
	for {
		m, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return "", nil, fmt.Errorf("no result for job %s: %w", jobID, ctx.Err())
		}
		if err != nil {
			return "", nil, err
		}
		if m.Headers().Get("Nats-Msg-Id") == jobID {
			return m.Subject(), m.Data(), nil
		}
	}
}
