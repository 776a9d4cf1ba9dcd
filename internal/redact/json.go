package redact

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/wxhub/wxhub/wechat"
)

// FingerprintPrefix starts the value JSON puts in place of a credential.
const FingerprintPrefix = "fingerprint:"

// secretWords are the name parts that make a JSON member a credential:
// an OAuth code, access and refresh tokens, an AppSecret, a client key,
// a password, a ticket. A job has one (code); a dead letter may hold any
// member (it can be the bad input that was rejected).
var secretWords = []string{"code", "token", "secret", "password", "passwd", "key", "ticket", "credential", "authorization", "cookie"}

// SecretName reports whether a JSON member named name holds a credential:
// its name, lower-cased and without '_', '-' or other punctuation, contains
// one of code, token, secret, password, passwd, key, ticket, credential,
// authorization or cookie (refresh_token, AppSecret, client-key, Code).
// The members of a job that are not credentials (job_id, appid, openid,
// state, lang) do not match.
func SecretName(name string) bool {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 0x7f {
			b.WriteRune(r)
		}
	}
	n := b.String()
	for _, w := range secretWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// ErrNotJSONObject is returned by JSON for data that is not exactly one
// JSON object. Its messages never quote the data.
var ErrNotJSONObject = errors.New("not a JSON object")

// JSON returns data, one JSON object such as a job, indented, with the
// value of every member whose name is a SecretName (at any depth, a whole
// object or array included) replaced by FingerprintPrefix and
// wechat.Fingerprint of the value (of a string's text, else of its JSON).
// Everything else stays readable and in its order; a member that appears
// twice is kept (and masked) twice. Data that is not one JSON object
// (corrupt, truncated, another value, bytes after the object) gives an
// error matching ErrNotJSONObject and nothing of data: print a note about
// it, never the bytes.
func JSON(data []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, notObject(dec, "it is not valid JSON")
	}
	if tok != json.Delim('{') {
		return nil, notObject(dec, "it is another JSON value")
	}
	var out bytes.Buffer
	if err := maskObject(dec, &out); err != nil {
		return nil, notObject(dec, "it is not valid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, notObject(dec, "more bytes follow the object")
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, out.Bytes(), "", "  "); err != nil {
		return nil, fmt.Errorf("redact: indent: %w", err)
	}
	return pretty.Bytes(), nil
}

func notObject(dec *json.Decoder, why string) error {
	return fmt.Errorf("%w: %s at byte %d", ErrNotJSONObject, why, dec.InputOffset())
}

// maskObject copies the members of an object whose '{' was read.
func maskObject(dec *json.Decoder, out *bytes.Buffer) error {
	out.WriteByte('{')
	for i := 0; dec.More(); i++ {
		if i > 0 {
			out.WriteByte(',')
		}
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		name, ok := tok.(string)
		if !ok {
			return errors.New("member name is not a string")
		}
		writeString(out, name)
		out.WriteByte(':')
		if SecretName(name) {
			err = maskSecret(dec, out)
		} else {
			err = copyValue(dec, out)
		}
		if err != nil {
			return err
		}
	}
	_, err := dec.Token() // '}'
	out.WriteByte('}')
	return err
}

// maskSecret reads one value and writes its fingerprint.
func maskSecret(dec *json.Decoder, out *bytes.Buffer) error {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return err
	}
	text := string(raw)
	var s string
	if json.Unmarshal(raw, &s) == nil {
		text = s
	}
	writeString(out, FingerprintPrefix+wechat.Fingerprint(text))
	return nil
}

// copyValue copies one value, masking the secret members of its objects.
func copyValue(dec *json.Decoder, out *bytes.Buffer) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch v := tok.(type) {
	case json.Delim:
		if v == '{' {
			return maskObject(dec, out)
		}
		return maskArray(dec, out) // '[': Token never returns a closing delimiter here
	case string:
		writeString(out, v)
	case json.Number:
		out.WriteString(v.String())
	case bool:
		fmt.Fprint(out, v)
	case nil:
		out.WriteString("null")
	}
	return nil
}

// maskArray copies the elements of an array whose '[' was read.
func maskArray(dec *json.Decoder, out *bytes.Buffer) error {
	out.WriteByte('[')
	for i := 0; dec.More(); i++ {
		if i > 0 {
			out.WriteByte(',')
		}
		if err := copyValue(dec, out); err != nil {
			return err
		}
	}
	_, err := dec.Token() // ']'
	out.WriteByte(']')
	return err
}

// writeString writes s as a JSON string, without HTML escapes.
func writeString(out *bytes.Buffer, s string) {
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)           // a string always encodes
	out.Truncate(out.Len() - 1) // Encode's newline
}
