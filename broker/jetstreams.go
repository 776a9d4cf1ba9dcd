package broker

import (
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/grants"
)

// JetStreams hands out the JetStream handle through which one role's
// connection reaches each stream. On a server without accounts (`wxhub
// run`, the zero-setup default) every stream is in the connection's own
// account and one handle serves all. In the shipped accounts layout
// (deploy/nats, --nats-accounts) a stream of another account is reached
// through the API prefix the role's account imports it under
// (grants.APIPrefix): the workers' WX_JOBS through $JS.CORE.API, the
// token bucket through $JS.HOLDER.API, and so on.
//
// Only the JetStream API is prefixed: publishes to a subject (jobs,
// results, token.invalidated) and acks cross accounts by the imports of
// the same subject, and KV writes never do (a bucket lives with its
// writers).
type JetStreams struct {
	nc       *nats.Conn
	role     grants.Role
	accounts bool
	opts     []jetstream.JetStreamOpt

	mu       sync.Mutex
	byPrefix map[string]jetstream.JetStream
}

// NewJetStreams returns the handles of role's connection nc; accounts
// says whether the server uses the accounts layout. opts apply to every
// handle.
func NewJetStreams(nc *nats.Conn, role grants.Role, accounts bool, opts ...jetstream.JetStreamOpt) (*JetStreams, error) {
	j := &JetStreams{nc: nc, role: role, accounts: accounts, opts: opts, byPrefix: map[string]jetstream.JetStream{}}
	if _, err := j.handle(grants.DefaultAPIPrefix); err != nil {
		return nil, err
	}
	return j, nil
}

// Local is the handle of the connection's own account.
func (j *JetStreams) Local() jetstream.JetStream {
	js, _ := j.handle(grants.DefaultAPIPrefix) // made by NewJetStreams
	return js
}

// For is the handle that reaches stream (a stream name, or KV_<bucket>).
func (j *JetStreams) For(stream string) jetstream.JetStream {
	js, err := j.handle(j.prefix(stream))
	if err != nil {
		// Only an invalid prefix fails, and the prefixes are constants.
		panic(err)
	}
	return js
}

// prefix is the JetStream API prefix through which stream is reached.
func (j *JetStreams) prefix(stream string) string {
	if j.accounts {
		return grants.APIPrefix(j.role, stream)
	}
	return grants.DefaultAPIPrefix
}

// Bucket is the handle that reaches KV bucket name.
func (j *JetStreams) Bucket(name string) jetstream.JetStream { return j.For(grants.KVStream(name)) }

// Accounts reports whether the handles follow the accounts layout.
func (j *JetStreams) Accounts() bool { return j.accounts }

// Role is the role whose view the handles give.
func (j *JetStreams) Role() grants.Role { return j.role }

// Conn is the connection the handles use.
func (j *JetStreams) Conn() *nats.Conn { return j.nc }

func (j *JetStreams) handle(prefix string) (jetstream.JetStream, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if js, ok := j.byPrefix[prefix]; ok {
		return js, nil
	}
	var (
		js  jetstream.JetStream
		err error
	)
	if prefix == grants.DefaultAPIPrefix {
		js, err = jetstream.New(j.nc, j.opts...)
	} else {
		js, err = jetstream.NewWithAPIPrefix(j.nc, prefix, j.opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("broker: jetstream %s: %w", prefix, err)
	}
	j.byPrefix[prefix] = js
	return js, nil
}

// LocalJetStreams is the JetStreams of role on a server without accounts
// (`wxhub run`, tests): every stream is reached through js itself, whose
// options are kept.
func LocalJetStreams(js jetstream.JetStream, role grants.Role) *JetStreams {
	return &JetStreams{nc: js.Conn(), role: role,
		byPrefix: map[string]jetstream.JetStream{grants.DefaultAPIPrefix: js}}
}
