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
	for _, st := range Streams {
		if st.Name == stream {
			return st.Home.Account()
		}
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
	Home      Role // the role whose account the subject lives in; "" = each publisher's own
	Publish   []Role
	Subscribe []Role
	Why       string
}

// Stream lists the stream-level API calls a role may make on a stream
// (never create, update, delete or purge).
type Stream struct {
	Name      string
	Home      Role   // the role whose account the stream lives in
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
	{events.BucketTokens, []Role{Worker, Gateway}, []Role{Holder}, []Role{Holder}, "the global access_token per appid: only holders write it (workers and gateways get it, again on each token.refreshed)"},
	{events.BucketLeases, nil, []Role{Holder}, []Role{Holder}, "holder leadership per appid (the lease watch makes takeovers prompt)"},
	{events.BucketQuota, nil, nil, []Role{Holder}, "token fetches per appid per China day"},
	{events.BucketOAuth, nil, nil, []Role{Worker}, "OAuth code exchange outcomes (redeliveries reuse them)"},
	{events.BucketDone, nil, nil, []Role{Worker}, "one record per finished job: late redeliveries end without a second result"},
	{events.BucketLoginState, nil, nil, []Role{Gateway}, "web-login states (nonce, used once)"},
	{events.BucketVault, nil, []Role{Worker}, []Role{Worker}, "the encrypted user-token vault (workers only; the workers' operator rotates keys as the worker user). Workers watch it: the key check lists k.* at start, and a refresh waits on the user's lock and record"},
}

// Subjects: who publishes and subscribes to each wxhub subject, and the
// account it lives in (Home): a publisher in another account reaches it
// through a service import (so a JetStream publish gets its PubAck back),
// a subscriber through a stream import.
var Subjects = []Subject{
	{events.SubjectUserLookup, Provision, []Role{Client, Provision}, nil, "job (the admin replays dead letters)"},
	{events.SubjectOAuthCodeReceived, Provision, []Role{Client, Gateway, Provision}, nil, "job (the gateway's OAuth callback publishes it too)"},
	{events.SubjectOAuthUserInfo, Provision, []Role{Client, Provision}, nil, "job: refresh a profile from the vault"},
	{events.SubjectStoredResultPrefix + events.SubjectUserProfile, Provision, []Role{Worker}, nil, "result, stored by WX_RESULTS before it is public"},
	{events.SubjectStoredResultPrefix + events.SubjectUserProfileFailed, Provision, []Role{Worker}, nil, "result, stored by WX_RESULTS before it is public"},
	{events.SubjectUserProfile, Provision, nil, []Role{Client, Gateway, Provision}, "result, republished by WX_RESULTS once stored"},
	{events.SubjectUserProfileFailed, Provision, nil, []Role{Client, Gateway, Provision}, "result, republished by WX_RESULTS once stored"},
	{events.SubjectTokenRefreshed, Holder, []Role{Holder}, []Role{Worker, Gateway}, "token event (never the token): workers and gateways re-read the token"},
	{events.SubjectTokenRefreshFailed, Holder, []Role{Holder}, nil, "token event"},
	{events.SubjectTokenConflict, Holder, []Role{Holder}, nil, "token event"},
	{events.SubjectTokenInvalidated, Holder, []Role{Worker, Gateway}, []Role{Holder}, "report of a rejected token"},
	{events.SubjectStoredDeadLetterPrefix + ">", Provision, []Role{Worker}, nil, "original bytes of rejected jobs, stored by WX_DEADLETTERS as deadletter.<job subject>"},
	{events.SubjectStatus, Provision, []Role{Provision}, []Role{Holder, Worker, Gateway}, "`wxhub status` requests (the admin sends them)"},
	{events.SubjectTokenRefreshRequest, Provision, []Role{Provision}, []Role{Holder}, "manual refresh requests (`wxhub token invalidate`, the admin)"},
	{events.SubjectReply + ".>", "", []Role{Holder, Worker, Gateway}, []Role{Provision}, "answers to `wxhub status` and `wxhub token invalidate`"},
}

