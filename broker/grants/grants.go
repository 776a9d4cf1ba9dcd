// Package grants is the one definition of what each wxhub role may do on
// NATS. The tables below (Buckets, Subjects, Streams, Consumers) say which
// role reads or writes which bucket, publishes or subscribes to which
// subject, and pulls which durable consumer; Permissions turns them into
// the exact publish and subscribe allow-lists of a NATS user. The shipped
// deploy/nats/accounts.inc, the Helm values of the NATS chart and the
// README's security section are generated from these tables
// (`make grants`), and the attack suite in package deploy proves on the
// generated config that every grant is as narrow as it says.
//
// To add a bucket, a subject, a stream or a durable consumer: add a row
// here (and the name in package events), run `make grants`, and add the
// resource to broker.Topology so that `wxhub provision` creates it.
//
// The rules the tables encode:
//   - Only the provision role (the admin user) has JetStream admin rights.
//     No other grant ever contains $JS.API.> or any STREAM.CREATE, UPDATE,
//     DELETE or PURGE subject, or CONSUMER.CREATE on a stream whose
//     content the role could choose (TestNoAdminRights).
//   - Each role's JetStream replies arrive on its own inbox prefix
//     (InboxPrefix), so no role can read another's replies.
//   - Roles answer `wxhub status` on a reply subject of their own
//     (events.SubjectReply), not through allow_responses: a
//     user with allow_responses may publish to any reply subject of a
//     message it receives, including one it sent itself with the reply
//     $JS.API.STREAM.UPDATE.<stream>.
package grants

import (
	"slices"
	"strings"

	"github.com/wxhub/wxhub/events"
)

// Role is one kind of process (or person) on NATS, with its own user.
type Role string

// The roles. Provision is the administrator: `wxhub provision`, `wxhub
// status`, `wxhub token`, the nats CLI.
const (
	Provision Role = "provision"
	Holder    Role = "holder"
	Worker    Role = "worker"
	Gateway   Role = "gateway"
	Client    Role = "client"
)

// Roles lists every role, in the order the deploy files show them.
var Roles = []Role{Holder, Worker, Gateway, Provision, Client}

// User is the role's NATS user name in the shipped deploy files.
func (r Role) User() string {
	if r == Provision {
		return "admin"
	}
	return string(r)
}

// Account is the NATS account of the role's user in the shipped layout
// (deploy/nats/accounts.inc). An account is the unit of trust: through the
// replies of the JetStream API (a direct get answers on any reply subject
// its requester names, with the stored message as the body) every user of
// an account can make the server publish bytes it stored on any subject of
// that account, JetStream API requests included. So each role has an
// account of its own holding only its own state, and the job and result
// streams live in CORE, whose only user is the admin; what crosses between
// accounts is exactly the exports and imports of Links.
func (r Role) Account() string {
	switch r {
	case Holder:
		return AccountHolder
	case Worker:
		return AccountWorker
	case Gateway:
		return AccountGateway
	case Client:
		return AccountClients
	}
	return AccountCore
}

// Account names in the shipped deploy files.
const (
	AccountHolder  = "HOLDER"
	AccountWorker  = "WORKER"
	AccountGateway = "GATEWAY"
	AccountCore    = "CORE"
	AccountClients = "CLIENTS"

	// AccountWXHUB is the one account of the earlier layout.
	AccountWXHUB = "WXHUB"
)

// StreamAccount is the account a stream (or KV_<bucket>) lives in: a
// bucket in its writers' account, WX_TOKEN_EVENTS with the holders, the
// job, result and dead-letter streams in CORE.
func StreamAccount(stream string) string {
	for _, b := range Buckets {
		if KVStream(b.Name) == stream && len(b.Write) > 0 {
			return b.Write[0].Account()
		}
	}
	if stream == events.StreamTokenEvents {
		return AccountHolder
	}
	return AccountCore
}

// DefaultAPIPrefix is the JetStream API of a connection's own account.
const DefaultAPIPrefix = "$JS.API"

// APIPrefix is the JetStream API prefix through which a connection of role
// viewer reaches stream in the shipped layout: DefaultAPIPrefix in its own
// account, "$JS.<ACCOUNT>.API" in another (the viewer's account imports
// the calls it may make there under that prefix).
func APIPrefix(viewer Role, stream string) string {
	home := StreamAccount(stream)
	if home == viewer.Account() {
		return DefaultAPIPrefix
	}
	return "$JS." + home + ".API"
}

// InboxPrefix is the reply-subject prefix of the role's connections
// (nats.CustomInboxPrefix): every role in WXHUB may subscribe to its own
// inbox only.
func (r Role) InboxPrefix() string {
	if r == Client {
		return "_INBOX"
	}
	return "_INBOX_" + r.User()
}

