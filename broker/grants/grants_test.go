package grants_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/wxhub/wxhub/broker/grants"
	"github.com/wxhub/wxhub/events"
)

// TestNoAdminRights: no role but provision can administer JetStream, and
// the audit catches a grant widened back to $JS.API.>.
func TestNoAdminRights(t *testing.T) {
	for _, r := range grants.Roles {
		p := grants.For(r, "")
		if r == grants.Provision {
			if !p.Admin {
				t.Errorf("provision is not the admin")
			}
			continue
		}
		if p.Admin {
			t.Errorf("%s is an admin", r)
		}
		if bad := grants.Audit(p.Publish); len(bad) > 0 {
			t.Errorf("%s: %v", r, bad)
		}
		for _, s := range append(p.Publish, p.Subscribe...) {
			if s == ">" || strings.HasPrefix(s, "$JS.API.>") || s == "$JS.>" || strings.HasPrefix(s, "_INBOX.") && r != grants.Client {
				t.Errorf("%s: %q", r, s)
			}
		}
	}
	for _, widened := range []string{"$JS.API.>", "$JS.>", ">", "$JS.API.STREAM.*.KV_wx_tokens", "$JS.API.STREAM.UPDATE.>", "$JS.API.CONSUMER.CREATE.WX_JOBS.>"} {
		if len(grants.Audit([]string{widened})) == 0 {
			t.Errorf("Audit misses %q", widened)
		}
	}
}

// TestGrantsPerRole pins the contract of DESIGN.md's permissions table.
func TestGrantsPerRole(t *testing.T) {
	pub := func(r grants.Role, s string) bool {
		for _, a := range grants.For(r, "").Publish {
			if grants.Matches(a, s) {
				return true
			}
		}
		return false
	}
	sub := func(r grants.Role, s string) bool {
		for _, a := range grants.For(r, "").Subscribe {
			if grants.Matches(a, s) {
				return true
			}
		}
		return false
	}
	kv := func(b string) string { return "$KV." + b + ".wxa" }
	// api names a JetStream API call on stream as role's account imports it.
	api := func(r grants.Role, stream, call string) string {
		return grants.APIPrefix(r, stream) + "." + call
	}
	get := func(b string) string { return "$JS.API.DIRECT.GET.KV_" + b + ".$KV." + b + ".wxa" }
	getAs := func(r grants.Role, b string) string {
		return api(r, grants.KVStream(b), "DIRECT.GET.KV_"+b+".$KV."+b+".wxa")
	}
	next := "CONSUMER.MSG.NEXT.WX_JOBS.wxhub-worker-user-lookup"
	cases := []struct {
		name string
		ok   bool
	}{
		{"only holders write wx_tokens", pub(grants.Holder, kv(events.BucketTokens)) && !pub(grants.Worker, kv(events.BucketTokens)) && !pub(grants.Gateway, kv(events.BucketTokens)) && !pub(grants.Client, kv(events.BucketTokens))},
		{"only holders write wx_leases and wx_quota", pub(grants.Holder, kv(events.BucketLeases)) && pub(grants.Holder, kv(events.BucketQuota)) && !pub(grants.Worker, kv(events.BucketLeases)) && !pub(grants.Worker, kv(events.BucketQuota))},
		{"workers and gateways read wx_tokens, in the holders' account", pub(grants.Worker, getAs(grants.Worker, events.BucketTokens)) && pub(grants.Gateway, getAs(grants.Gateway, events.BucketTokens)) && !pub(grants.Worker, get(events.BucketTokens))},
		{"nobody watches another account's bucket", !pub(grants.Worker, api(grants.Worker, "KV_wx_tokens", "CONSUMER.CREATE.KV_wx_tokens.w.$KV.wx_tokens.>")) && !pub(grants.Gateway, api(grants.Gateway, "KV_wx_tokens", "CONSUMER.CREATE.KV_wx_tokens.w.$KV.wx_tokens.>"))},
		{"clients read no bucket", !pub(grants.Client, get(events.BucketTokens)) && !sub(grants.Client, kv(events.BucketTokens))},
		{"holders do not touch wx_oauth", !pub(grants.Holder, kv(events.BucketOAuth)) && !pub(grants.Holder, get(events.BucketOAuth))},
		{"workers own wx_oauth", pub(grants.Worker, kv(events.BucketOAuth)) && pub(grants.Worker, get(events.BucketOAuth))},
		{"gateways read no lease, quota or oauth", !pub(grants.Gateway, get(events.BucketLeases)) && !pub(grants.Gateway, get(events.BucketQuota)) && !pub(grants.Gateway, get(events.BucketOAuth))},
		{"clients publish jobs and read results only", pub(grants.Client, events.SubjectUserLookup) && sub(grants.Client, events.SubjectUserProfile) && !pub(grants.Client, events.SubjectTokenInvalidated) && !pub(grants.Client, events.SubjectUserProfile)},
		{"workers pull their durables, in CORE", pub(grants.Worker, api(grants.Worker, "WX_JOBS", next)) && !pub(grants.Holder, api(grants.Holder, "WX_JOBS", next)) && !pub(grants.Worker, "$JS.API."+next)},
		{"workers delete single jobs, nothing else", pub(grants.Worker, api(grants.Worker, "WX_JOBS", "STREAM.MSG.DELETE.WX_JOBS")) && !pub(grants.Worker, api(grants.Worker, "WX_RESULTS", "STREAM.MSG.DELETE.WX_RESULTS")) && !pub(grants.Holder, api(grants.Holder, "WX_JOBS", "STREAM.MSG.DELETE.WX_JOBS"))},
		{"only workers read single dead letters, in CORE, and delete none", pub(grants.Worker, api(grants.Worker, "WX_DEADLETTERS", "STREAM.MSG.GET.WX_DEADLETTERS")) && !pub(grants.Worker, "$JS.API.STREAM.MSG.GET.WX_DEADLETTERS") &&
			!pub(grants.Worker, api(grants.Worker, "WX_DEADLETTERS", "STREAM.MSG.DELETE.WX_DEADLETTERS")) && !pub(grants.Worker, api(grants.Worker, "WX_DEADLETTERS", "DIRECT.GET.WX_DEADLETTERS")) &&
			!pub(grants.Gateway, api(grants.Gateway, "WX_DEADLETTERS", "STREAM.MSG.GET.WX_DEADLETTERS")) && !pub(grants.Holder, api(grants.Holder, "WX_DEADLETTERS", "STREAM.MSG.GET.WX_DEADLETTERS"))},
		{"holders do not touch jobs or results", !pub(grants.Holder, events.SubjectUserLookup) && !pub(grants.Holder, events.SubjectUserProfile) && !pub(grants.Holder, api(grants.Holder, "WX_JOBS", "STREAM.INFO.WX_JOBS"))},
		{"gateways publish OAuth jobs and token reports, read results", pub(grants.Gateway, events.SubjectOAuthCodeReceived) && pub(grants.Gateway, events.SubjectTokenInvalidated) && sub(grants.Gateway, events.SubjectUserProfileFailed) && !pub(grants.Gateway, events.SubjectUserProfile)},
		{"workers publish results only to the stored subjects", pub(grants.Worker, events.SubjectStoredResultPrefix+events.SubjectUserProfile) && !pub(grants.Worker, events.SubjectUserProfile) && !pub(grants.Worker, events.SubjectUserProfileFailed)},
		{"only workers own wx_done, only gateways wx_login_state", pub(grants.Worker, kv(events.BucketDone)) && !pub(grants.Gateway, kv(events.BucketDone)) && pub(grants.Gateway, kv(events.BucketLoginState)) && !pub(grants.Worker, get(events.BucketLoginState))},
		{"roles read only their own inbox", sub(grants.Worker, "_INBOX_worker.x") && !sub(grants.Worker, "_INBOX_holder.x") && !sub(grants.Worker, "_INBOX.x")},
		{"a prefix applies to wxhub subjects only", slices.Contains(grants.For(grants.Worker, "wx").Publish, "wx.wxhub.result.user.profile") && slices.Contains(grants.For(grants.Worker, "wx").Publish, "$KV.wx_oauth.>")},
	}
	for _, c := range cases {
		if !c.ok {
			t.Errorf("%s: not so", c.name)
		}
	}
}

