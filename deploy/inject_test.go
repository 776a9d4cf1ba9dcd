package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker"
	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// The attacks of this file make the SERVER publish for the attacker.
// Grants restrict what a user publishes, but not the reply subject of its
// requests, nor the deliver subject of a consumer it creates: the
// JetStream server answers there, as the account, with bytes the attacker
// may have chosen. The families:
//
//	A   plant bytes (and headers) in a bucket the role writes, then a
//	    direct get of them with Reply = target: the server publishes the
//	    stored message on target. A0: the same with a key that does not
//	    exist (the answer is an empty 404 status: an "empty request").
//	    A': a direct get of a record of a bucket the role only reads.
//	B   a JetStream API request the role may make (STREAM.INFO,
//	    STREAM.MSG.GET, CONSUMER.INFO, STREAM.MSG.DELETE) with Reply =
//	    target: the JSON answer goes there.
//	C   consumer deliveries: a KV watch the role may create with
//	    DeliverSubject = target; a pull (CONSUMER.MSG.NEXT) on a durable
//	    the role may pull with Reply = target.
//	D   a publish to a bucket the role writes with Reply = target: the
//	    PubAck ({"stream":..,"seq":..}, a JSON object) goes there.
//	E   A on a stream of the role's own account (STREAM.UPDATE with a
//	    RePublish to target), then a publish that stream stores. The
//	    server refuses the reflected update (below), so the admin makes
//	    the update the account could make by right, and the publish must
//	    still reach no one outside the account.
//
// Since nats-server 2.15.3 the server refuses every reply subject and
// deliver subject under "$JS." (serverRefuses): a shot aimed there must
// be refused (a permissions violation, or error 10112 for a consumer),
// not merely change nothing. Targets outside "$JS." still get the answer.
//
// Targets are every JetStream API call on every stream outside the
// attacker's account (update, purge, delete, message delete, consumer
// create and delete, stream create), every wxhub subject, every other
// account's KV subjects: everything the role's grant does not let it
// publish itself. After each volley the admin checks that nothing outside
// the attacker's own account changed and that no subscriber of another
// role (business clients above all) received anything. The positive
// control, TestServerRepliesThroughAWiderImportAreCaught, fires the same
// volleys at a target a widened layout lets them reach, and checks that
// the settles wait for what they set off and the checks see it.
//
// Each role attacks its own single server (node 1 of the shipped config,
// no routes): the barriers that tell when an attack has had its effect
// follow that one server's queues (see settle and each family's settle).
//
// An account is the unit of trust: what an attacker does to its own
// account's streams (grants.StreamAccount) is its own business and not
// checked. On a layout with one account for every role this test fails:
// that was the finding of session 3.

// Headers of this test's messages.
const (
	// injectNonceHdr marks what the test publishes where the verifiers
	// hear it (barriers, the token event seed) or a stream republishes it
	// there (the result and dead-letter seeds): heard ignores it. Jobs and
	// KV records never carry it: the server delivers them verbatim (pulls,
	// watches, direct gets), and a marked delivery would pass unheard.
	injectNonceHdr = "Wx-Inject-Nonce"
	// forgedHdr is stored with every plant (a stored header comes back
	// with a direct get).
	forgedHdr = "Wx-Forged"
)

// injectWorld is one server of the shipped config, provisioned and
// seeded, attacked by one role.
type injectWorld struct {
	t        *testing.T
	s        *server.Server
	ctx      context.Context
	accounts bool // the shipped config has an account per role
	attacker grants.Role
	atk      *user
	atkJS    *broker.JetStreams
	conns    map[grants.Role]*user // the test's own connection of each role
	views    map[grants.Role]*broker.JetStreams
	admin    *user
	topo     broker.Topology
	streams  []string          // every stream, buckets as KV_<bucket>
	configs  map[string][]byte // the provisioned configurations (JSON)
	barrier  map[string]string // a subject each stream stores
	verifs   []*verifier
	nonce    string
	keys     int
	jobs     map[string]int // jobs seeded per durable
	// republished counts the own-stream updates of family E that took,
	// cycles those the server refused (see republish).
	republished, cycles int
	// legit counts the messages the attacker stored by right in a stream
	// outside its account (its jobs, its token.invalidated reports, its
	// results and dead letters).
	legit map[string]uint64
	// probe, when set, is called just before a volley's shots fire, and
	// what it returns once their own settles (and the volley's after)
	// have: the positive control checks there that the server has sent
	// what the shots made it send.
	probe func(v volley) (settled func())
}

// verifier is a subscription of another role that must receive nothing.
type verifier struct {
	role grants.Role
	conn *user
	sub  *nats.Subscription
}

// TestServerRepliesStayInTheAttackersAccount runs every reply and
// deliver-subject attack as every role but the admin, each on its own
// server, and proves that nothing outside the attacker's account changed
// and no other role's subscriber received anything.
func TestServerRepliesStayInTheAttackersAccount(t *testing.T) {
	t.Parallel()
	for _, role := range []grants.Role{grants.Holder, grants.Worker, grants.Gateway, grants.Client} {
		t.Run(string(role), func(t *testing.T) {
			t.Parallel()
			w := newInjectWorld(t, role)
			vs := w.volleys(w.targets())
			shots := 0
			for _, v := range vs {
				shots += len(v.shots)
				w.run(v)
			}
			var pulled []string
			for _, c := range grants.Consumers {
				if slices.Contains(c.Pull, role) {
					if info := w.consumerInfo(c.Stream, c.Durable); info != nil {
						pulled = append(pulled, fmt.Sprintf("%s delivered %d", c.Durable, info.Delivered.Consumer))
					}
				}
			}
			t.Logf("%d shots in %d volleys at %d targets; %d subscribers of other roles listening; %d things the admin checks; %d own streams made to republish (%d refused: a cycle); pulls: %v",
				shots, len(vs), len(w.targets()), len(w.verifs), len(w.snapshot()), w.republished, w.cycles, pulled)
		})
	}
}

// shippedAccounts reports whether o has the layout with an account per
// role (account CORE) rather than one account for all.
func shippedAccounts(o *server.Options) bool {
	for _, a := range o.Accounts {
		if a.Name == grants.AccountCore {
			return true
		}
	}
	return false
}