// Bucket is a KV bucket and who may read, watch and write its keys. Read
// is get (direct and stream message get) and stream info; Watch is a KV
// watch (an ordered consumer on the bucket's stream, filtered to
// $KV.<bucket>.>); Write is put, create, update, delete and purge of keys
// (publishes to $KV.<bucket>.<key>), never of the stream itself. Writers
// and watchers are readers.
//
// Grant Watch sparingly: a role that may create a consumer chooses its
// deliver subject, and the server then publishes the stream's messages
// there, past the role's publish grant (see docs/security.md). Never
// grant Watch on a bucket whose content a role other than its writers
// could read through it, or to a role that also writes it unless it must.
type Bucket struct {
	Name  string
	Read  []Role
	Watch []Role
	Write []Role
	Why   string
}

// Subject is a (bare, unprefixed) subject, or a wildcard ending in ">",
// and who may publish or subscribe. A publish to a subject that a stream
// stores gets its PubAck on the publisher's inbox.
type Subject struct {
	Name      string
	Publish   []Role
	Subscribe []Role
	Why       string
}

// Stream lists the stream-level API calls a role may make on a stream
// (never create, update, delete or purge).
type Stream struct {
	Name      string
	Info      []Role // STREAM.INFO: bind to it, read its state
	MsgGet    []Role // STREAM.MSG.GET: read one message by sequence
	MsgDelete []Role // STREAM.MSG.DELETE: delete one message
	Why       string
}

// Consumer is a durable consumer provisioned by the admin and the roles
// that pull from it: info, next and ack of its deliveries, and its
// max-deliveries advisories.
type Consumer struct {
	Stream  string
	Durable string
	Pull    []Role
	Why     string
}

// Buckets: who reads and writes each KV bucket.
var Buckets = []Bucket{
	{events.BucketTokens, []Role{Worker, Gateway}, []Role{Holder, Worker, Gateway}, []Role{Holder}, "the global access_token per appid: only holders write it"},
	{events.BucketLeases, nil, []Role{Holder}, []Role{Holder}, "holder leadership per appid (the lease watch makes takeovers prompt)"},
	{events.BucketQuota, nil, nil, []Role{Holder}, "token fetches per appid per China day"},
	{events.BucketOAuth, nil, nil, []Role{Worker}, "OAuth code exchange outcomes (redeliveries reuse them)"},
	{events.BucketDone, nil, nil, []Role{Worker}, "one record per finished job: late redeliveries end without a second result"},
	{events.BucketLoginState, nil, nil, []Role{Gateway}, "web-login states (nonce, used once)"},
	{events.BucketVault, nil, []Role{Worker}, []Role{Worker}, "the encrypted user-token vault (workers only; the admin rotates keys). Workers watch it: the key check lists k.* at start, and a refresh waits on the user's lock and record"},
}

// Subjects: who publishes and subscribes to each wxhub subject.
var Subjects = []Subject{
	{events.SubjectUserLookup, []Role{Client}, nil, "job"},
	{events.SubjectOAuthCodeReceived, []Role{Client, Gateway}, nil, "job (the gateway's OAuth callback publishes it too)"},
	{events.SubjectOAuthUserInfo, []Role{Client}, nil, "job: refresh a profile from the vault"},
	{events.SubjectStoredResultPrefix + events.SubjectUserProfile, []Role{Worker}, nil, "result, stored by WX_RESULTS before it is public"},
	{events.SubjectStoredResultPrefix + events.SubjectUserProfileFailed, []Role{Worker}, nil, "result, stored by WX_RESULTS before it is public"},
	{events.SubjectUserProfile, nil, []Role{Client, Gateway}, "result, republished by WX_RESULTS once stored"},
	{events.SubjectUserProfileFailed, nil, []Role{Client, Gateway}, "result, republished by WX_RESULTS once stored"},
	{events.SubjectTokenRefreshed, []Role{Holder}, []Role{Worker, Gateway}, "token event (never the token): the token caches re-read the app"},
	{events.SubjectTokenRefreshFailed, []Role{Holder}, nil, "token event"},
	{events.SubjectTokenConflict, []Role{Holder}, nil, "token event"},
	{events.SubjectTokenInvalidated, []Role{Worker, Gateway}, []Role{Holder}, "report of a rejected token"},
	{events.SubjectStoredDeadLetterPrefix + ">", []Role{Worker}, nil, "original bytes of rejected jobs, stored by WX_DEADLETTERS as deadletter.<job subject>"},
	{events.SubjectStatus, nil, []Role{Holder, Worker, Gateway}, "`wxhub status` requests (the admin sends them)"},
	{events.SubjectTokenRefreshRequest, nil, []Role{Holder}, "manual refresh requests (`wxhub token invalidate`, the admin)"},
	{events.SubjectReply + ".>", []Role{Holder, Worker, Gateway}, nil, "answers to `wxhub status` and `wxhub token invalidate`"},
}

// Streams: the stream-level API calls each role may make.
var Streams = []Stream{
	{events.StreamJobs, []Role{Worker}, []Role{Worker}, []Role{Worker},
		"workers read a job that used all its deliveries, publish its failure, then delete it"},
	{events.StreamResults, []Role{Worker, Gateway}, nil, nil, "results are published here"},
	{events.StreamTokenEvents, []Role{Holder, Worker, Gateway}, nil, nil, "token events are published here"},
	{events.StreamDeadLetters, []Role{Worker}, nil, nil, "dead letters are published here"},
}

