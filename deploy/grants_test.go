package deploy_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wxhub/wxhub/broker/grants"
)

// -update rewrites the generated parts of the shipped files from package
// broker/grants (`make grants`).
var update = flag.Bool("update", false, "rewrite the generated grants in deploy/, README.md and docs/")

// demoHashes are the bcrypt hashes (cost 11) of "<user>-demo-password"
// that the shipped files carry; TestNATSPasswords checks them.
var demoHashes = grants.Passwords{
	"holder":  "$2a$11$1ebConJicZgdEpghqkC6UeG2phzFRTMHuH/5AxqN2.67wTvl2yddy",
	"worker":  "$2a$11$E7FIeYatl.XQDq7m2EEZ1OMTiHO7MtcsE997WtTFqEOqq6tcnJlgu",
	"gateway": "$2a$11$gXil1EMdOO2/wnaLxEz8wOSU2UNlxGZuhN9MaNnjJK82of4zBrYem",
	"admin":   "$2a$11$sNUMx9pWtpK02tmAWCwCNOZYrfiFFAMw7Y3gl4I9DA5FSfJYS5Y1K",
	"client":  "$2a$11$ZV01d8SUN0J5fvWyE/qedeB5uiyTynLNQhC4F6d1iXXEBms.W1jU.",
	"sys":     "$2a$11$.SUiOEbkEpaxtjUYe2zV1eUq43TLglhYZXiqdFQFrmKPxwrqNwZKu",
}

// generated is one file, or the region of a file between two marker
// lines, that is rendered from the grants.
type generated struct {
	path       string
	begin, end string // "" for a whole file
	render     func() string
}

func generatedFiles() []generated {
	return []generated{
		{path: filepath.Join("nats", "accounts.inc"), render: func() string { return grants.NATSAccounts(demoHashes, "") }},
		{path: filepath.Join("kubernetes", "nats-values.yaml"),
			begin: "    # BEGIN grants (" + grants.GeneratedNote + ")", end: "    # END grants",
			render: func() string { return grants.HelmAccounts(demoHashes, "", "    ") }},
		{path: filepath.Join("..", "README.md"), begin: "<!-- BEGIN grants (" + grants.GeneratedNote + ") -->", end: "<!-- END grants -->",
			render: grants.Markdown},
		{path: filepath.Join("..", "docs", "security.md"), begin: "<!-- BEGIN grants (" + grants.GeneratedNote + ") -->", end: "<!-- END grants -->",
			render: grants.Markdown},
	}
}

// TestShippedGrantsAreGenerated keeps deploy/nats/accounts.inc, the Helm
// values of the NATS chart, README.md and docs/security.md in step with
// the one definition in package broker/grants: they are rendered from it,
// and this test fails when a file was edited by hand or the tables
// changed without `make grants`.
func TestShippedGrantsAreGenerated(t *testing.T) {
	for _, g := range generatedFiles() {
		t.Run(g.path, func(t *testing.T) {
			raw, err := os.ReadFile(g.path)
			if err != nil {
				t.Fatal(err)
			}
			text := string(raw)
			want := g.render()
			var got, before, after string
			if g.begin == "" {
				got = text
			} else {
				i := strings.Index(text, g.begin+"\n")
				j := strings.Index(text, g.end+"\n")
				if i < 0 || j < i {
					t.Fatalf("markers %q ... %q not found (in this order, each on its own line)", g.begin, g.end)
				}
				before, got, after = text[:i+len(g.begin)+1], text[i+len(g.begin)+1:j], text[j:]
			}
			if got == want {
				return
			}
			if *update {
				if err := os.WriteFile(g.path, []byte(before+want+after), 0o644); err != nil {
					t.Fatal(err)
				}
				t.Logf("rewrote %s", g.path)
				return
			}
			t.Errorf("%s is not what broker/grants renders: run `make grants` (go test ./deploy -run TestShippedGrantsAreGenerated -update)", g.path)
		})
	}
}
