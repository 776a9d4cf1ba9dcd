package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
)

// user is a NATS connection as one of the configured users, with its
// asynchronous errors (permission violations) on a channel.
type user struct {
	role grants.Role
	name string
	nc   *nats.Conn
	js   jetstream.JetStream // the role's own account
	// streams reaches every stream as the role's account imports it
	// (the shipped accounts layout).
	streams *broker.JetStreams
	errs    chan error
}

// connectAs logs in as role's user with the role's inbox prefix, as wxhub
// does.
func connectAs(t *testing.T, s *server.Server, role grants.Role) *user {
	t.Helper()
	name := role.User()
	u := &user{role: role, name: name, errs: make(chan error, 256)}
	nc, err := nats.Connect(s.ClientURL(),
		nats.Name("deploy-test-"+name),
		nats.UserInfo(name, demoPassword(name)),
		nats.CustomInboxPrefix(role.InboxPrefix()),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case u.errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	u.nc = nc
	if u.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if u.streams, err = broker.NewJetStreams(nc, role, true); err != nil {
		t.Fatal(err)
	}
	return u
}

// inAccount is the admin's JetStream handle on account acc (CORE is its
// own; the others through the $JS.<ACCOUNT>.API imports).
func (u *user) inAccount(t *testing.T, acc string) jetstream.JetStream {
	t.Helper()
	if acc == u.role.Account() {
		return u.js
	}
	js, err := jetstream.NewWithAPIPrefix(u.nc, "$JS."+acc+".API")
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// outcome of one attempt: denied by a permission violation naming the
// subject, or answered (reply), or neither.
type outcome struct {
	denied bool
	reply  *nats.Msg
	err    error
}

// drain forgets earlier asynchronous errors.
func (u *user) drain() {
	for {
		select {
		case <-u.errs:
		default:
			return
		}
	}
}

// waitDenied waits up to d for a permission violation naming subject.
func (u *user) waitDenied(subject string, d time.Duration) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		select {
		case err := <-u.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return true
			}
		case <-deadline.C:
			return false
		}
	}
}

// request sends body to subject as a request and reports whether the
// server refused it. A refused publish gets no reply, only the
// asynchronous violation, so that is the event waited for.
func (u *user) request(subject string, body []byte, hdr nats.Header) outcome {
	u.drain()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	type res struct {
		m   *nats.Msg
		err error
	}
	done := make(chan res, 1)
	go func() {
		m, err := u.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: subject, Data: body, Header: hdr})
		done <- res{m, err}
	}()
	for {
		select {
		case err := <-u.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
				cancel()
				<-done
				return outcome{denied: true}
			}
		case r := <-done:
			if r.err == nil {
				return outcome{reply: r.m}
			}
			// The violation may trail the failed request.
			return outcome{denied: u.waitDenied(subject, 2*time.Second), err: r.err}
		}
	}
}

// subscribe tries to subscribe to subject and reports whether the server
// refused it.
func (u *user) subscribe(subject, queue string) outcome {
	u.drain()
	sub, err := u.nc.QueueSubscribeSync(subject, queue)
	if err != nil {
		return outcome{err: err}
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := u.nc.Flush(); err != nil {
		return outcome{err: err}
	}
	return outcome{denied: u.waitDenied(subject, 5*time.Second)}
}

// apiError is the error of a JetStream API reply, "" when it succeeded.
func apiError(m *nats.Msg) string {
	var r struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return "unreadable reply: " + string(m.Data)
	}
	if r.Error != nil {
		return r.Error.Description
	}
	return ""
}

// provisioned starts a node of the shipped config and provisions the
// default topology as the admin, as `wxhub provision` does.
func provisioned(t *testing.T) *server.Server {
	t.Helper()
	s := startServer(t, shippedOptions(t))
	admin := connectAs(t, s, grants.Provision)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := broker.Provision(ctx, admin.streams, broker.Topology{}); err != nil {
		t.Fatal(err)
	}
	return s
}

// noViolations fails the test, at its end, for every asynchronous error
// (a permission violation) any of users saw.
func noViolations(t *testing.T, users ...*user) {
	t.Cleanup(func() {
		for _, u := range users {
			for len(u.errs) > 0 {
				t.Errorf("%s: %v", u.name, <-u.errs)
			}
		}
	})
}
