package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// DecodeUserLookup checks data against the user.lookup schema (see
// Validate) and decodes it. The error matches ErrTooLarge, ErrNotJSON or
// ErrSchema with errors.Is and is a *ValidationError.
func DecodeUserLookup(data []byte) (UserLookup, error) {
	if v, ok := fastUserLookup(data); ok {
		return v, nil
	}
	var v UserLookup
	err := decode(SubjectUserLookup, data, &v)
	return v, err
}

// DecodeOAuthCodeReceived checks data against the oauth.code.received
// schema (see Validate) and decodes it. The error matches ErrTooLarge,
// ErrNotJSON or ErrSchema with errors.Is and is a *ValidationError.
func DecodeOAuthCodeReceived(data []byte) (OAuthCodeReceived, error) {
	if v, ok := fastOAuthCodeReceived(data); ok {
		return v, nil
	}
	var v OAuthCodeReceived
	err := decode(SubjectOAuthCodeReceived, data, &v)
	return v, err
}

// DecodeOAuthUserInfo checks data against the oauth.userinfo schema (see
// Validate) and decodes it.
func DecodeOAuthUserInfo(data []byte) (OAuthUserInfo, error) {
	var v OAuthUserInfo
	err := decode(SubjectOAuthUserInfo, data, &v)
	return v, err
}

// Decode checks data against the schema of the bare subject name (see
// Validate) and then decodes it into v, a pointer to the subject's Go
// payload type (UserLookup for user.lookup, TokenInvalidated for
// token.invalidated, and so on). The error matches ErrUnknownSubject, or is
// a *ValidationError matching ErrTooLarge, ErrNotJSON or ErrSchema.
//
// One thing the schema cannot rule out is caught here and reported as
// ErrSchema: JSON Schema counts 1.0 and 1e2 as integers, encoding/json does
// not decode them into Go integers.
func Decode(subject string, data []byte, v any) error {
	switch p := v.(type) {
	case *UserLookup:
		if subject == SubjectUserLookup {
			if fv, ok := fastUserLookup(data); ok {
				*p = fv
				return nil
			}
		}
	case *OAuthCodeReceived:
		if subject == SubjectOAuthCodeReceived {
			if fv, ok := fastOAuthCodeReceived(data); ok {
				*p = fv
				return nil
			}
		}
	}
	return decode(subject, data, v)
}

func decode(subject string, data []byte, v any) error {
	if _, err := validate(subject, data); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &ValidationError{Subject: subject, Err: ErrSchema, Problems: []string{decodeProblem(err)}}
	}
	return nil
}

// decodeProblem words an encoding/json error on already validated data
// without quoting values.
func decodeProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		at := "/" + strings.ReplaceAll(te.Field, ".", "/")
		if strings.HasPrefix(te.Value, "number") {
			return fmt.Sprintf("%s: must be a plain integer that fits %s", at, te.Type)
		}
		return fmt.Sprintf("%s: cannot be decoded into %s", at, te.Type)
	}
	return fmt.Sprintf("(root): cannot be decoded: %T", err)
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
	if jobID, appID, ok := fastPeek(data); ok {
		return jobID, appID
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

// ValidJobID reports whether s is a well-formed job_id (the schema's
// pattern ^[A-Za-z0-9._:-]{1,128}$). A job's Nats-Msg-Id header names its
// result only when it is one.
func ValidJobID(s string) bool { return jobIDPattern.MatchString(s) }
