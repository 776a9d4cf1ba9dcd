package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"

	"github.com/wxhub/wxhub/schemas"
)

// MaxJobSize is the largest message, in bytes, that Validate and the Decode
// functions accept. Real jobs are a few hundred bytes; the limit keeps a
// hostile publisher from making workers parse megabytes.
const MaxJobSize = 16 << 10

// Sentinel errors. Every error from Validate and the Decode functions
// matches exactly one of them with errors.Is.
var (
	// ErrNotJSON: the message is not a single well-formed JSON value.
	ErrNotJSON = errors.New("not JSON")
	// ErrTooLarge: the message is larger than MaxJobSize.
	ErrTooLarge = errors.New("too large")
	// ErrSchema: the message is JSON but breaks the subject's schema.
	ErrSchema = errors.New("schema violation")
	// ErrUnknownSubject: there is no schema for the subject.
	ErrUnknownSubject = errors.New("no schema for subject")
)

// ValidationError says why a message was rejected. Its Problems name the
// offending field as a JSON pointer ("/openid") and the problem, and never
// quote the message's values, so the error is safe to log and to put in a
// user.profile.failed result even when the job carried a credential such as
// an OAuth code.
//
// A ValidationError matches ErrNotJSON, ErrTooLarge or ErrSchema with
// errors.Is, according to Err.
type ValidationError struct {
	Subject  string   // the bare subject name
	Err      error    // ErrNotJSON, ErrTooLarge or ErrSchema
	Problems []string // one line per problem, sorted
}

func (e *ValidationError) Error() string {
	return e.Subject + ": " + strings.Join(e.Problems, "; ")
}

// Unwrap returns the sentinel the error belongs to.
func (e *ValidationError) Unwrap() error { return e.Err }

// Validate checks data, a message for the bare subject name (no prefix),
// against the subject's JSON Schema: its size (at most MaxJobSize), that it
// is one JSON value, and the schema with formats (date-time) asserted. It
// returns nil or an error matching ErrUnknownSubject, or a
// *ValidationError.
//
// Validate is safe for concurrent use; the schemas are compiled once, on
// first use.
func Validate(subject string, data []byte) error {
	switch subject {
	case SubjectUserLookup:
		if _, ok := fastUserLookup(data); ok {
			return nil
		}
	case SubjectOAuthCodeReceived:
		if _, ok := fastOAuthCodeReceived(data); ok {
			return nil
		}
	}
	_, err := validate(subject, data)
	return err
}

// validate is Validate that also returns the decoded document.
func validate(subject string, data []byte) (any, error) {
	sch, err := schemaFor(subject)
	if err != nil {
		return nil, err
	}
	if len(data) > MaxJobSize {
		what := "message"
		if isJob(subject) {
			what = "job"
		}
		return nil, &ValidationError{Subject: subject, Err: ErrTooLarge,
			Problems: []string{fmt.Sprintf("%s is %d bytes, limit %d", what, len(data), MaxJobSize)}}
	}
	doc, err := parseJSON(data)
	if err != nil {
		return nil, &ValidationError{Subject: subject, Err: ErrNotJSON, Problems: []string{err.Error()}}
	}
	if at := duplicateKey(data); at != "" {
		// encoding/json keeps the last of two equal keys, and a decoder
		// reading the first would see another job: refused, like the fast
		// decoder does.
		return nil, &ValidationError{Subject: subject, Err: ErrSchema, Problems: []string{at + ": appears twice"}}
	}
	if err := sch.Validate(doc); err != nil {
		var ve *jsonschema.ValidationError
		if !errors.As(err, &ve) {
			// Not expected from a compiled schema; keep the contract anyway.
			return nil, &ValidationError{Subject: subject, Err: ErrSchema, Problems: []string{err.Error()}}
		}
		return nil, &ValidationError{Subject: subject, Err: ErrSchema, Problems: problems(ve)}
	}
	return doc, nil
}

