// Package redact keeps credentials out of what wxhub prints. Every role
// and command formats NATS (and other) URLs through URL before they reach
// a log line, an error or status output, so nats://user:password@host is
// shown as nats://user:xxxxx@host.
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// Mask replaces a password in printed URLs.
const Mask = "xxxxx"

// userinfo matches "scheme://user:password@" in text that does not parse
// as a URL.
var userinfo = regexp.MustCompile(`(://[^/@:\s,]*):[^/@,]*@`)

// URL returns s, a URL or a comma-separated list of them (as --nats-url
// takes), with every password replaced by Mask. Users and hosts stay, so
// the output still says where a process connects. Text that is not a URL
// is masked by pattern.
func URL(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = one(p)
	}
	return strings.Join(parts, ",")
}

func one(s string) string {
	trimmed := strings.TrimSpace(s)
	u, err := url.Parse(trimmed)
	if err != nil || u.User == nil {
		return userinfo.ReplaceAllString(s, "$1:"+Mask+"@")
	}
	if _, has := u.User.Password(); !has {
		// nats://token@host: the user part is the credential.
		if u.Scheme == "nats" || u.Scheme == "tls" || u.Scheme == "ws" || u.Scheme == "wss" {
			u.User = url.User(Mask)
		}
		return strings.Replace(s, trimmed, u.String(), 1)
	}
	return strings.Replace(s, trimmed, u.Redacted(), 1)
}

// Text masks the password of every URL found in free text (an error
// message from a library, a log line).
func Text(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	return userinfo.ReplaceAllString(s, "$1:"+Mask+"@")
}

// Error returns err with every URL password in its message masked; errors.Is
// and errors.As still see err. nil stays nil.
func Error(err error) error {
	if err == nil {
		return nil
	}
	return redacted{err}
}

type redacted struct{ err error }

func (r redacted) Error() string { return Text(r.err.Error()) }
func (r redacted) Unwrap() error { return r.err }