// Consumers: the durables of WX_JOBS, one per job subject.
var Consumers = func() []Consumer {
	var out []Consumer
	for _, j := range events.NewSubjects("").Jobs() {
		out = append(out, Consumer{events.StreamJobs, events.WorkerConsumer(j), []Role{Worker}, "jobs on " + j})
	}
	return out
}()

// KVStream is the stream behind a KV bucket.
func KVStream(bucket string) string { return "KV_" + bucket }

// Permissions is a NATS user's allow-lists. An empty list denies
// everything in that direction; Admin means no restriction at all.
type Permissions struct {
	Admin     bool
	Publish   []string
	Subscribe []string
}

// For returns role's permissions with every wxhub subject under prefix
// (events.NewSubjects); $JS, $KV and inbox subjects are never prefixed.
func For(role Role, prefix string) Permissions {
	if role == Provision {
		return Permissions{Admin: true}
	}
	p := events.NewSubjects(prefix).Prefix
	var pub, sub []string
	add := func(list *[]string, s ...string) {
		for _, x := range s {
			if !slices.Contains(*list, x) {
				*list = append(*list, x)
			}
		}
	}
	jsUser := role != Client
	for _, s := range Subjects {
		if slices.Contains(s.Publish, role) {
			add(&pub, p+s.Name)
		}
		if slices.Contains(s.Subscribe, role) {
			add(&sub, p+s.Name)
		}
	}
	if jsUser {
		for _, st := range Streams {
			api := "$JS.API.STREAM."
			if slices.Contains(st.Info, role) {
				add(&pub, api+"INFO."+st.Name)
			}
			if slices.Contains(st.MsgGet, role) {
				add(&pub, api+"MSG.GET."+st.Name)
			}
			if slices.Contains(st.MsgDelete, role) {
				add(&pub, api+"MSG.DELETE."+st.Name)
			}
		}
		for _, c := range Consumers {
			if !slices.Contains(c.Pull, role) {
				continue
			}
			add(&pub,
				"$JS.API.CONSUMER.INFO."+c.Stream+"."+c.Durable,
				"$JS.API.CONSUMER.MSG.NEXT."+c.Stream+"."+c.Durable,
				"$JS.ACK."+c.Stream+"."+c.Durable+".>")
			// Workers hear these with one wildcard subscription.
			add(&sub, "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."+c.Stream+".*")
		}
		for _, b := range Buckets {
			w, watch := slices.Contains(b.Write, role), slices.Contains(b.Watch, role)
			if !w && !watch && !slices.Contains(b.Read, role) {
				continue
			}
			st := KVStream(b.Name)
			add(&pub,
				"$JS.API.STREAM.INFO."+st,
				"$JS.API.DIRECT.GET."+st,
				"$JS.API.DIRECT.GET."+st+".$KV."+b.Name+".>",
				"$JS.API.STREAM.MSG.GET."+st)
			if watch {
				// A KV watch is an ordered consumer filtered to the
				// bucket's keys (the filter is part of the subject).
				// Stopping a watch deletes its consumer. (Consumer names
				// are random, so a watcher may delete another's watch
				// of the same bucket, which then recreates itself.)
				add(&pub,
					"$JS.API.CONSUMER.CREATE."+st+".*.$KV."+b.Name+".>",
					"$JS.API.CONSUMER.DELETE."+st+".*",
					"$JS.FC."+st+".>")
			}
			if w {
				add(&pub, "$KV."+b.Name+".>")
			}
		}
	}
	if len(pub) > 0 || len(sub) > 0 {
		add(&sub, role.InboxPrefix()+".>")
	}
	return Permissions{Publish: pub, Subscribe: sub}
}

// Exports are the subjects account WXHUB exports to CLIENTS: the ones the
// client role publishes (services, so the PubAck comes back) and
// subscribes to (streams), under prefix.
func Exports(prefix string) (services, streams []string) {
	p := events.NewSubjects(prefix).Prefix
	for _, s := range Subjects {
		if slices.Contains(s.Publish, Client) {
			services = append(services, p+s.Name)
		}
		if slices.Contains(s.Subscribe, Client) {
			streams = append(streams, p+s.Name)
		}
	}
	return services, streams
}

// Uses lists the streams (KV buckets as KV_<bucket>) and durable
// consumers a role's grant names: what must exist before it can work.
func Uses(role Role) (streams []string, consumers []Consumer) {
	for _, st := range Streams {
		if slices.Contains(st.Info, role) {
			streams = append(streams, st.Name)
		}
	}
	for _, b := range Buckets {
		if slices.Contains(b.Read, role) || slices.Contains(b.Watch, role) || slices.Contains(b.Write, role) {
			streams = append(streams, KVStream(b.Name))
		}
	}
	for _, c := range Consumers {
		if slices.Contains(c.Pull, role) {
			consumers = append(consumers, c)
		}
	}
	return streams, consumers
}

// roleList renders roles for the docs.
func roleList(rs []Role) string {
	if len(rs) == 0 {
		return "-"
	}
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}
