package grants

import (
	"fmt"
	"slices"
	"strings"

	"github.com/wxhub/wxhub/events"
)

// forbidden are API subjects no role but the admin may publish to:
// stream administration of every kind, consumers on the job stream, and
// the account-wide listings.
func forbidden() []string {
	out := []string{"$JS.API.INFO", "$JS.API.STREAM.LIST", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.CREATE.EVIL",
		"$JS.API.STREAM.TEMPLATE.CREATE.EVIL", "$JS.API.ACCOUNT.PURGE.WXHUB"}
	streams := []string{events.StreamJobs, events.StreamResults, events.StreamTokenEvents, events.StreamDeadLetters}
	for _, b := range Buckets {
		streams = append(streams, KVStream(b.Name))
	}
	for _, st := range streams {
		for _, op := range []string{"UPDATE", "DELETE", "PURGE", "SNAPSHOT", "RESTORE", "LEADER.STEPDOWN", "PEER.REMOVE"} {
			out = append(out, "$JS.API.STREAM."+op+"."+st)
		}
		out = append(out, "$JS.API.CONSUMER.LIST."+st, "$JS.API.CONSUMER.DURABLE.CREATE."+st+".thief",
			"$JS.API.CONSUMER.CREATE."+st, "$JS.API.CONSUMER.CREATE."+st+".thief")
		if st != events.StreamJobs {
			out = append(out, "$JS.API.STREAM.MSG.DELETE."+st)
		}
	}
	for _, c := range Consumers {
		out = append(out, "$JS.API.CONSUMER.DELETE."+c.Stream+"."+c.Durable,
			"$JS.API.CONSUMER.CREATE."+c.Stream+".thief."+events.SubjectUserLookup)
	}
	// The same calls on another account, as an import would name them.
	for _, s := range slices.Clone(out) {
		for _, acc := range JetStreamAccounts {
			out = append(out, "$JS."+acc+".API."+strings.TrimPrefix(s, "$JS.API."))
		}
	}
	return out
}

// Audit reports every publish permission in allow that would let a
// non-admin user administer JetStream: a subject such as $JS.API.> or
// $JS.API.STREAM.UPDATE.* that matches a stream update, create, delete or
// purge, a message delete outside WX_JOBS, a consumer on WX_JOBS, and so
// on. It is empty for every role's grant (For), and the deploy tests run
// it on the users of the shipped config files.
func Audit(allow []string) []string {
	var out []string
	for _, a := range allow {
		for _, f := range forbidden() {
			if Matches(a, f) {
				out = append(out, fmt.Sprintf("%q allows %s", a, f))
				break
			}
		}
	}
	return out
}

// Matches reports whether the NATS subject pattern (with * and >)
// matches the literal subject.
func Matches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(p) == len(s)
}