func isJob(subject string) bool {
	return subject == SubjectUserLookup || subject == SubjectOAuthCodeReceived || subject == SubjectOAuthUserInfo
}

// parseJSON decodes exactly one JSON value, keeping numbers exact. Its
// errors read "not JSON: <reason> at offset N".
func parseJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		var se *json.SyntaxError
		switch {
		case errors.Is(err, io.EOF) && len(bytes.TrimSpace(data)) == 0:
			return nil, errors.New("not JSON: empty message")
		case errors.As(err, &se):
			return nil, fmt.Errorf("not JSON: %s at offset %d", se.Error(), se.Offset)
		case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
			return nil, fmt.Errorf("not JSON: unexpected end of input at offset %d", len(data))
		default:
			return nil, fmt.Errorf("not JSON: %s at offset %d", err.Error(), dec.InputOffset())
		}
	}
	// Anything but white space after the value is an error.
	off := dec.InputOffset()
	if rest := bytes.TrimLeft(data[off:], " \t\r\n"); len(rest) > 0 {
		return nil, fmt.Errorf("not JSON: unexpected data after the top-level value at offset %d",
			int(off)+len(data[off:])-len(rest))
	}
	return doc, nil
}

// duplicateKey returns the JSON pointer of the first key that appears
// twice in one object of data (valid JSON, at most MaxJobSize), or "".
func duplicateKey(data []byte) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	p, _ := duplicateIn(dec, "")
	return p
}

// duplicateIn reads one value from dec, found at path, and returns the
// pointer of the first duplicate key within it.
func duplicateIn(dec *json.Decoder, path string) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return "", nil // a scalar
	}
	switch d {
	case '{':
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return "", err
			}
			key, _ := kt.(string)
			p := path + "/" + pointerEscaper.Replace(key)
			if seen[key] {
				return p, nil
			}
			seen[key] = true
			if dp, err := duplicateIn(dec, p); dp != "" || err != nil {
				return dp, err
			}
		}
	case '[':
		for i := 0; dec.More(); i++ {
			if dp, err := duplicateIn(dec, path+"/"+strconv.Itoa(i)); dp != "" || err != nil {
				return dp, err
			}
		}
	}
	_, err = dec.Token() // the closing } or ]
	return "", err
}

// pointerEscaper escapes a key for a JSON pointer (RFC 6901).
var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// compiled holds the schemas, compiled on first use.
var compiled struct {
	once    sync.Once
	schemas map[string]*jsonschema.Schema
	err     error
}

func schemaFor(subject string) (*jsonschema.Schema, error) {
	compiled.once.Do(func() { compiled.schemas, compiled.err = compileAll() })
	if compiled.err != nil {
		return nil, compiled.err
	}
	sch, ok := compiled.schemas[subject]
	if !ok {
		return nil, fmt.Errorf("events: %w %q", ErrUnknownSubject, subject)
	}
	return sch, nil
}

// compileAll compiles every schema of package schemas with format
// assertions on (in draft 2020-12 "format" is otherwise only an
// annotation).
func compileAll() (map[string]*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	names := schemas.Names()
	for _, name := range names {
		raw, err := schemas.Raw(name)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("events: schema %s: %w", name, err)
		}
		if err := c.AddResource(schemas.ID(name), doc); err != nil {
			return nil, fmt.Errorf("events: schema %s: %w", name, err)
		}
	}
	out := make(map[string]*jsonschema.Schema, len(names))
	for _, name := range names {
		sch, err := c.Compile(schemas.ID(name))
		if err != nil {
			return nil, fmt.Errorf("events: compiling schema %s: %w", name, err)
		}
		out[name] = sch
	}
	return out, nil
}

