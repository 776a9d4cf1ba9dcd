// Package redact keeps credentials out of what wxhub prints. Every role
// and command formats NATS (and other) URLs through URL before they reach
// a log line, an error or status output, so nats://user:password@host is
// shown as nats://user:xxxxx@host. JSON shows a job (a dead letter) with
// its credentials, such as an OAuth code, replaced by their fingerprints.
package redact

import (
	"strings"
)

// Mask replaces a password in printed URLs.
const Mask = "xxxxx"

// URL returns s, a URL or a comma-separated list of them (as --nats-url
// takes), with every password replaced by Mask, and a NATS token (a user
// without a password in a nats, tls, ws or wss URL) too. Users and hosts
// stay, so the output still says where a process connects. It does not
// parse: a password with '/', ',', '#', a space or anything else that
// makes the URL invalid is masked all the same, up to the last '@'
// before the next URL of the list.
func URL(s string) string { return mask(s, false) }

// Text masks the password of every URL found in free text (an error
// message from a library, a log line): like URL, but a URL's credentials
// also end at white space or a quote.
func Text(s string) string { return mask(s, true) }

// mask replaces the credentials of every "scheme://userinfo@" in s. The
// userinfo of a URL runs from its "://" to the last '@' before the next
// "://" (in free text: before white space or a quote, too).
func mask(s string, freeText bool) string {
	if !strings.Contains(s, "@") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		scheme := s[:i]
		if j := strings.LastIndexFunc(scheme, func(r rune) bool { return !isSchemeChar(r) }); j >= 0 {
			scheme = scheme[j+1:]
		}
		b.WriteString(s[:i+3])
		s = s[i+3:]
		end := len(s)
		if j := strings.Index(s, "://"); j >= 0 {
			end = j
		}
		if freeText {
			if j := strings.IndexAny(s[:end], " \t\r\n\"'`"); j >= 0 {
				end = j
			}
		}
		at := strings.LastIndex(s[:end], "@")
		if at < 0 {
			continue
		}
		user, _, hasPassword := strings.Cut(s[:at], ":")
		switch {
		case hasPassword:
			b.WriteString(user + ":" + Mask)
		case tokenScheme(scheme):
			b.WriteString(Mask) // nats://token@host: the user part is the credential
		default:
			b.WriteString(user)
		}
		s = s[at:]
	}
}

func isSchemeChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.'
}

// tokenScheme: schemes whose URL user without a password is a token.
func tokenScheme(scheme string) bool {
	switch strings.ToLower(scheme) {
	case "nats", "tls", "ws", "wss":
		return true
	}
	return false
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
