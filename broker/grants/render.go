package grants

import (
	"fmt"
	"slices"
	"strings"

	"github.com/wxhub/wxhub/events"
)

// roleWhy says what each role is, for the generated files.
var roleWhy = map[Role]string{
	Holder:    "the token holder: keeps each app's global access_token in wx_tokens (leader per appid by lease in wx_leases, fetches counted in wx_quota) and publishes token events.",
	Worker:    "job workers: pull jobs from their durables, read the token, keep OAuth outcomes in wx_oauth, publish results, dead letters and token.invalidated, and delete a job they ended after its last delivery.",
	Gateway:   "the HTTP gateway: reads the token, publishes token.invalidated and OAuth jobs, reads results.",
	Provision: "the administrator: `wxhub provision` (streams, buckets, consumers), `wxhub status`, `wxhub token`, `wxhub result`, `wxhub deadletters`, the nats CLI. No restrictions in CORE; the JetStream API of every other account under $JS.<ACCOUNT>.API.",
	Client:    "business systems: publish jobs (with their PubAck) and receive results. Nothing else.",
}

// Passwords maps a user name (Role.User, and "sys" for the system
// account) to its bcrypt hash.
type Passwords map[string]string

// GeneratedNote marks every generated file or section.
const GeneratedNote = "GENERATED from broker/grants by `make grants`: edit the tables there, not this"

// accountSpec is one account of the shipped layout.
type accountSpec struct {
	name    string
	js      bool
	users   []Role
	why     string
	exports []Export
	imports []Link
}

// layout lists the accounts in the order the deploy files show them.
func layout(prefix string) []accountSpec {
	links := Links(prefix)
	spec := func(name string, js bool, why string, users ...Role) accountSpec {
		return accountSpec{name: name, js: js, users: users, why: why, exports: Exports(name, links), imports: Imports(name, links)}
	}
	return []accountSpec{
		spec(AccountHolder, true, "the token holders and their state: wx_tokens, wx_leases, wx_quota, WX_TOKEN_EVENTS.", Holder),
		spec(AccountWorker, true, "the job workers and their state: wx_oauth, wx_done, wx_vault.", Worker),
		spec(AccountGateway, true, "the HTTP gateways and their state: wx_login_state.", Gateway),
		spec(AccountCore, true, "the admin, and the streams every role shares: WX_JOBS (with the workers' durables), WX_RESULTS, WX_DEADLETTERS. No service runs here.", Provision),
		spec(AccountClients, false, "business systems. No JetStream: they publish jobs and receive results.", Client),
	}
}

// NATSAccounts renders deploy/nats/accounts.inc: one account per role,
// CORE, CLIENTS and SYS, with every user, grant, export and import, for
// subjects under prefix.
func NATSAccounts(pw Passwords, prefix string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w(`# Accounts and users of the wxhub NATS cluster, included by nats-N.conf.
# %s.
#
# PASSWORDS: every password below is a bcrypt hash of a DEMO password
# ("<user>-demo-password", e.g. holder-demo-password) so that the tests in
# deploy/ can log in. Replace every hash before real use:
#     nats server passwd            # prompts, prints a new bcrypt hash
# and give each service its plain password via WXHUB_NATS_PASSWORD
# (systemd: /etc/wxhub/<role>.env; Kubernetes: the wxhub-nats Secret,
# the admin's in wxhub-nats-admin).
# Every wxhub process on this layout runs with --nats-accounts
# (WXHUB_NATS_ACCOUNTS=true).
#
# Subjects assume wxhub's default empty --prefix (regenerate for another).
#
# Why one account per role: an account is the unit of trust. Every user of
# an account can make the server publish on ANY subject of that account
# (a JetStream direct get answers on whatever reply subject the requester
# names, with a stored message as the body, and a JetStream API request
# arriving that way is run as the account's), so publish grants only hold
# between accounts. Each role therefore has an account holding only its
# own state, the shared streams are in CORE (only the admin logs in
# there), and what crosses is exactly the exports and imports below: API
# calls on another account's stream under "$JS.<ACCOUNT>.API", subjects
# under their own names. No KV write and no consumer create crosses.
#
`, GeneratedNote)
	for _, a := range layout(prefix) {
		for _, line := range wrap(a.name+": "+a.why, 74) {
			w("#   %s\n", line)
		}
	}
	w("#   SYS: the system account (server monitoring: nats server report).\n\naccounts: {\n")
	for _, a := range layout(prefix) {
		w("  %s: {\n", a.name)
		if a.js {
			w("    jetstream: enabled\n")
		}
		w("    users: [\n")
		for _, r := range a.users {
			writeUser(&b, r, pw, prefix, "      ")
		}
		w("    ]\n")
		if len(a.exports) > 0 {
			w("    exports: [\n")
			for _, e := range a.exports {
				kind := "stream"
				if e.Service {
					kind = "service"
				}
				extra := ""
				if e.Multi {
					extra = ", response_type: stream"
				}
				w("      {%s: %q, accounts: [%s]%s}\n", kind, e.Subject, strings.Join(e.Accounts, ", "), extra)
			}
			w("    ]\n")
		}
		if len(a.imports) > 0 {
			w("    imports: [\n")
			for _, l := range a.imports {
				if l.Service {
					to := ""
					if l.Local != l.Subject {
						to = fmt.Sprintf(", to: %q", l.Local)
					}
					w("      {service: {account: %s, subject: %q}%s}\n", l.From, l.Subject, to)
				} else {
					w("      {stream: {account: %s, subject: %q}}\n", l.From, l.Subject)
				}
			}
			w("    ]\n")
		}
		w("  }\n\n")
	}
	w("  SYS: {\n    users: [\n")
	w("      {user: sys, password: %q}\n", pw["sys"])
	w("    ]\n  }\n}\nsystem_account: SYS\n")
	return b.String()
}

