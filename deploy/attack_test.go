package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
)

// attack is one thing a compromised role might try: a request (JetStream
// API call, KV write, publish) or a subscription.
type attack struct {
	name    string
	subject string
	body    []byte
	sub     bool // a subscription instead of a request
}

// streamConfigs are the provisioned streams' configurations by name
// (read as the admin), to build realistic update requests.
type streamConfigs map[string]jetstream.StreamConfig

func loadStreamConfigs(t *testing.T, ctx context.Context, admin *user) streamConfigs {
	t.Helper()
	out := streamConfigs{}
	for _, acc := range grants.JetStreamAccounts {
		js := admin.inAccount(t, acc)
		names := js.StreamNames(ctx)
		for name := range names.Name() {
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			out[name] = s.CachedInfo().Config
		}
		if err := names.Err(); err != nil {
			t.Fatalf("streams of %s: %v", acc, err)
		}
	}
	if len(out) < 8 {
		t.Fatalf("only %d streams provisioned: %v", len(out), out)
	}
	return out
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// evilUpdates are stream updates that would break every deny on
// $KV.<bucket>.> or the job queue.
func (sc streamConfigs) evilUpdates() []attack {
	var out []attack
	tokens := grants.KVStream(events.BucketTokens)
	oauth := grants.KVStream(events.BucketOAuth)
	// A source with a subject transform from a writable bucket into the
	// token bucket: rewrites any app's token record.
	c := sc[tokens]
	c.Sources = []*jetstream.StreamSource{{Name: oauth, SubjectTransforms: []jetstream.SubjectTransformConfig{
		{Source: "$KV." + events.BucketOAuth + ".*", Destination: "$KV." + events.BucketTokens + ".{{wildcard(1)}}"}}}}
	out = append(out, attack{name: "source with transform from " + oauth + " into " + tokens, subject: "$JS.API.STREAM.UPDATE." + tokens, body: mustJSON(c)})
	// RePublish of the token bucket to a subject every client receives.
	c = sc[tokens]
	c.RePublish = &jetstream.RePublish{Source: "$KV." + events.BucketTokens + ".>", Destination: events.SubjectUserProfile}
	out = append(out, attack{name: "republish " + tokens + " to user.profile", subject: "$JS.API.STREAM.UPDATE." + tokens, body: mustJSON(c)})
	// Shrink the job queue to one message.
	c = sc[events.StreamJobs]
	c.MaxMsgs = 1
	out = append(out, attack{name: "shrink WX_JOBS to one message", subject: "$JS.API.STREAM.UPDATE." + events.StreamJobs, body: mustJSON(c)})
	// Subject transform on the results stream (forge what clients see).
	c = sc[events.StreamResults]
	c.SubjectTransform = &jetstream.SubjectTransformConfig{Source: ">", Destination: "evil.>"}
	out = append(out, attack{name: "transform WX_RESULTS subjects", subject: "$JS.API.STREAM.UPDATE." + events.StreamResults, body: mustJSON(c)})
	// Every other stream: any update at all.
	for _, name := range sc.names() {
		c := sc[name]
		c.Description = "changed by an attacker"
		out = append(out, attack{name: "update " + name, subject: "$JS.API.STREAM.UPDATE." + name, body: mustJSON(c)})
	}
	return out
}

func (sc streamConfigs) names() []string {
	var n []string
	for k := range sc {
		n = append(n, k)
	}
	slices.Sort(n)
	return n
}

// attacksFor lists every known bypass for role; all must be denied.
func attacksFor(role grants.Role, sc streamConfigs) []attack {
	out := sc.evilUpdates()
	tokens := grants.KVStream(events.BucketTokens)
	add := func(name, subject string, body any) {
		var b []byte
		if body != nil {
			b = mustJSON(body)
		}
		out = append(out, attack{name: name, subject: subject, body: b})
	}
	// New streams that would capture tokens or jobs, or copy a bucket.
	add("stream capturing $KV.wx_tokens.>", "$JS.API.STREAM.CREATE.EVIL", jetstream.StreamConfig{Name: "EVIL", Subjects: []string{"$KV." + events.BucketTokens + ".>"}})
	add("stream capturing job subjects", "$JS.API.STREAM.CREATE.EVIL", jetstream.StreamConfig{Name: "EVIL", Subjects: events.NewSubjects("").Jobs()})
	add("stream mirroring the token bucket", "$JS.API.STREAM.CREATE.EVIL", jetstream.StreamConfig{Name: "EVIL", Mirror: &jetstream.StreamSource{Name: tokens}})
	add("stream sourcing the token bucket", "$JS.API.STREAM.CREATE.EVIL", jetstream.StreamConfig{Name: "EVIL", Sources: []*jetstream.StreamSource{{Name: tokens}}})
	add("list streams", "$JS.API.STREAM.LIST", nil)
	add("stream names", "$JS.API.STREAM.NAMES", nil)
	add("account info", "$JS.API.INFO", nil)
	for _, name := range sc.names() {
		add("purge "+name, "$JS.API.STREAM.PURGE."+name, nil)
		add("delete "+name, "$JS.API.STREAM.DELETE."+name, nil)
		add("snapshot "+name, "$JS.API.STREAM.SNAPSHOT."+name, map[string]string{"deliver_subject": "evil"})
		add("list consumers of "+name, "$JS.API.CONSUMER.LIST."+name, nil)
		if !(role == grants.Worker && name == events.StreamJobs) {
			add("delete a message of "+name, "$JS.API.STREAM.MSG.DELETE."+name, map[string]uint64{"seq": 1})
		}
		// Consumers without the bucket filter in the subject, and the
		// legacy forms, on every stream.
		cc := map[string]any{"stream_name": name, "config": jetstream.ConsumerConfig{Durable: "thief", AckPolicy: jetstream.AckExplicitPolicy}}
		add("durable consumer on "+name, "$JS.API.CONSUMER.CREATE."+name+".thief", cc)
		add("legacy durable consumer on "+name, "$JS.API.CONSUMER.DURABLE.CREATE."+name+".thief", cc)
		add("legacy ephemeral consumer on "+name, "$JS.API.CONSUMER.CREATE."+name, cc)
	}
	for _, c := range grants.Consumers {
		add("delete the workers' durable "+c.Durable, "$JS.API.CONSUMER.DELETE."+c.Stream+"."+c.Durable, nil)
		filter := events.NewSubjects("").Jobs()[0]
		add("a new durable on "+c.Stream+" filtered like the workers'", "$JS.API.CONSUMER.CREATE."+c.Stream+".thief."+filter,
			map[string]any{"stream_name": c.Stream, "config": jetstream.ConsumerConfig{Durable: "thief", FilterSubject: filter, AckPolicy: jetstream.AckExplicitPolicy}})
		if !slices.Contains(c.Pull, role) {
			add("fetch jobs through "+c.Durable, "$JS.API.CONSUMER.MSG.NEXT."+c.Stream+"."+c.Durable, map[string]int{"batch": 1})
			add("ack a delivery of "+c.Durable, "$JS.ACK."+c.Stream+"."+c.Durable+".1.1.1.1.0", nil)
		}
	}
	for _, b := range grants.Buckets {
		st := grants.KVStream(b.Name)
		reads := slices.Contains(b.Read, role) || slices.Contains(b.Watch, role) || slices.Contains(b.Write, role)
		if !reads {
			add("direct get from "+b.Name, "$JS.API.DIRECT.GET."+st+".$KV."+b.Name+".wxdeploytest", nil)
			add("direct get by sequence from "+b.Name, "$JS.API.DIRECT.GET."+st, map[string]uint64{"seq": 1})
			add("message get from "+b.Name, "$JS.API.STREAM.MSG.GET."+st, map[string]uint64{"seq": 1})
			add("info of "+b.Name, "$JS.API.STREAM.INFO."+st, nil)
		}
		if !slices.Contains(b.Watch, role) {
			add("watch "+b.Name, "$JS.API.CONSUMER.CREATE."+st+".watch.$KV."+b.Name+".>",
				map[string]any{"stream_name": st, "config": jetstream.ConsumerConfig{Name: "watch", FilterSubject: "$KV." + b.Name + ".>", AckPolicy: jetstream.AckNonePolicy, DeliverSubject: role.InboxPrefix() + ".w"}})
		}
		if !slices.Contains(b.Write, role) {
			add("write "+b.Name, "$KV."+b.Name+".wxdeploytest", map[string]string{"access_token": "FORGED"})
		}
	}
	// wxhub subjects the role must not publish.
	for _, s := range grants.Subjects {
		if slices.Contains(s.Publish, role) {
			continue
		}
		subj := strings.TrimSuffix(s.Name, ">") + strings.Repeat("x", strings.Count(s.Name, ">"))
		add("publish "+subj, subj, map[string]string{"job_id": "evil"})
	}
	// Subscriptions: other roles' replies and subjects not granted.
	var subs []string
	if role != grants.Client {
		subs = append(subs, "_INBOX.>")
	}
	subs = append(subs, "$KV."+events.BucketTokens+".>", "$JS.EVENT.>", "$JS.API.>", ">")
	for _, other := range grants.Roles {
		if other != role && other != grants.Client && other != grants.Provision {
			subs = append(subs, other.InboxPrefix()+".>")
		}
	}
	for _, s := range grants.Subjects {
		if !slices.Contains(s.Subscribe, role) {
			subs = append(subs, s.Name)
		}
	}
	for _, s := range subs {
		out = append(out, attack{name: "subscribe to " + s, subject: s, sub: true})
	}
	// Every JetStream API attack also as an import from another account
	// would name it, whether or not that account imports it.
	for _, a := range slices.Clone(out) {
		if a.sub || !strings.HasPrefix(a.subject, "$JS.API.") {
			continue
		}
		for _, acc := range grants.JetStreamAccounts {
			if acc == role.Account() {
				continue
			}
			b := a
			b.subject = "$JS." + acc + ".API." + strings.TrimPrefix(a.subject, "$JS.API.")
			if b.subject == grants.APIPrefix(role, events.StreamJobs)+".STREAM.MSG.DELETE."+events.StreamJobs && role == grants.Worker {
				continue // the workers' one grant of that kind
			}
			b.name += " (in " + acc + ")"
			out = append(out, b)
		}
	}
	return out
}

// runAttacks tries every attack as u and returns the ones that were not
// denied, each with what happened.
func runAttacks(u *user, list []attack) []string {
	var allowed []string
	for _, a := range list {
		var o outcome
		if a.sub {
			o = u.subscribe(a.subject, "")
		} else {
			o = u.request(a.subject, a.body, nil)
		}
		if !o.denied {
			detail := fmt.Sprint(o.err)
			if o.reply != nil {
				detail = "answered: " + string(o.reply.Data)
			}
			allowed = append(allowed, fmt.Sprintf("%s: %s (%s) was NOT denied: %s", u.role, a.name, a.subject, detail))
		}
	}
	return allowed
}
