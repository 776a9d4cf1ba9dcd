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
}

func ExampleURL() {
	fmt.Println(redact.URL("nats://wxhub:s3cret@nats-1:4222,nats://wxhub:s3cret@nats-2:4222"))
	// Output: nats://wxhub:xxxxx@nats-1:4222,nats://wxhub:xxxxx@nats-2:4222
}