func writeUser(b *strings.Builder, r Role, pw Passwords, prefix, ind string) {
	w := func(format string, a ...any) { fmt.Fprintf(b, ind+format, a...) }
	for _, line := range wrap(string(r)+": "+roleWhy[r], 72) {
		w("# %s\n", line)
	}
	p := For(r, prefix)
	if p.Admin {
		w("{user: %s, password: %q}\n", r.User(), pw[r.User()])
		return
	}
	w("{\n")
	w("  user: %s\n", r.User())
	w("  password: %q\n", pw[r.User()])
	w("  permissions: {\n")
	w("    publish: {allow: [\n")
	for _, s := range p.Publish {
		w("      %q\n", s)
	}
	w("    ]}\n")
	w("    subscribe: {allow: [\n")
	for _, s := range p.Subscribe {
		w("      %q\n", s)
	}
	w("    ]}\n")
	w("  }\n")
	w("}\n")
}

// HelmAccounts renders the accounts, users and grants as the YAML value
// of config.merge in the NATS Helm chart's values, each line indented by
// ind.
func HelmAccounts(pw Passwords, prefix, ind string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	user := func(r Role, uind string) {
		p := For(r, prefix)
		w("%s- user: %s\n", uind, r.User())
		w("%s  password: %q\n", uind, pw[r.User()])
		if p.Admin {
			return
		}
		w("%s  permissions:\n", uind)
		w("%s    publish:\n%s      allow:\n", uind, uind)
		for _, s := range p.Publish {
			w("%s        - %q\n", uind, s)
		}
		w("%s    subscribe:\n%s      allow:\n", uind, uind)
		for _, s := range p.Subscribe {
			w("%s        - %q\n", uind, s)
		}
	}
	w("system_account: SYS\n")
	w("accounts:\n")
	for _, a := range layout(prefix) {
		w("  %s:\n", a.name)
		if a.js {
			w("    jetstream: enabled\n")
		}
		w("    users:\n")
		for _, r := range a.users {
			user(r, "      ")
		}
		if len(a.exports) > 0 {
			w("    exports:\n")
			for _, e := range a.exports {
				kind := "stream"
				if e.Service {
					kind = "service"
				}
				w("      - %s: %q\n        accounts: [%s]\n", kind, e.Subject, strings.Join(e.Accounts, ", "))
				if e.Multi {
					w("        response_type: stream\n")
				}
			}
		}
		if len(a.imports) > 0 {
			w("    imports:\n")
			for _, l := range a.imports {
				if l.Service {
					w("      - service: {account: %s, subject: %q}\n", l.From, l.Subject)
					if l.Local != l.Subject {
						w("        to: %q\n", l.Local)
					}
				} else {
					w("      - stream: {account: %s, subject: %q}\n", l.From, l.Subject)
				}
			}
		}
	}
	w("  SYS:\n    users:\n")
	w("      - user: sys\n        password: %q\n", pw["sys"])
	lines := strings.SplitAfter(b.String(), "\n")
	return ind + strings.Join(lines[:len(lines)-1], ind)
}

