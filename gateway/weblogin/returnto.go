package weblogin

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// allowed is one entry of an app's return_to allow-list: an exact origin
// (scheme, host and port) and a path prefix.
type allowed struct {
	scheme, host, path string
}

// parseAllowed parses an allow-list entry such as
// "https://shop.example.com/login/". A path of "" or "/" allows the whole
// origin. Queries, fragments and user info are refused.
func parseAllowed(s string) (allowed, error) {
	u, err := url.Parse(s)
	if err != nil {
		return allowed{}, fmt.Errorf("return_to allow-list entry %q: %w", s, err)
	}
	if err := checkURL(u); err != nil {
		return allowed{}, fmt.Errorf("return_to allow-list entry %q: %w", s, err)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return allowed{}, fmt.Errorf("return_to allow-list entry %q: no query or fragment allowed", s)
	}
	p := u.Path
	if p == "" {
		p = "/"
	}
	return allowed{scheme: u.Scheme, host: strings.ToLower(u.Host), path: p}, nil
}

// checkURL accepts absolute http(s) URLs without user info whose path has
// no dot segments or backslashes (which browsers resolve to another path
// than the one a prefix check sees).
func checkURL(u *url.URL) error {
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("must be an absolute http or https URL")
	case u.Host == "" || u.Opaque != "":
		return errors.New("must be an absolute http or https URL")
	case u.User != nil:
		return errors.New("must not carry user info")
	case strings.Contains(u.Path, `\`) || strings.Contains(u.Host, `\`):
		return errors.New("must not contain a backslash")
	}
	for seg := range strings.SplitSeq(u.Path, "/") {
		if seg == "." || seg == ".." {
			return errors.New("must not contain . or .. path segments")
		}
	}
	return nil
}

// match reports whether u is under a: same scheme and host (port
// included), and a path equal to the prefix or below it. A prefix
// "/login" allows "/login" and "/login/x", not "/loginx".
func (a allowed) match(u *url.URL) bool {
	if u.Scheme != a.scheme || strings.ToLower(u.Host) != a.host {
		return false
	}
	p := u.Path
	if p == "" {
		p = "/"
	}
	if p == a.path {
		return true
	}
	prefix := a.path
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return strings.HasPrefix(p, prefix)
}

// checkReturnTo parses raw and checks it against the allow-list.
func checkReturnTo(raw string, list []allowed) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("return_to is required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("return_to is not a URL")
	}
	if err := checkURL(u); err != nil {
		return nil, fmt.Errorf("return_to %w", err)
	}
	for _, a := range list {
		if a.match(u) {
			return u, nil
		}
	}
	return nil, errors.New("return_to is not on this app's allow-list")
}