func newInjectWorld(t *testing.T, attacker grants.Role) *injectWorld {
	o := shippedOptions(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	w := &injectWorld{
		t: t, s: startServer(t, o), ctx: ctx, accounts: shippedAccounts(o), attacker: attacker,
		conns: map[grants.Role]*user{}, views: map[grants.Role]*broker.JetStreams{},
		configs: map[string][]byte{}, barrier: map[string]string{}, jobs: map[string]int{}, legit: map[string]uint64{},
		nonce: fmt.Sprintf("%s-%d", attacker, time.Now().UnixNano()),
	}
	var own []*user
	for _, r := range []grants.Role{grants.Provision, grants.Holder, grants.Worker, grants.Gateway, grants.Client} {
		u := connectAs(t, w.s, r)
		own = append(own, u)
		w.conns[r] = u
		if r != grants.Client {
			w.views[r] = w.jetStreams(u)
		}
	}
	noViolations(t, own...) // the test's own connections stay in their grants
	w.admin = w.conns[grants.Provision]
	w.atk = connectAs(t, w.s, attacker)
	w.atkJS = w.jetStreams(w.atk)
	for _, sc := range w.topo.StreamConfigs() {
		w.streams = append(w.streams, sc.Name)
		for _, s := range sc.Subjects {
			if _, ok := w.barrier[sc.Name]; !ok && !strings.ContainsAny(s, "*>") && mayPublish(w.owner(sc.Name), s) {
				w.barrier[sc.Name] = s
			}
		}
		if _, ok := w.barrier[sc.Name]; !ok {
			w.barrier[sc.Name] = example(sc.Subjects[0])
		}
	}
	for _, kc := range w.topo.BucketConfigs() {
		st := grants.KVStream(kc.Bucket)
		w.streams = append(w.streams, st)
		w.barrier[st] = "$KV." + kc.Bucket + ".wxbarrier"
	}
	w.provision()
	for _, st := range w.streams {
		info, err := w.adminJS(st).Stream(ctx, st)
		if err != nil {
			t.Fatalf("provisioned %s: %v", st, err)
		}
		w.configs[st] = mustJSON(info.CachedInfo().Config)
	}
	// Jobs for the pulls of family C, and one durable left empty (its
	// pulls are answered by a 404 status).
	for _, c := range grants.Consumers {
		if slices.Contains(c.Pull, attacker) && c.Durable != grants.Consumers[len(grants.Consumers)-1].Durable {
			w.jobs[c.Durable] = len(w.targets()) + 2 // and the sentinel
		}
	}
	w.seed()
	w.subscribeVerifiers()
	return w
}

func (w *injectWorld) jetStreams(u *user) *broker.JetStreams {
	j, err := broker.NewJetStreams(u.nc, u.role, w.accounts)
	if err != nil {
		w.t.Fatal(err)
	}
	return j
}

// adminJS is the admin's handle on stream st (in another account through
// the admin's imports of every account's API).
func (w *injectWorld) adminJS(st string) jetstream.JetStream {
	return w.views[grants.Provision].For(st)
}

// consumerInfo reads consumer name of stream st as the admin (by the raw
// API: package jetstream refuses push consumers); nil when the consumer
// or its stream is gone (the snapshot's diff tells).
func (w *injectWorld) consumerInfo(st, name string) *jetstream.ConsumerInfo {
	r, err := w.admin.nc.Request(w.apiPrefix(grants.Provision, st)+".CONSUMER.INFO."+st+"."+name, nil, 10*time.Second)
	if err != nil {
		w.t.Fatalf("admin: consumer info %s/%s: %v", st, name, err)
	}
	var info struct {
		jetstream.ConsumerInfo
		Error *struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.Data, &info); err != nil {
		w.t.Fatal(err)
	}
	if info.Error != nil && info.Error.Code == 404 {
		return nil
	}
	if e := apiError(r); e != "" {
		w.t.Fatalf("admin: consumer info %s/%s: %s", st, name, e)
	}
	return &info.ConsumerInfo
}

// apiPrefix is how role reaches stream's JetStream API.
func (w *injectWorld) apiPrefix(role grants.Role, stream string) string {
	if !w.accounts {
		return grants.DefaultAPIPrefix
	}
	return grants.APIPrefix(role, stream)
}

// owner is the role whose connection writes stream st's subjects for the
// test (seeds, barriers): its writer's account, or the admin.
func (w *injectWorld) owner(st string) grants.Role {
	if !w.accounts {
		return grants.Provision
	}
	for _, r := range []grants.Role{grants.Holder, grants.Worker, grants.Gateway} {
		if r.Account() == grants.StreamAccount(st) {
			return r
		}
	}
	return grants.Provision
}

// protected reports whether stream st is outside the attacker's account.
func (w *injectWorld) protected(st string) bool {
	return grants.StreamAccount(st) != w.attacker.Account()
}

// provision creates every stream, bucket and durable as the admin, each
// in its account.
func (w *injectWorld) provision() {
	v := w.views[grants.Provision]
	for _, sc := range w.topo.StreamConfigs() {
		if _, err := v.For(sc.Name).CreateOrUpdateStream(w.ctx, sc); err != nil {
			w.t.Fatalf("provision %s: %v", sc.Name, err)
		}
	}
	for _, kc := range w.topo.BucketConfigs() {
		if _, err := v.Bucket(kc.Bucket).CreateOrUpdateKeyValue(w.ctx, kc); err != nil {
			w.t.Fatalf("provision %s: %v", kc.Bucket, err)
		}
	}
	for _, cc := range w.topo.ConsumerConfigs() {
		if _, err := v.For(events.StreamJobs).CreateOrUpdateConsumer(w.ctx, events.StreamJobs, cc); err != nil {
			w.t.Fatalf("provision %s: %v", cc.Durable, err)
		}
	}
}

// The holder's token record, which no other role may change.
const injectToken = `{"appid":"` + testApp + `","access_token":"REAL-TOKEN","version":1}`

// seed puts messages in every empty stream (so a purge or a delete
// shows), the token record, and the jobs the pulls take. The seeds that
// subscribers hear (the token event, and the result and dead letter
// through their streams' republish) carry the nonce (injectNonceHdr).
func (w *injectWorld) seed() {
	ctx, t := w.ctx, w.t
	pub := func(role grants.Role, subject string, body []byte, id string, heard bool) {
		t.Helper()
		m := nats.NewMsg(subject)
		m.Data = body
		if heard {
			m.Header.Set(injectNonceHdr, w.nonce)
		}
		if id != "" {
			m.Header.Set(jetstream.MsgIDHeader, id)
		}
		js := w.views[role]
		if role == grants.Client {
			js = w.jetStreams(w.conns[grants.Client])
		}
		if _, err := js.Local().PublishMsg(ctx, m); err != nil {
			t.Fatalf("seed %s as %s: %v", subject, role, err)
		}
	}
	state := func(st string) *jetstream.StreamState {
		info, err := w.adminJS(st).Stream(ctx, st)
		if err != nil {
			t.Fatalf("seed: %s: %v", st, err)
		}
		return &info.CachedInfo().State
	}
	for _, b := range grants.Buckets {
		st := grants.KVStream(b.Name)
		if b.Name == events.BucketTokens {
			kv, err := w.views[w.owner(st)].Bucket(b.Name).KeyValue(ctx, b.Name)
			if err != nil {
				t.Fatal(err)
			}
			if e, err := kv.Get(ctx, testApp); err != nil || string(e.Value()) != injectToken {
				if _, err := kv.Put(ctx, testApp, []byte(injectToken)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if state(st).Msgs < 2 {
			for i := range 2 {
				pub(w.owner(st), fmt.Sprintf("$KV.%s.seed%d", b.Name, i), []byte(`{"seed":true}`), "", false)
			}
		}
	}
	s := events.NewSubjects("")
	if state(events.StreamResults).Msgs == 0 {
		pub(w.owner(events.StreamResults), s.StoredUserProfile, []byte(`{"job_id":"seed-result"}`), w.nonce+"-r", true)
	}
	if state(events.StreamDeadLetters).Msgs == 0 {
		pub(w.owner(events.StreamDeadLetters), s.StoredDeadLetter(s.UserLookup), []byte(`{"job_id":"seed-dl"}`), w.nonce+"-d", true)
	}
	if state(events.StreamTokenEvents).Msgs == 0 {
		pub(w.owner(events.StreamTokenEvents), w.barrier[events.StreamTokenEvents], []byte(`{"appid":"`+testApp+`","version":1}`), "", true)
	}
	// Jobs: one on each job subject at least, and enough on the pulled
	// durables for every pull still to come.
	for _, c := range grants.Consumers {
		cc, err := w.adminJS(events.StreamJobs).Consumer(ctx, events.StreamJobs, c.Durable)
		if err != nil {
			t.Fatal(err)
		}
		info := cc.CachedInfo()
		want := max(w.jobs[c.Durable], 1)
		if c.Durable == grants.Consumers[len(grants.Consumers)-1].Durable && slices.Contains(c.Pull, w.attacker) {
			want = 0 // the empty durable
		}
		for i := int(info.NumPending); i < want; i++ {
			w.keys++
			id := fmt.Sprintf("seed-job-%s-%d", w.nonce, w.keys)
			pub(grants.Client, info.Config.FilterSubject, []byte(`{"job_id":"`+id+`","appid":"`+testApp+`","openid":"o-seed"}`), id, false)
		}
	}
}

// subscribeVerifiers subscribes, as every other role, to every subject
// that role may subscribe to and the attacker may not publish: any
// message there (but the test's own) is a forgery.
func (w *injectWorld) subscribeVerifiers() {
	for _, r := range []grants.Role{grants.Holder, grants.Worker, grants.Gateway, grants.Client, grants.Provision} {
		if r == w.attacker {
			continue
		}
		var subjects []string
		if p := grants.For(r, ""); !p.Admin {
			subjects = p.Subscribe
		}
		for _, s := range grants.Subjects {
			if slices.Contains(s.Subscribe, r) && !slices.Contains(subjects, s.Name) {
				subjects = append(subjects, s.Name)
			}
		}
		u := w.conns[r]
		for _, s := range subjects {
			if s == r.InboxPrefix()+".>" || mayPublish(w.attacker, example(s)) {
				continue
			}
			sub, err := u.nc.SubscribeSync(s)
			if err != nil {
				w.t.Fatal(err)
			}
			w.verifs = append(w.verifs, &verifier{role: r, conn: u, sub: sub})
		}
		if err := u.nc.Flush(); err != nil {
			w.t.Fatal(err)
		}
	}
	if len(w.verifs) == 0 {
		w.t.Fatal("no subscriber to watch")
	}
}

// heard returns what the verifiers received, but the test's own messages.
// A flush of each verifier's connection first: the server queues a PONG
// behind every message it queued for that connection before, so once
// Flush returns every message the attack caused is in the subscription.
func (w *injectWorld) heard() []string {
	var out []string
	flushed := map[*user]bool{}
	for _, v := range w.verifs {
		if !flushed[v.conn] {
			if err := v.conn.nc.Flush(); err != nil {
				w.t.Fatal(err)
			}
			flushed[v.conn] = true
		}
		for {
			n, _, _ := v.sub.Pending()
			if n == 0 {
				break
			}
			m, err := v.sub.NextMsg(time.Second)
			if err != nil {
				w.t.Fatal(err)
			}
			if m.Header.Get(injectNonceHdr) == w.nonce {
				continue
			}
			// A push delivery comes with its stored subject.
			out = append(out, fmt.Sprintf("%s subscriber of %s received %q on %s (headers %v)", v.role, v.sub.Subject, truncate(m.Data), m.Subject, m.Header))
		}
	}
	return out
}

func truncate(b []byte) string {
	if len(b) > 160 {
		return string(b[:160]) + "..."
	}
	return string(b)
}

// injectSnap is what the admin sees outside the attacker's account.
type injectSnap map[string]string

// snapshot reads, as the admin, every stream outside the attacker's
// account (configuration, message count, first and last sequence, the
// durables' configurations, the token record), and from the server's
// own books every stream and consumer of every account but the
// attacker's (so a stream EVIL anywhere shows).
func (w *injectWorld) snapshot() injectSnap {
	ctx, out := w.ctx, injectSnap{}
	for _, st := range w.streams {
		if !w.protected(st) {
			continue
		}
		info, err := w.adminJS(st).Stream(ctx, st)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			out["stream "+st] = "MISSING"
			continue
		}
		if err != nil {
			w.t.Fatalf("admin: stream %s: %v", st, err)
		}
		c := info.CachedInfo()
		// Less what the attacker stored there by right (family D').
		out["stream "+st] = fmt.Sprintf("config %s; msgs %d, first seq %d, last seq %d, deleted %d",
			mustJSON(c.Config), c.State.Msgs-w.legit[st], c.State.FirstSeq, c.State.LastSeq-w.legit[st], c.State.NumDeleted)
	}
	if w.protected(events.StreamJobs) {
		for _, c := range grants.Consumers {
			cons, err := w.adminJS(c.Stream).Consumer(ctx, c.Stream, c.Durable)
			if err != nil {
				out["durable "+c.Durable] = "MISSING: " + err.Error()
				continue
			}
			out["durable "+c.Durable] = string(mustJSON(cons.CachedInfo().Config))
		}
	}
	if tokens := grants.KVStream(events.BucketTokens); w.protected(tokens) {
		kv, err := w.adminJS(tokens).KeyValue(ctx, events.BucketTokens)
		if err == nil {
			var e jetstream.KeyValueEntry
			if e, err = kv.Get(ctx, testApp); err == nil {
				out["token record"] = fmt.Sprintf("%s (revision %d)", e.Value(), e.Revision())
			}
		}
		if err != nil {
			out["token record"] = "UNREADABLE: " + err.Error()
		}
	}
	jsz, err := w.s.Jsz(&server.JSzOptions{Accounts: true, Streams: true, Consumer: true})
	if err != nil {
		w.t.Fatal(err)
	}
	for _, acc := range jsz.AccountDetails {
		for _, sd := range acc.Streams {
			if w.accounts && acc.Name == w.attacker.Account() || slices.Contains(w.streams, sd.Name) && !w.protected(sd.Name) {
				continue // the attacker's own
			}
			out["in account "+acc.Name+": stream "+sd.Name] = "exists"
			for _, ci := range sd.Consumer {
				out["in account "+acc.Name+": consumer "+sd.Name+"/"+ci.Name] = "exists"
			}
		}
	}
	return out
}

// diff lists what changed from before to after.
func (before injectSnap) diff(after injectSnap) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if b, ok := before[k]; !ok {
			out = append(out, fmt.Sprintf("%s: NEW (%s)", k, after[k]))
		} else if b != after[k] {
			out = append(out, fmt.Sprintf("%s CHANGED:\n\tbefore %s\n\tafter  %s", k, b, after[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if _, ok := after[k]; !ok {
			out = append(out, k+": GONE")
		}
	}
	return out
}

// waitAPIIdle waits until the server runs no JetStream API request. The
// server counts a request as in flight from the moment it is dispatched
// (in the publishing client's path) until its handler returns; only this
// test's connections use this server, one request at a time.
func (w *injectWorld) waitAPIIdle() {
	wxhubtest.Eventually(w.t, 20*time.Second, "the JetStream API to be idle", func() bool {
		jsz, err := w.s.Jsz(nil)
		return err == nil && jsz.API.Inflight == 0
	})
}

// settle waits until every effect the attacks fired so far could have
// has happened; each volley's own settles ran first, so that every
// message the server published for the attacker has been published:
//   - its JetStream API calls were dispatched then: wait until none runs;
//   - the streams it reached queued it for storing: a message through each
//     stream's inbound queue that the stream refuses (wrong
//     Nats-Expected-Stream) is answered only after everything queued
//     before it was stored, and the answer leaves by the stream's send
//     queue after every republish of those;
//   - the API's answers leave by the server's one internal send queue,
//     in order, after the call was dispatched: the answer to a call made
//     once the API is idle comes after every answer queued before it;
//   - subscribers: heard() flushes each connection.
func (w *injectWorld) settle() {
	w.waitAPIIdle()
	for _, st := range w.streams {
		if !w.protected(st) {
			continue
		}
		w.barrierThrough(st)
	}
	w.waitAPIIdle()
	if _, err := w.adminJS(w.streams[0]).AccountInfo(w.ctx); err != nil {
		w.t.Fatalf("an API call behind the attacks' answers: %v", err)
	}
}

// barrierThrough sends a message through stream st's inbound queue that
// the stream refuses, and waits for the refusal, which leaves by st's
// send queue after everything queued there before. A stream that is gone
// is skipped (the diff says so).
func (w *injectWorld) barrierThrough(st string) {
	if _, err := w.adminJS(st).Stream(w.ctx, st); errors.Is(err, jetstream.ErrStreamNotFound) {
		return
	}
	m := nats.NewMsg(w.barrier[st])
	m.Header.Set("Nats-Expected-Stream", "WX_INJECT_BARRIER")
	m.Header.Set(injectNonceHdr, w.nonce)
	r, err := w.conns[w.owner(st)].nc.RequestMsg(m, 10*time.Second)
	if err != nil {
		w.t.Fatalf("barrier through %s: %v", st, err)
	}
	if !strings.Contains(string(r.Data), `"err_code":10060`) {
		w.t.Fatalf("barrier through %s: answered %s, want the stream mismatch", st, r.Data)
	}
}

// shot is one attack: fire sends it; the settle it returns waits until
// the server has sent every message the attack makes it send (each
// family knows which of its queues to follow).
type shot struct {
	name string
	fire func() (settle func(), err error)
}

// volley is a family's shots on every target.
type volley struct {
	name   string
	shots  []shot
	before func()    // before the shots (and before the snapshot)
	after  func(int) // after the shots' settles, with their number
}

// run fires the volley, settles it and compares. When something changed
// it restores the world and fires the shots one at a time, to name each
// one that succeeds.
func (w *injectWorld) run(v volley) {
	parent := w.t
	defer func() { w.t = parent }()
	parent.Run(fmt.Sprintf("%s, %d shots", v.name, len(v.shots)), func(t *testing.T) {
		w.t = t
		changed := w.fire(v, v.shots)
		if len(changed) == 0 {
			return
		}
		if len(v.shots) == 1 {
			t.Errorf("%s (%d change(s)):\n%s", v.shots[0].name, len(changed), strings.Join(changed, "\n"))
			w.restore()
			return
		}
		w.restore()
		named := 0
		for _, s := range v.shots {
			if c := w.fire(v, []shot{s}); len(c) > 0 {
				named++
				t.Errorf("%s (%d change(s)):\n%s", s.name, len(c), strings.Join(c, "\n"))
				w.restore()
			}
		}
		if named == 0 {
			t.Errorf("the volley changed, but no single shot did:\n%s", strings.Join(changed, "\n"))
		}
	})
}

func (w *injectWorld) fire(v volley, shots []shot) []string {
	if v.before != nil {
		v.before()
	}
	w.settle()
	_ = w.heard() // the test's own messages so far
	for len(w.atk.errs) > 0 {
		w.t.Errorf("%s: an error no shot expected: %v", w.attacker, <-w.atk.errs)
	}
	base := w.snapshot()
	var probed func()
	if w.probe != nil {
		probed = w.probe(v)
	}
	var settles []func()
	for _, s := range shots {
		settle, err := s.fire()
		if err != nil {
			// Every shot is a request the attacker's grant allows, with
			// only its reply or deliver subject aimed elsewhere: one the
			// server refuses never reached its target and proves
			// nothing. A grant that changed must change the shots too.
			w.t.Errorf("%s: refused, so it attacked nothing: %v", s.name, err)
			continue
		}
		if settle != nil {
			settles = append(settles, settle)
		}
	}
	for _, s := range settles {
		s()
	}
	if v.after != nil {
		v.after(len(shots))
	}
	if probed != nil {
		probed()
	}
	w.settle()
	changed := append(w.heard(), base.diff(w.snapshot())...)
	w.cleanOwn()
	return changed
}

// cleanOwn deletes what the attacks left in the attacker's own account
// (streams and consumers the test did not provision: its own business,
// but a stream left there could shadow the next attacks).
func (w *injectWorld) cleanOwn() {
	if !w.accounts {
		return
	}
	w.deleteExtras(func(acc string) bool { return acc == w.attacker.Account() })
}

// deleteExtras deletes every stream that is not provisioned and every
// consumer that is not a durable, in the accounts that match.
func (w *injectWorld) deleteExtras(match func(acc string) bool) {
	jsz, err := w.s.Jsz(&server.JSzOptions{Accounts: true, Streams: true, Consumer: true})
	if err != nil {
		w.t.Fatal(err)
	}
	durables := map[string]bool{}
	for _, c := range grants.Consumers {
		durables[c.Durable] = true
	}
	for _, acc := range jsz.AccountDetails {
		if !match(acc.Name) {
			continue
		}
		js := w.adminAccount(acc.Name)
		for _, sd := range acc.Streams {
			if !slices.Contains(w.streams, sd.Name) {
				if err := js.DeleteStream(w.ctx, sd.Name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
					w.t.Fatalf("delete %s in %s: %v", sd.Name, acc.Name, err)
				}
				continue
			}
			for _, ci := range sd.Consumer {
				if !durables[ci.Name] {
					if err := js.DeleteConsumer(w.ctx, sd.Name, ci.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
						w.t.Fatalf("delete consumer %s/%s in %s: %v", sd.Name, ci.Name, acc.Name, err)
					}
				}
			}
		}
	}
}

// adminAccount is the admin's JetStream handle on account acc.
func (w *injectWorld) adminAccount(acc string) jetstream.JetStream {
	if !w.accounts || acc == grants.Provision.Account() {
		return w.admin.js
	}
	js, err := jetstream.NewWithAPIPrefix(w.admin.nc, "$JS."+acc+".API")
	if err != nil {
		w.t.Fatal(err)
	}
	return js
}

// restore undoes what an attack that succeeded did: extra streams and
// consumers go, every stream, bucket and durable is provisioned again,
// the seeds and the token record are put back.
func (w *injectWorld) restore() {
	w.settle()
	w.deleteExtras(func(string) bool { return true })
	w.provision()
	w.seed()
	w.settle()
	_ = w.heard()
}

// nextKey is a fresh key for a plant.
func (w *injectWorld) nextKey() string {
	w.keys++
	return fmt.Sprintf("inj%d", w.keys)
}

// serverRefuses reports whether the server refuses subject as the reply
// subject of a client's publish and as a consumer's deliver subject:
// since nats-server 2.15.3 every "$JS." subject is reserved, so that no
// answer or delivery issues a JetStream request for the requester. The
// publish is dropped (the client gets a permissions violation, see
// refused); a consumer create is answered with error 10112.
func serverRefuses(subject string) bool { return strings.HasPrefix(subject, "$JS.") }

// refused waits until the server has told the attacker that it dropped
// its publish with reply (serverRefuses): nothing was stored, nothing
// answered. Violations arrive in the order of the publishes, and each
// shot's settle runs in that order; any other error is reported.
func (w *injectWorld) refused(reply string) {
	w.t.Helper()
	want := fmt.Sprintf("Permissions Violation for Publish with Reply of %q", reply)
	wxhubtest.Eventually(w.t, 10*time.Second, "the server's refusal of reply "+reply, func() bool {
		for {
			select {
			case err := <-w.atk.errs:
				if strings.Contains(err.Error(), want) {
					return true
				}
				w.t.Errorf("%s: waiting for the refusal of %s: %v", w.attacker, reply, err)
			default:
				return false
			}
		}
	})
}

// subjectMatches reports whether NATS subject pattern matches subject.
func subjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || tok != "*" && tok != s[i] {
			return false
		}
	}
	return len(p) == len(s)
}

// mayPublish reports whether role's grant lets it publish to subject: a
// forgery there through the server is no more than it may do itself.
func mayPublish(role grants.Role, subject string) bool {
	p := grants.For(role, "")
	if p.Admin {
		return true
	}
	return slices.ContainsFunc(p.Publish, func(pat string) bool { return subjectMatches(pat, subject) })
}

// target is a subject the attacker must not make the server publish on,
// and the bytes a plant for it holds.
type target struct {
	subject string
	body    []byte
}

// forgedResult is a plant for a wxhub subject: it passes for a result, a
// job, a token record and a token event.
var forgedResult = []byte(`{"job_id":"forged","appid":"` + testApp + `","openid":"o-forged","nickname":"FORGED","access_token":"FORGED","version":999999}`)

// targets lists every target of the attacker: every JetStream API call
// on every stream outside its account (under $JS.API, and under the
// prefix the stream's account is imported by), every subject of another
// account's buckets, every wxhub subject, the workers' max-deliveries
// advisories; less what the attacker may publish itself.
func (w *injectWorld) targets() []target {
	var out []target
	add := func(subject string, body []byte) {
		if !mayPublish(w.attacker, subject) && !slices.ContainsFunc(out, func(t target) bool { return t.subject == subject && string(t.body) == string(body) }) {
			out = append(out, target{subject, body})
		}
	}
	var plant string // a bucket the attacker writes (for a source)
	for _, b := range grants.Buckets {
		if slices.Contains(b.Write, w.attacker) {
			plant = b.Name
			break
		}
	}
	for _, st := range w.streams {
		if !w.protected(st) {
			continue
		}
		prefixes := []string{grants.DefaultAPIPrefix}
		if w.accounts {
			prefixes = append(prefixes, "$JS."+grants.StreamAccount(st)+".API")
		}
		var cfg jetstream.StreamConfig
		if err := json.Unmarshal(w.configs[st], &cfg); err != nil {
			w.t.Fatal(err)
		}
		for _, p := range prefixes {
			c := cfg
			c.MaxMsgs = 1
			add(p+".STREAM.UPDATE."+st, mustJSON(c))
			c = cfg
			src := cfg.Subjects[0]
			if b, ok := strings.CutPrefix(st, "KV_"); ok {
				src = "$KV." + b + ".>"
			}
			c.RePublish = &jetstream.RePublish{Source: src, Destination: events.SubjectUserProfile}
			add(p+".STREAM.UPDATE."+st, mustJSON(c))
			if st == grants.KVStream(events.BucketTokens) && plant != "" {
				c = cfg
				c.Sources = []*jetstream.StreamSource{{Name: grants.KVStream(plant), SubjectTransforms: []jetstream.SubjectTransformConfig{
					{Source: "$KV." + plant + ".*", Destination: "$KV." + events.BucketTokens + ".{{wildcard(1)}}"}}}}
				add(p+".STREAM.UPDATE."+st, mustJSON(c))
			}
			add(p+".STREAM.PURGE."+st, []byte(`{}`))
			add(p+".STREAM.DELETE."+st, nil)
			add(p+".STREAM.MSG.DELETE."+st, []byte(`{"seq":1}`))
			thief := map[string]any{"stream_name": st, "config": jetstream.ConsumerConfig{Durable: "thief", DeliverSubject: events.SubjectUserProfile, AckPolicy: jetstream.AckNonePolicy}}
			add(p+".CONSUMER.CREATE."+st+".thief", mustJSON(thief))
			add(p+".CONSUMER.DURABLE.CREATE."+st+".thief", mustJSON(thief))
			add(p+".STREAM.CREATE.EVIL", mustJSON(jetstream.StreamConfig{Name: "EVIL", Mirror: &jetstream.StreamSource{Name: st}}))
			add(p+".STREAM.CREATE.EVIL", mustJSON(jetstream.StreamConfig{Name: "EVIL", Subjects: []string{example(cfg.Subjects[0]) + ".evil", src}}))
			if st == events.StreamJobs {
				for _, c := range grants.Consumers {
					add(p+".CONSUMER.DELETE."+st+"."+c.Durable, nil)
				}
			}
		}
	}
	for _, b := range grants.Buckets {
		if !w.protected(grants.KVStream(b.Name)) {
			continue
		}
		if b.Name == events.BucketTokens {
			add("$KV."+b.Name+"."+testApp, []byte(`{"appid":"`+testApp+`","access_token":"FORGED","version":999999}`))
		} else {
			add("$KV."+b.Name+".forged", forgedResult)
		}
	}
	for _, s := range grants.Subjects {
		add(example(s.Name), forgedResult)
	}
	for _, c := range grants.Consumers {
		add("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."+c.Stream+"."+c.Durable,
			mustJSON(map[string]any{"type": "io.nats.jetstream.advisory.v1.max_deliver", "stream": c.Stream, "consumer": c.Durable, "stream_seq": 1, "deliveries": 5}))
	}
	return out
}

// volleys builds every family's volleys for the attacker, aimed at tgs.
func (w *injectWorld) volleys(tgs []target) []volley {
	a := w.attacker
	var out []volley
	var writes, reads, watches []string
	for _, b := range grants.Buckets {
		switch {
		case slices.Contains(b.Write, a):
			writes = append(writes, b.Name)
		case slices.Contains(b.Read, a) || slices.Contains(b.Watch, a):
			reads = append(reads, b.Name)
		}
		if slices.Contains(b.Watch, a) {
			watches = append(watches, b.Name)
		}
	}
	// A: plants in every bucket the role writes, reflected by a direct get.
	for _, b := range writes {
		v := volley{name: "A direct get of a plant in " + b}
		for _, tg := range tgs {
			v.shots = append(v.shots, w.reflect(b, tg, true))
		}
		out = append(out, v)
	}
	// A0: a direct get of a missing key: an empty 404 status.
	if len(writes)+len(reads) > 0 {
		b := append(writes, reads...)[0]
		v := volley{name: "A0 direct get of a missing key of " + b}
		for _, tg := range tgs {
			v.shots = append(v.shots, w.reflect(b, target{subject: tg.subject}, false))
		}
		out = append(out, v)
	}
	// A': a record of a bucket the role only reads (the token record).
	for _, b := range reads {
		v := volley{name: "A' direct get of a record of " + b}
		key := "seed0"
		if b == events.BucketTokens {
			key = testApp
		}
		for _, tg := range tgs {
			v.shots = append(v.shots, w.reflectKey(b, key, tg.subject))
		}
		out = append(out, v)
	}
	// B: the JSON answers of the API requests the role may make.
	for _, req := range w.apiRequests() {
		v := volley{name: "B answer of " + req.subject}
		for _, tg := range tgs {
			v.shots = append(v.shots, w.answer(req, tg.subject))
		}
		out = append(out, v)
	}
	// C: KV watches delivering to the target.
	for _, b := range watches {
		v := volley{name: "C watch of " + b}
		for _, tg := range tgs {
			v.shots = append(v.shots, w.watch(b, slices.Contains(writes, b), tg))
		}
		out = append(out, v)
	}
	// C: pulls answered on the target.
	for _, c := range grants.Consumers {
		if slices.Contains(c.Pull, a) {
			out = append(out, w.pulls(c, tgs))
		}
	}
	// E: the role's own streams made to republish outside its account.
	if len(writes) > 0 {
		v := volley{name: "E own streams republishing elsewhere"}
		for _, st := range w.streams {
			trigger := w.trigger(st)
			if w.protected(st) || trigger == "" {
				continue
			}
			for _, tg := range tgs {
				if !strings.HasPrefix(tg.subject, "$JS.") {
					v.shots = append(v.shots, w.republish(writes[0], st, trigger, tg.subject))
				}
			}
		}
		out = append(out, v)
	}
	// D: PubAcks.
	if len(writes) > 0 {
		v := volley{name: "D PubAck of a put in " + writes[0]}
		for _, tg := range tgs {
			v.shots = append(v.shots, w.pubAck(writes[0], tg.subject))
		}
		out = append(out, v)
	}
	// D': PubAcks of what the role may store in a stream of another
	// account (jobs, token.invalidated, the worker's results and dead
	// letters).
	for _, sub := range grants.Subjects {
		subject := example(sub.Name)
		if !slices.Contains(sub.Publish, a) {
			continue
		}
		for _, st := range w.streams {
			var cfg jetstream.StreamConfig
			if err := json.Unmarshal(w.configs[st], &cfg); err != nil {
				w.t.Fatal(err)
			}
			if !w.protected(st) || !slices.ContainsFunc(cfg.Subjects, func(p string) bool { return subjectMatches(p, subject) }) {
				continue
			}
			v := volley{name: "D' PubAck of a publish to " + subject}
			for _, tg := range tgs {
				v.shots = append(v.shots, w.pubAckOf(st, subject, tg.subject))
			}
			out = append(out, v)
		}
	}
	return out
}

// reflect plants tg.body in bucket b (when plant) and has the server
// publish it on tg.subject through a direct get. The settle is the same
// direct get with the attacker's own inbox: the server reads one
// connection's messages in order and answers direct gets in that path,
// so both answers are queued in order on the bucket stream's one send
// queue, and the send loop has published the attack (to subscribers,
// streams' inbound queues and the JetStream API queue, all in the
// publishing path) before the sentinel's answer.
func (w *injectWorld) reflect(b string, tg target, plant bool) shot {
	key := w.nextKey()
	name := fmt.Sprintf("%s: direct get of %s/%s (%d bytes planted) with reply %s", w.attacker, b, key, len(tg.body), tg.subject)
	if !plant {
		name = fmt.Sprintf("%s: direct get of the missing %s/%s with reply %s", w.attacker, b, key, tg.subject)
	}
	return shot{name: name, fire: func() (func(), error) {
		if plant {
			m := nats.NewMsg("$KV." + b + "." + key)
			m.Data = tg.body
			m.Header.Set(forgedHdr, "1")
			if _, err := w.atkJS.Bucket(b).PublishMsg(w.ctx, m); err != nil {
				w.t.Fatalf("plant %s/%s: %v", b, key, err)
			}
		}
		return w.directGet(b, key, tg.subject, plant)
	}}
}

// reflectKey has the server publish bucket b's record key on subject.
func (w *injectWorld) reflectKey(b, key, subject string) shot {
	return shot{name: fmt.Sprintf("%s: direct get of %s/%s with reply %s", w.attacker, b, key, subject), fire: func() (func(), error) {
		return w.directGet(b, key, subject, true)
	}}
}

func (w *injectWorld) directGet(b, key, reply string, found bool) (func(), error) {
	st := grants.KVStream(b)
	subj := w.apiPrefix(w.attacker, st) + ".DIRECT.GET." + st + ".$KV." + b + "." + key
	if err := w.atk.nc.PublishRequest(subj, reply, nil); err != nil {
		return nil, err
	}
	return func() {
		if serverRefuses(reply) {
			w.refused(reply)
		}
		m, err := w.atk.nc.Request(subj, nil, 10*time.Second)
		if err != nil {
			w.t.Fatalf("sentinel %s: %v", subj, err)
		}
		if st := m.Header.Get("Status"); found && st != "" || !found && st != "404" {
			w.t.Fatalf("sentinel %s: status %q", subj, st)
		}
	}, nil
}

// apiRequest is a JetStream API request the attacker may make.
type apiRequest struct {
	subject string
	body    []byte
}

// apiRequests lists, of the request/answer calls in the attacker's grant
// (stream info, message get, consumer info, message delete), one of each
// kind in its own account and one in another.
func (w *injectWorld) apiRequests() []apiRequest {
	var out []apiRequest
	seen := map[string]bool{}
	for _, s := range grants.For(w.attacker, "").Publish {
		if !strings.HasPrefix(s, "$JS.") || strings.ContainsAny(s, "*>") {
			continue
		}
		api, ok := strings.CutPrefix(s, grants.DefaultAPIPrefix+".")
		where := "own"
		if !ok {
			_, rest, found := strings.Cut(strings.TrimPrefix(s, "$JS."), ".API.")
			if !found {
				continue
			}
			api, where = rest, "other"
		}
		var kind string
		var body []byte
		switch {
		case strings.HasPrefix(api, "STREAM.INFO."):
			kind = "info"
		case strings.HasPrefix(api, "STREAM.MSG.GET."):
			kind, body = "msg get", []byte(`{"seq":1}`)
		case strings.HasPrefix(api, "CONSUMER.INFO."):
			kind = "consumer info"
		case strings.HasPrefix(api, "STREAM.MSG.DELETE."):
			kind, body = "msg delete", []byte(`{"seq":999999999}`)
		default:
			continue
		}
		if !seen[kind+where] {
			seen[kind+where] = true
			out = append(out, apiRequest{s, body})
		}
	}
	return out
}

// answer sends req with reply subject. The settle waits until no API
// request runs (the attack's handler has queued its answer on the
// server's one internal send queue) and then makes the same request with
// the attacker's own inbox: its answer leaves the same queue after the
// attack's.
func (w *injectWorld) answer(req apiRequest, subject string) shot {
	return shot{name: fmt.Sprintf("%s: %s with reply %s", w.attacker, req.subject, subject), fire: func() (func(), error) {
		if err := w.atk.nc.PublishRequest(req.subject, subject, req.body); err != nil {
			return nil, err
		}
		return func() {
			if serverRefuses(subject) {
				w.refused(subject)
			}
			w.waitAPIIdle()
			if _, err := w.atk.nc.Request(req.subject, req.body, 10*time.Second); err != nil {
				w.t.Fatalf("sentinel %s: %v", req.subject, err)
			}
		}, nil
	}}
}

// watch creates a KV watch of bucket b (the consumer the role's grant
// allows) that delivers to tg.subject, from a plant of tg.body when the
// role writes b, else from the bucket's first record. The settle waits
// (the admin reads the consumer) until the consumer has delivered every
// message from there, or has no interest to deliver to, deletes it, and
// then follows with a direct get on the same stream: deliveries and
// direct get answers leave by the stream's one send queue, in order.
func (w *injectWorld) watch(b string, plant bool, tg target) shot {
	st := grants.KVStream(b)
	name := w.nextKey()
	return shot{name: fmt.Sprintf("%s: watch %s of %s delivering to %s", w.attacker, name, b, tg.subject), fire: func() (func(), error) {
		start := uint64(1)
		if plant {
			m := nats.NewMsg("$KV." + b + "." + name)
			m.Data = tg.body
			m.Header.Set(forgedHdr, "1")
			ack, err := w.atkJS.Bucket(b).PublishMsg(w.ctx, m)
			if err != nil {
				w.t.Fatalf("plant %s/%s: %v", b, name, err)
			}
			start = ack.Sequence
		}
		p := w.apiPrefix(w.attacker, st)
		req := map[string]any{"stream_name": st, "config": jetstream.ConsumerConfig{
			Name: name, DeliverSubject: tg.subject, FilterSubject: "$KV." + b + ".>", AckPolicy: jetstream.AckNonePolicy,
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start, InactiveThreshold: time.Minute,
		}}
		r, err := w.atk.nc.Request(p+".CONSUMER.CREATE."+st+"."+name+".$KV."+b+".>", mustJSON(req), 10*time.Second)
		if err != nil {
			return nil, err
		}
		if serverRefuses(tg.subject) {
			if e := apiError(r); !strings.Contains(e, "invalid push consumer deliver subject") {
				w.t.Errorf("watch %s delivering to %s: answered %q, want the server's refusal (10112)", name, tg.subject, e)
			}
			return nil, nil
		}
		if e := apiError(r); e != "" {
			return nil, errors.New(e)
		}
		return func() {
			var last uint64
			wxhubtest.Eventually(w.t, 20*time.Second, "watch "+name+" to deliver", func() bool {
				info := w.consumerInfo(st, name)
				if info == nil {
					return true // gone: it delivers nothing more
				}
				last = info.Delivered.Stream
				return !info.PushBound || info.NumPending == 0 && info.Delivered.Stream >= start
			})
			if r, err := w.atk.nc.Request(p+".CONSUMER.DELETE."+st+"."+name, nil, 10*time.Second); err != nil || apiError(r) != "" && w.consumerInfo(st, name) != nil {
				w.t.Fatalf("delete watch %s: %v %s", name, err, apiError(r))
			}
			if _, err := w.atk.nc.Request(p+".DIRECT.GET."+st+".$KV."+b+".seed0", nil, 10*time.Second); err != nil {
				w.t.Fatalf("sentinel after watch %s (delivered to %d): %v", name, last, err)
			}
		}, nil
	}}
}

// pulls asks durable c for the next job with the reply subject of each
// target (c has a job for each, or, for the durable left empty, none: a
// 404 status answers). The server queues pull requests and serves them
// in order in the consumer's loop, so the volley is settled by a last
// pull with the attacker's own inbox: once it is answered every pull
// before it was answered or is waiting; then the admin waits until none
// is waiting (a delivery is queued on WX_JOBS' send queue before it is
// counted), and a barrier follows through that queue.
func (w *injectWorld) pulls(c grants.Consumer, tgs []target) volley {
	subj := w.apiPrefix(w.attacker, c.Stream) + ".CONSUMER.MSG.NEXT." + c.Stream + "." + c.Durable
	body := []byte(`{"batch":1,"no_wait":true}`)
	v := volley{name: "C pull of " + c.Durable}
	if w.jobs[c.Durable] > 0 {
		v.name += " (jobs waiting)"
	} else {
		v.name += " (no job: 404 status)"
	}
	v.before = func() { w.seed() }
	v.after = func(int) {
		if _, err := w.atk.nc.Request(subj, body, 10*time.Second); err != nil && w.consumerInfo(c.Stream, c.Durable) != nil {
			w.t.Fatalf("sentinel pull of %s: %v", c.Durable, err)
		}
		wxhubtest.Eventually(w.t, 20*time.Second, "no pull of "+c.Durable+" waiting", func() bool {
			info := w.consumerInfo(c.Stream, c.Durable)
			return info == nil || info.NumWaiting == 0 // gone: the diff tells
		})
		w.barrierThrough(c.Stream)
	}
	for _, tg := range tgs {
		v.shots = append(v.shots, shot{name: fmt.Sprintf("%s: pull of %s with reply %s", w.attacker, c.Durable, tg.subject), fire: func() (func(), error) {
			if err := w.atk.nc.PublishRequest(subj, tg.subject, body); err != nil || !serverRefuses(tg.subject) {
				return nil, err
			}
			return func() { w.refused(tg.subject) }, nil
		}})
	}
	return v
}

// pubAck puts a value in bucket b with the reply subject: the stream
// sends its PubAck there. The settle is a second put on the same
// connection: its PubAck leaves the stream's send queue after.
func (w *injectWorld) pubAck(b, subject string) shot {
	key := w.nextKey()
	return shot{name: fmt.Sprintf("%s: put %s/%s with reply %s", w.attacker, b, key, subject), fire: func() (func(), error) {
		m := nats.NewMsg("$KV." + b + "." + key)
		m.Reply = subject
		m.Data = []byte(`{}`)
		if err := w.atk.nc.PublishMsg(m); err != nil {
			return nil, err
		}
		return func() {
			if serverRefuses(subject) {
				w.refused(subject)
			}
			if _, err := w.atkJS.Bucket(b).Publish(w.ctx, "$KV."+b+"."+key, []byte(`{}`)); err != nil {
				w.t.Fatalf("sentinel put %s/%s: %v", b, key, err)
			}
		}, nil
	}}
}

// TestServerRepliesThroughAWiderImportAreCaught is the positive control
// of TestServerRepliesStayInTheAttackersAccount. It widens the shipped
// layout by one service import the worker's grant does not name (so the
// worker may not publish there itself), aims the worker's volleys of
// each kind (families A to E, each with its own settle) at that one
// target, and checks that each attack then finds the door and that the
// detectors see it: a forged token record or a purge of WX_JOBS in the
// admin's diff, a message on user.profile at the other roles'
// subscribers; and, for user.profile, that the server had sent it by the
// time the volley's own settles returned (sentTo). A reply subject is not
// permission-checked, so an import reaches as far as the server's
// answers, not as far as the grant.
func TestServerRepliesThroughAWiderImportAreCaught(t *testing.T) {
	t.Parallel()
	every := []string{"A direct", "A0 direct", "A' direct", "B answer", "C watch", "C pull", "D PubAck", "D' PubAck", "E own"}
	tokenKey := "$KV." + events.BucketTokens + "." + testApp
	for _, tc := range []struct {
		exporter string // the account that exports the service to WORKER
		from, to string // the service as exported, and as WORKER imports it
		want     string // what must show in the changes
		kinds    []string
	}{
		// A stored message, whatever its bytes: every kind.
		{grants.AccountHolder, tokenKey, tokenKey, "stream " + grants.KVStream(events.BucketTokens) + " CHANGED", every},
		{grants.AccountCore, events.SubjectUserProfile, events.SubjectUserProfile, "subscriber of " + events.SubjectUserProfile + " received", every},
		// A JetStream API call: the server refuses a "$JS." reply
		// subject (serverRefuses), even one a wide import leads to, and
		// a reply through an import to the JetStream API under another
		// name: nothing may change ("").
		{grants.AccountCore, "$JS.API.STREAM.PURGE." + events.StreamJobs, "$JS.CORE.API.STREAM.PURGE." + events.StreamJobs, "", []string{"A direct"}},
	} {
		t.Run(tc.to, func(t *testing.T) {
			t.Parallel()
			w := newInjectWorld(t, grants.Worker)
			if mayPublish(grants.Worker, tc.to) {
				t.Fatalf("the worker may publish %s: no widening", tc.to)
			}
			exporter, err := w.s.LookupAccount(tc.exporter)
			if err != nil {
				t.Fatal(err)
			}
			worker, err := w.s.LookupAccount(grants.AccountWorker)
			if err != nil {
				t.Fatal(err)
			}
			if err := exporter.AddServiceExport(tc.from, []*server.Account{worker}); err != nil {
				t.Fatal(err)
			}
			if err := worker.AddServiceImport(exporter, tc.to, tc.from); err != nil {
				t.Fatal(err)
			}
			var tg target
			for _, x := range w.targets() {
				if x.subject == tc.to {
					tg = x
				}
			}
			if tg.subject == "" {
				t.Fatalf("%s is not a target", tc.to)
			}
			if strings.Contains(tc.want, "subscriber") {
				w.probe = w.sentTo(tc.to)
			}
			fired := map[string]bool{}
			for _, v := range w.volleys([]target{tg}) {
				kind := strings.Join(strings.Fields(v.name)[:2], " ")
				if fired[kind] || !slices.Contains(tc.kinds, kind) || len(v.shots) == 0 {
					continue
				}
				fired[kind] = true
				changed := w.fire(v, v.shots)
				if tc.want == "" && len(changed) > 0 {
					t.Errorf("%s at %s through the wide import: changes %q, want none", v.name, tc.to, changed)
				} else if tc.want != "" && !slices.ContainsFunc(changed, func(c string) bool { return strings.Contains(c, tc.want) }) {
					t.Errorf("%s at %s through the wide import went unseen: changes %q, want %q", v.name, tc.to, changed, tc.want)
				}
				w.restore()
			}
			for _, k := range tc.kinds {
				if !fired[k] {
					t.Errorf("no volley %q aimed at %s", k, tc.to)
				}
			}
		})
	}
}

// sentTo is a probe (injectWorld.probe) for the positive control: a
// subscriber of subject as the admin, in CORE (where the wide import
// leads), whose count of messages the server sent it is read from the
// server's books, so that nothing but the volley's own settles waits for
// them. Once they have returned the server must have sent it something.
func (w *injectWorld) sentTo(subject string) func(volley) func() {
	u := connectAs(w.t, w.s, grants.Provision)
	if _, err := u.nc.SubscribeSync(subject); err != nil {
		w.t.Fatal(err)
	}
	if err := u.nc.Flush(); err != nil {
		w.t.Fatal(err)
	}
	cid, err := u.nc.GetClientID()
	if err != nil {
		w.t.Fatal(err)
	}
	sent := func() int64 {
		cz, err := w.s.Connz(&server.ConnzOptions{CID: cid})
		if err != nil || len(cz.Conns) != 1 {
			w.t.Fatalf("connz of the probe: %v", err)
		}
		return cz.Conns[0].OutMsgs
	}
	return func(v volley) func() {
		before := sent()
		return func() {
			if n := sent() - before; n < 1 {
				w.t.Errorf("%s: once its settles returned, the server had sent nothing to %s", v.name, subject)
			}
		}
	}
}

// trigger is a literal subject of the attacker's stream st that the
// attacker may publish, "" if none.
func (w *injectWorld) trigger(st string) string {
	if b, ok := strings.CutPrefix(st, "KV_"); ok {
		if s := "$KV." + b + ".wxtrigger"; mayPublish(w.attacker, s) {
			return s
		}
		return ""
	}
	var cfg jetstream.StreamConfig
	if err := json.Unmarshal(w.configs[st], &cfg); err != nil {
		w.t.Fatal(err)
	}
	for _, s := range cfg.Subjects {
		if !strings.ContainsAny(s, "*>") && mayPublish(w.attacker, s) {
			return s
		}
	}
	return ""
}

// republish makes the attacker's own stream st republish what trigger
// stores to subject (a plant in bucket b reflected as
// STREAM.UPDATE.<st>, which the server refuses; then the same update by
// the admin), then stores a message through trigger. The
// attacker may do this to its own stream; the republished copy must not
// reach anyone outside its account. The update runs once the API is idle
// (the sentinel direct get follows the plant's answer); the republish
// leaves st's send queue before the PubAck of the trigger. Then the
// admin puts st's provisioned configuration back.
//
// The update takes unless subject is one of st's own subjects: the
// server refuses a republish that would store its own copy again ("forms
// a cycle"), and that shot sets nothing off (the holder's WX_TOKEN_EVENTS
// aimed at token.invalidated, a subject it stores but the holder may not
// publish). A shot that takes otherwise, or an update that does not take,
// is an error: the counts of the log are exact.
func (w *injectWorld) republish(b, st, trigger, subject string) shot {
	key := w.nextKey()
	return shot{name: fmt.Sprintf("%s: STREAM.UPDATE.%s (its own) republishing %s to %s, through a direct get of %s/%s", w.attacker, st, trigger, subject, b, key),
		fire: func() (func(), error) {
			var cfg jetstream.StreamConfig
			if err := json.Unmarshal(w.configs[st], &cfg); err != nil {
				w.t.Fatal(err)
			}
			c := cfg
			c.RePublish = &jetstream.RePublish{Source: trigger, Destination: subject}
			m := nats.NewMsg("$KV." + b + "." + key)
			m.Data = mustJSON(c)
			if _, err := w.atkJS.Bucket(b).PublishMsg(w.ctx, m); err != nil {
				w.t.Fatalf("plant %s/%s: %v", b, key, err)
			}
			// The reflection is refused (serverRefuses): directGet's settle
			// waits for the refusal, and the configuration stays.
			settle, err := w.directGet(b, key, grants.DefaultAPIPrefix+".STREAM.UPDATE."+st, true)
			if err != nil {
				return nil, err
			}
			settle()
			w.waitAPIIdle()
			info, err := w.adminJS(st).Stream(w.ctx, st)
			if err != nil {
				w.t.Fatalf("admin: stream %s: %v", st, err)
			}
			if rp := info.CachedInfo().Config.RePublish; rp != nil && rp.Destination == subject {
				w.t.Errorf("STREAM.UPDATE.%s by a reflected direct get took", st)
			}
			// What the attacker's own account may hold: the admin puts it.
			_, err = w.adminJS(st).UpdateStream(w.ctx, c)
			took := err == nil
			cycle := slices.ContainsFunc(cfg.Subjects, func(p string) bool { return subjectMatches(p, subject) })
			switch {
			case took:
				w.republished++
			case cycle:
				w.cycles++
			}
			if took == cycle {
				w.t.Errorf("STREAM.UPDATE.%s republishing to %s (one of its subjects: %v) took: %v", st, subject, cycle, took)
			}
			if _, err := w.atkJS.For(st).Publish(w.ctx, trigger, forgedResult); err != nil {
				w.t.Fatalf("trigger %s: %v", trigger, err)
			}
			if _, err := w.adminJS(st).UpdateStream(w.ctx, cfg); err != nil {
				w.t.Fatalf("admin: restore %s: %v", st, err)
			}
			return nil, nil
		}}
}

// pubAckOf publishes to subject (which the attacker may, and stream st of
// another account stores) with the reply subject: the PubAck goes there.
// The settle is a second publish on the same connection, whose PubAck
// leaves st's send queue after. Both messages are the attacker's by
// right: the snapshot does not count them. Where st republishes what it
// stores (the worker's results to user.profile, its dead letters), the
// republished copies are too, and carry the nonce; the PubAck carries no
// header.
func (w *injectWorld) pubAckOf(st, subject, reply string) shot {
	return shot{name: fmt.Sprintf("%s: publish %s (stored by %s) with reply %s", w.attacker, subject, st, reply), fire: func() (func(), error) {
		var cfg jetstream.StreamConfig
		if err := json.Unmarshal(w.configs[st], &cfg); err != nil {
			w.t.Fatal(err)
		}
		w.keys++
		id := fmt.Sprintf("inj-%s-%d", w.nonce, w.keys)
		m := nats.NewMsg(subject)
		m.Data = []byte(`{"job_id":"` + id + `","appid":"` + testApp + `","openid":"o-inject","version":1}`)
		if cfg.RePublish != nil {
			m.Header.Set(injectNonceHdr, w.nonce)
		}
		m.Reply = reply
		if err := w.atk.nc.PublishMsg(m); err != nil {
			return nil, err
		}
		if !serverRefuses(reply) {
			w.legit[st]++ // else the server drops it: nothing stored
		}
		return func() {
			if serverRefuses(reply) {
				w.refused(reply)
			}
			m.Reply = ""
			if _, err := w.atkJS.For(st).PublishMsg(w.ctx, m); err != nil {
				w.t.Fatalf("sentinel publish %s: %v", subject, err)
			}
			w.legit[st]++
		}, nil
	}}
}