// Markdown renders the security table of the README and docs: per role,
// what it may and may not do.
func Markdown() string {
	var b strings.Builder
	b.WriteString("| role (NATS user) | may | may not |\n|---|---|---|\n")
	for _, r := range Roles {
		var may, mayNot []string
		if r == Provision {
			may = append(may, "create, update and delete streams, buckets and consumers (`wxhub provision`); everything in account CORE; the JetStream API of every other account")
			mayNot = append(mayNot, "-")
		} else {
			for _, bk := range Buckets {
				switch {
				case slices.Contains(bk.Write, r):
					may = append(may, "read and write `"+bk.Name+"`")
				case slices.Contains(bk.Read, r), slices.Contains(bk.Watch, r):
					may = append(may, "read `"+bk.Name+"`")
					mayNot = append(mayNot, "write `"+bk.Name+"`")
				default:
					if r != Client {
						mayNot = append(mayNot, "touch `"+bk.Name+"`")
					}
				}
			}
			var pub, sub []string
			for _, s := range Subjects {
				if slices.Contains(s.Publish, r) {
					pub = append(pub, "`"+docName(s.Name)+"`")
				}
				if slices.Contains(s.Subscribe, r) {
					sub = append(sub, "`"+docName(s.Name)+"`")
				}
			}
			if len(pub) > 0 {
				may = append(may, "publish "+strings.Join(pub, ", "))
			}
			if len(sub) > 0 {
				may = append(may, "subscribe to "+strings.Join(sub, ", "))
			}
			for _, c := range Consumers {
				if slices.Contains(c.Pull, r) {
					may = append(may, "pull and ack `"+c.Durable+"`")
				}
			}
			for _, st := range Streams {
				switch {
				case slices.Contains(st.MsgDelete, r):
					may = append(may, "read and delete single messages of `"+st.Name+"` (jobs that used all their deliveries)")
				case slices.Contains(st.MsgGet, r):
					may = append(may, "read single messages of `"+st.Name+"` (the dead letter an earlier attempt stored for such a job)")
				}
			}
			if r == Client {
				mayNot = append(mayNot, "use JetStream or KV at all (account CLIENTS has none); see any token")
			} else {
				mayNot = append(mayNot, "create, update, purge or delete any stream; create a consumer other than a KV watch of "+watches(r)+"; publish anything not listed; reach anything outside account "+r.Account()+" but the listed calls, which its account imports")
			}
		}
		fmt.Fprintf(&b, "| %s (`%s`, account %s) | %s | %s |\n", r, r.User(), r.Account(), strings.Join(may, "; "), strings.Join(mayNot, "; "))
	}
	return b.String()
}

// wrap splits s into lines of at most n bytes at spaces.
func wrap(s string, n int) []string {
	var out []string
	line := ""
	for _, word := range strings.Fields(s) {
		if line != "" && len(line)+1+len(word) > n {
			out = append(out, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	return append(out, line)
}

// docName shows a wildcard subject the way the docs name subjects:
// "wxhub.deadletter.>" as the dead-letter subject of every job subject.
func docName(subject string) string {
	switch {
	case subject == events.SubjectStoredDeadLetterPrefix+">":
		var out []string
		for _, j := range events.NewSubjects("").Jobs() {
			out = append(out, events.SubjectStoredDeadLetterPrefix+j)
		}
		return strings.Join(out, "`, `")
	case strings.HasSuffix(subject, ".>"):
		return strings.TrimSuffix(subject, ">") + "<token>"
	}
	return subject
}

// watches names the buckets r may watch, for the docs.
func watches(r Role) string {
	var out []string
	for _, b := range Buckets {
		if slices.Contains(b.Watch, r) {
			out = append(out, "`"+b.Name+"`")
		}
	}
	if len(out) == 0 {
		return "any bucket"
	}
	return strings.Join(out, " or ")
}
