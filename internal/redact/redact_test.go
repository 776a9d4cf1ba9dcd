package redact_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/wxhub/wxhub/internal/redact"
)

func TestURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://u:p@host:4222", "nats://u:xxxxx@host:4222"},
		{"nats://u:p%40ss@a:1,nats://v:q@b:2", "nats://u:xxxxx@a:1,nats://v:xxxxx@b:2"},
		{"nats://s3cr3ttoken@host:4222", "nats://xxxxx@host:4222"},
		{"tls://u:p@host", "tls://u:xxxxx@host"},
		{"https://user@example.com/x", "https://user@example.com/x"},
		{"nats://u:p w@host", "nats://u:xxxxx@host"},
		// Passwords that make the URL invalid are masked all the same.
		{"nats://u:pa/ss@127.0.0.1:1", "nats://u:xxxxx@127.0.0.1:1"},
		{"nats://u:ab,cd@h:1", "nats://u:xxxxx@h:1"},
		{"nats://u:ab,cd@h:1,nats://v:e/f,g@k:2", "nats://u:xxxxx@h:1,nats://v:xxxxx@k:2"},
		{"nats://u:p#ss@h:1", "nats://u:xxxxx@h:1"},
		{"nats://s3cr3t tok@h:1", "nats://xxxxx@h:1"},
		{"nats://u:p@ss@h:1", "nats://u:xxxxx@h:1"},
		{"nats://a:1,nats://u:p@b:2", "nats://a:1,nats://u:xxxxx@b:2"},
		{"", ""},
	}
	for _, c := range cases {
		if got := redact.URL(c.in); got != c.want {
			t.Errorf("URL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestText(t *testing.T) {
	in := `dial nats://admin:hunter2@10.0.0.1:4222: refused (also tls://x:y@h)`
	got := redact.Text(in)
	if strings.Contains(got, "hunter2") || strings.Contains(got, ":y@") {
		t.Errorf("Text left a password: %q", got)
	}
	if !strings.Contains(got, "admin:xxxxx@10.0.0.1") {
		t.Errorf("Text lost the user or host: %q", got)
	}
	// A URL that did not parse, quoted in a library's error, twice.
	in = `connect to NATS at nats://u:pa/ss@127.0.0.1:1: parse "nats://u:pa/ss@127.0.0.1:1": invalid port`
	if got := redact.Text(in); strings.Contains(got, "pa/ss") || strings.Count(got, "u:xxxxx@127.0.0.1:1") != 2 {
		t.Errorf("Text(%q) = %q", in, got)
	}
}

func ExampleURL() {
	fmt.Println(redact.URL("nats://wxhub:s3cret@nats-1:4222,nats://wxhub:s3cret@nats-2:4222"))
	// Output: nats://wxhub:xxxxx@nats-1:4222,nats://wxhub:xxxxx@nats-2:4222
}