func TestMatches(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"a.>", "a.b.c", true}, {"a.>", "a", false}, {"a.*", "a.b", true}, {"a.*", "a.b.c", false},
		{"a.b", "a.b", true}, {"a.b", "a.b.c", false}, {">", "x", true}, {"*.b", "a.b", true},
	} {
		if got := grants.Matches(c.p, c.s); got != c.want {
			t.Errorf("Matches(%q, %q) = %v", c.p, c.s, got)
		}
	}
}

// The grant of business systems: publish jobs, receive results.
func ExampleFor() {
	p := grants.For(grants.Client, "wx")
	fmt.Println("publish:", p.Publish)
	fmt.Println("subscribe:", p.Subscribe)
	// Output:
	// publish: [wx.user.lookup wx.oauth.code.received wx.oauth.userinfo]
	// subscribe: [wx.user.profile wx.user.profile.failed _INBOX.>]
}

// TestLinks: what crosses between accounts is read-only JetStream API on
// another role's state, subjects under their own names, and the admin's
// view; never a KV write or a consumer create, and nothing reaches the
// holders' account but token reports.
func TestLinks(t *testing.T) {
	links := grants.Links("")
	for _, l := range links {
		if l.From == l.To {
			t.Errorf("link inside %s: %+v", l.From, l)
		}
		if l.To == grants.AccountCore && l.Subject == "$JS.API.>" {
			continue // the admin's view of every account
		}
		for _, bad := range []string{"$KV.", "$JS.API.CONSUMER.CREATE", "$JS.API.CONSUMER.DURABLE", "$JS.API.STREAM.CREATE", "$JS.API.STREAM.UPDATE", "$JS.API.STREAM.PURGE", "$JS.API.STREAM.DELETE", "$JS.FC."} {
			if strings.HasPrefix(l.Subject, bad) {
				t.Errorf("%s imports %q from %s", l.To, l.Subject, l.From)
			}
		}
		if l.From == grants.AccountHolder && l.Service && !strings.HasPrefix(l.Subject, "$JS.API.") && l.Subject != events.SubjectTokenInvalidated {
			t.Errorf("%s can publish %q into the holders' account", l.To, l.Subject)
		}
	}
	for _, b := range grants.Buckets {
		acc := grants.StreamAccount(grants.KVStream(b.Name))
		for _, r := range append(append([]grants.Role{}, b.Write...), b.Watch...) {
			if r.Account() != acc {
				t.Errorf("%s writes or watches %s outside its account", r, b.Name)
			}
		}
	}
}