// Streams: the stream-level API calls each role may make.
var Streams = []Stream{
	{events.StreamJobs, Provision, []Role{Worker}, []Role{Worker}, []Role{Worker},
		"workers read a job that used all its deliveries, publish its failure, then delete it"},
	{events.StreamResults, Provision, []Role{Worker, Gateway}, nil, nil, "results are published here"},
	{events.StreamTokenEvents, Holder, []Role{Holder, Worker, Gateway}, nil, nil, "token events are published here"},
	{events.StreamDeadLetters, Provision, []Role{Worker}, []Role{Worker}, nil,
		"dead letters are published here; workers read them back so that a job that used all its deliveries gets one dead letter, even when a retry comes after the duplicate window"},
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

// grant is one subject a role uses, named as in the account it lives in.
type grant struct {
	sub     bool   // subscribe, else publish
	subject string // as the home account names it
	home    string // the account the subject lives in
	api     bool   // a JetStream API request: imported under the home's API prefix
	multi   bool   // answered by several messages (a pull request)
}

// local is the subject as the role's own account names it.
func (g grant) local(role Role) string {
	if !g.api || g.home == role.Account() {
		return g.subject
	}
	return "$JS." + g.home + ".API." + strings.TrimPrefix(g.subject, DefaultAPIPrefix+".")
}

// grantsOf lists every subject role uses, under prefix.
func grantsOf(role Role, prefix string) []grant {
	p := events.NewSubjects(prefix).Prefix
	var out []grant
	add := func(g grant) {
		if !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	for _, s := range Subjects {
		home := s.Home.Account()
		if s.Home == "" {
			home = role.Account() // each publisher's own (subscribers: see Links)
		}
		if slices.Contains(s.Publish, role) {
			add(grant{subject: p + s.Name, home: home})
		}
		if slices.Contains(s.Subscribe, role) && s.Home != "" {
			add(grant{sub: true, subject: p + s.Name, home: home})
		}
		if slices.Contains(s.Subscribe, role) && s.Home == "" {
			for _, pub := range s.Publish {
				add(grant{sub: true, subject: p + s.Name, home: pub.Account()})
			}
		}
	}
	api := func(subject, stream string, multi bool) grant {
		return grant{subject: DefaultAPIPrefix + "." + subject, home: StreamAccount(stream), api: true, multi: multi}
	}
	for _, st := range Streams {
		if slices.Contains(st.Info, role) {
			add(api("STREAM.INFO."+st.Name, st.Name, false))
		}
		if slices.Contains(st.MsgGet, role) {
			add(api("STREAM.MSG.GET."+st.Name, st.Name, false))
		}
		if slices.Contains(st.MsgDelete, role) {
			add(api("STREAM.MSG.DELETE."+st.Name, st.Name, false))
		}
	}
	for _, c := range Consumers {
		if !slices.Contains(c.Pull, role) {
			continue
		}
		home := StreamAccount(c.Stream)
		add(api("CONSUMER.INFO."+c.Stream+"."+c.Durable, c.Stream, false))
		add(api("CONSUMER.MSG.NEXT."+c.Stream+"."+c.Durable, c.Stream, true))
		add(grant{subject: "$JS.ACK." + c.Stream + "." + c.Durable + ".>", home: home})
		// Workers hear these with one wildcard subscription.
		add(grant{sub: true, subject: "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + c.Stream + ".*", home: home})
	}
	for _, b := range Buckets {
		w, watch := slices.Contains(b.Write, role), slices.Contains(b.Watch, role)
		if !w && !watch && !slices.Contains(b.Read, role) {
			continue
		}
		st := KVStream(b.Name)
		add(api("STREAM.INFO."+st, st, false))
		add(api("DIRECT.GET."+st, st, false))
		add(api("DIRECT.GET."+st+".$KV."+b.Name+".>", st, false))
		add(api("STREAM.MSG.GET."+st, st, false))
		if watch {
			// A KV watch is an ordered consumer filtered to the
			// bucket's keys (the filter is part of the subject).
			// Stopping a watch deletes its consumer. (Consumer names
			// are random, so a watcher may delete another's watch of
			// the same bucket, which then recreates itself.) Only in
			// the bucket's own account: see Links.
			add(api("CONSUMER.CREATE."+st+".*.$KV."+b.Name+".>", st, false))
			add(api("CONSUMER.DELETE."+st+".*", st, false))
			add(grant{subject: "$JS.FC." + st + ".>", home: StreamAccount(st)})
		}
		if w {
			add(grant{subject: "$KV." + b.Name + ".>", home: StreamAccount(st)})
		}
	}
	return out
}

// For returns role's permissions with every wxhub subject under prefix
// (events.NewSubjects); $JS, $KV and inbox subjects are never prefixed.
// Subjects of another account are named as the role's account imports
// them (Links).
func For(role Role, prefix string) Permissions {
	if role == Provision {
		return Permissions{Admin: true}
	}
	var pub, sub []string
	add := func(list *[]string, s string) {
		if !slices.Contains(*list, s) {
			*list = append(*list, s)
		}
	}
	for _, g := range grantsOf(role, prefix) {
		if role == Client && (g.api || strings.HasPrefix(g.subject, "$")) {
			continue // account CLIENTS has no JetStream
		}
		if g.sub {
			add(&sub, g.local(role))
		} else {
			add(&pub, g.local(role))
		}
	}
	if len(pub) > 0 || len(sub) > 0 {
		add(&sub, role.InboxPrefix()+".>")
	}
	return Permissions{Publish: pub, Subscribe: sub}
}

// Link is one subject that crosses between accounts: the export of
// Subject by account From and its import by account To under the name
// Local.
type Link struct {
	Service bool   // a service (requests, and publishes that get a PubAck), else a stream
	From    string // exporting account
	To      string // importing account
	Subject string // as From names it
	Local   string // as To names it (the same but for JetStream API calls)
	Multi   bool   // a service answered by several messages (pull requests)
}

// JetStreamAccounts are the accounts with JetStream, whose whole API the
// admin (in CORE) imports under $JS.<ACCOUNT>.API.
var JetStreamAccounts = []string{AccountHolder, AccountWorker, AccountGateway, AccountCore}

// Links lists every export and import of the shipped layout, under
// prefix: what each role uses in another account, and the admin's view of
// every account. Nothing else crosses: no KV write and no consumer create
// (a consumer's deliver subject would be in the stream's account, chosen
// by the role), so no role can make another account's server publish.
func Links(prefix string) []Link {
	var out []Link
	add := func(l Link) {
		if !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	for _, r := range Roles {
		if r == Provision {
			// The admin's own subjects; its JetStream view is below.
			for _, g := range grantsOf(r, prefix) {
				if g.home != r.Account() && !g.api {
					add(Link{Service: !g.sub, From: g.home, To: r.Account(), Subject: g.subject, Local: g.subject})
				}
			}
			continue
		}
		for _, g := range grantsOf(r, prefix) {
			if g.home == r.Account() {
				continue
			}
			add(Link{Service: !g.sub, From: g.home, To: r.Account(), Subject: g.subject, Local: g.local(r), Multi: g.multi})
		}
	}
	for _, acc := range JetStreamAccounts {
		if acc != AccountCore {
			add(Link{Service: true, From: acc, To: AccountCore, Subject: DefaultAPIPrefix + ".>", Local: "$JS." + acc + ".API.>", Multi: true})
		}
	}
	return out
}

// Exports returns the subjects an account exports and to whom, in the
// order of Links.
func Exports(acc string, links []Link) []Export {
	var out []Export
	for _, l := range links {
		if l.From != acc {
			continue
		}
		i := slices.IndexFunc(out, func(e Export) bool { return e.Subject == l.Subject && e.Service == l.Service })
		if i < 0 {
			out = append(out, Export{Service: l.Service, Subject: l.Subject})
			i = len(out) - 1
		}
		if !slices.Contains(out[i].Accounts, l.To) {
			out[i].Accounts = append(out[i].Accounts, l.To)
		}
		out[i].Multi = out[i].Multi || l.Multi
	}
	return out
}

// Export is one exported subject and the accounts that may import it.
type Export struct {
	Service  bool
	Subject  string
	Accounts []string
	Multi    bool
}

// Imports returns the links account acc imports.
func Imports(acc string, links []Link) []Link {
	var out []Link
	for _, l := range links {
		if l.To == acc {
			out = append(out, l)
		}
	}
	return out
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
