package events

import (
	"bytes"
	"encoding/json"
	"regexp"
)

// DecodeUserLookup checks data against the user.lookup schema (see
// Validate) and decodes it. The error matches ErrTooLarge, ErrNotJSON or
// ErrSchema with errors.Is and is a *ValidationError.
func DecodeUserLookup(data []byte) (UserLookup, error) {
	var v UserLookup
	err := decode(SubjectUserLookup, data, &v)
	return v, err
}

// DecodeOAuthCodeReceived checks data against the oauth.code.received
// schema (see Validate) and decodes it. The error matches ErrTooLarge,
// ErrNotJSON or ErrSchema with errors.Is and is a *ValidationError.
func DecodeOAuthCodeReceived(data []byte) (OAuthCodeReceived, error) {
	var v OAuthCodeReceived
	err := decode(SubjectOAuthCodeReceived, data, &v)
	return v, err
}

func decode(subject string, data []byte, v any) error {
	if _, err := validate(subject, data); err != nil {
		return err
	}
	// The schema is closed and checked every property's type, so this only
	// fails on a mismatch between the schema and the Go type, which the
	// tests rule out; report it as a schema violation anyway.
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &ValidationError{Subject: subject, Err: ErrSchema, Problems: []string{"(root): " + err.Error()}}
	}
	return nil
}

var (
	jobIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
	appIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// PeekJobIdentity extracts job_id and appid from a job that may be invalid,
// so that the failure result of a bad job can still name it. It returns ""
// for a value that is absent, not a string, or not of the schema's safe
// form (so the result is always fit for a Nats-Msg-Id header, a log line
// and the user.profile.failed schema), and ("", "") when data is not a
// JSON object or is larger than MaxJobSize. Only the first JSON value in
// data is read; with duplicate keys the last wins, as in decoding.
func PeekJobIdentity(data []byte) (jobID, appID string) {
	if len(data) > MaxJobSize {
		return "", ""
	}
	// Decode only the first value: trailing garbage does not hide an
	// otherwise readable identity.
	var fields map[string]json.RawMessage
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&fields); err != nil {
		return "", ""
	}
	str := func(key string, pattern *regexp.Regexp) string {
		raw, ok := fields[key]
		if !ok {
			return ""
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil || !pattern.MatchString(s) {
			return ""
		}
		return s
	}
	return str("job_id", jobIDPattern), str("appid", appIDPattern)
}