// problems flattens the library's error tree into one line per leaf.
func problems(ve *jsonschema.ValidationError) []string {
	var out []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			out = append(out, describe(e)...)
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	if len(out) == 0 {
		out = []string{"(root): invalid"}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// pointer renders an instance location as a JSON pointer, "(root)" for the
// document itself.
func pointer(loc []string, more ...string) string {
	loc = append(slices.Clip(loc), more...)
	if len(loc) == 0 {
		return "(root)"
	}
	var sb strings.Builder
	for _, tok := range loc {
		sb.WriteByte('/')
		tok = strings.ReplaceAll(tok, "~", "~0")
		sb.WriteString(strings.ReplaceAll(tok, "/", "~1"))
	}
	return sb.String()
}

// describe words one leaf error. It never quotes the instance's values
// (they may be credentials or huge); field names are quoted with %q
// escaping when they are unusual, and truncated.
func describe(e *jsonschema.ValidationError) []string {
	at := pointer(safeTokens(e.InstanceLocation))
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		out := make([]string, 0, len(k.Missing))
		for _, m := range k.Missing {
			out = append(out, pointer(safeTokens(e.InstanceLocation), m)+": missing required property")
		}
		return out
	case *kind.AdditionalProperties:
		out := make([]string, 0, len(k.Properties))
		for _, p := range k.Properties {
			out = append(out, pointer(safeTokens(e.InstanceLocation), safeToken(p))+": unknown property (not allowed)")
		}
		return out
	case *kind.Type:
		return []string{fmt.Sprintf("%s: must be %s, got %s", at, strings.Join(k.Want, " or "), k.Got)}
	case *kind.Enum:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = fmt.Sprint(w)
		}
		return []string{fmt.Sprintf("%s: must be one of %s", at, strings.Join(want, ", "))}
	case *kind.Const:
		return []string{fmt.Sprintf("%s: must be %v", at, k.Want)}
	case *kind.Pattern:
		return []string{fmt.Sprintf("%s: must match %s", at, k.Want)}
	case *kind.MinLength:
		return []string{fmt.Sprintf("%s: must be at least %d characters, got %d", at, k.Want, k.Got)}
	case *kind.MaxLength:
		return []string{fmt.Sprintf("%s: must be at most %d characters, got %d", at, k.Want, k.Got)}
	case *kind.Minimum:
		return []string{fmt.Sprintf("%s: must be >= %s", at, ratString(k.Want))}
	case *kind.Maximum:
		return []string{fmt.Sprintf("%s: must be <= %s", at, ratString(k.Want))}
	case *kind.Format:
		what := k.Want
		if what == "date-time" {
			what = "date-time (RFC 3339, e.g. 2006-01-02T15:04:05Z)"
		}
		return []string{fmt.Sprintf("%s: must be a valid %s", at, what)}
	case *kind.MinItems:
		return []string{fmt.Sprintf("%s: must have at least %d items, got %d", at, k.Want, k.Got)}
	case *kind.MaxItems:
		return []string{fmt.Sprintf("%s: must have at most %d items, got %d", at, k.Want, k.Got)}
	case *kind.FalseSchema:
		return []string{at + ": not allowed"}
	default:
		// A keyword the schemas do not use today: fall back on the
		// library's wording, which reads "at '/ptr': problem".
		msg := e.Error()
		if _, after, ok := strings.Cut(msg, "': "); ok {
			msg = after
		}
		return []string{at + ": " + msg}
	}
}

func ratString(r *big.Rat) string {
	if r == nil {
		return "?"
	}
	if r.IsInt() {
		return r.Num().String()
	}
	return r.FloatString(6)
}

// maxTokenLen bounds how much of a property name a message repeats.
const maxTokenLen = 64

func safeTokens(loc []string) []string {
	out := make([]string, len(loc))
	for i, t := range loc {
		out[i] = safeToken(t)
	}
	return out
}

// safeToken returns a property name fit for a one-line message: plain
// names as they are, anything with control, space or non-ASCII characters
// quoted, and long names cut.
func safeToken(s string) string {
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			plain = false
			break
		}
	}
	if len(s) > maxTokenLen {
		s = strings.ToValidUTF8(s[:maxTokenLen], "") + "…"
	}
	if !plain {
		s = fmt.Sprintf("%q", s)
	}
	return s
}
