package schemas_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"slices"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/schemas"
)

// allSubjects is every bare subject of the contract (DESIGN.md, Subjects).
var allSubjects = []string{
	events.SubjectUserLookup,
	events.SubjectOAuthCodeReceived,
	events.SubjectOAuthUserInfo,
	events.SubjectUserProfile,
	events.SubjectUserProfileFailed,
	events.SubjectTokenRefreshed,
	events.SubjectTokenInvalidated,
	events.SubjectTokenRefreshFailed,
	events.SubjectTokenConflict,
	events.SubjectTokenRefreshRequest,
}

func TestNamesCoverEverySubject(t *testing.T) {
	want := slices.Clone(allSubjects)
	slices.Sort(want)
	if got := schemas.Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
}

func TestRaw(t *testing.T) {
	for _, name := range schemas.Names() {
		b, err := schemas.Raw(name)
		if err != nil {
			t.Fatalf("Raw(%q): %v", name, err)
		}
		fromFS, err := fs.ReadFile(schemas.FS(), schemas.FileName(name))
		if err != nil {
			t.Fatalf("FS has no %s: %v", schemas.FileName(name), err)
		}
		if !bytes.Equal(b, fromFS) {
			t.Errorf("Raw(%q) differs from the FS file", name)
		}
	}
	for _, bad := range []string{"", "user", "user.lookup.schema.json", "../schemas/user.lookup", "user.lookup/x", "wx.user.lookup"} {
		if _, err := schemas.Raw(bad); !errors.Is(err, schemas.ErrUnknownSubject) {
			t.Errorf("Raw(%q) error = %v, want ErrUnknownSubject", bad, err)
		}
	}
}

type doc struct {
	Schema               string                     `json:"$schema"`
	ID                   string                     `json:"$id"`
	Title                string                     `json:"title"`
	Description          string                     `json:"description"`
	Type                 string                     `json:"type"`
	AdditionalProperties *bool                      `json:"additionalProperties"`
	Required             []string                   `json:"required"`
	Properties           map[string]json.RawMessage `json:"properties"`
}

func load(t *testing.T, name string) doc {
	t.Helper()
	b, err := schemas.Raw(name)
	if err != nil {
		t.Fatal(err)
	}
	var d doc
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

// TestShape checks the conventions every schema keeps.
func TestShape(t *testing.T) {
	for _, name := range schemas.Names() {
		t.Run(name, func(t *testing.T) {
			d := load(t, name)
			if d.Schema != "https://json-schema.org/draft/2020-12/schema" {
				t.Errorf("$schema = %q, want draft 2020-12", d.Schema)
			}
			if d.ID != schemas.ID(name) {
				t.Errorf("$id = %q, want %q", d.ID, schemas.ID(name))
			}
			if d.Title != name {
				t.Errorf("title = %q, want %q", d.Title, name)
			}
			if d.Description == "" {
				t.Error("no description")
			}
			if d.Type != "object" {
				t.Errorf("type = %q, want object", d.Type)
			}
			if d.AdditionalProperties == nil || *d.AdditionalProperties {
				t.Error("additionalProperties must be false")
			}
			if len(d.Required) == 0 {
				t.Error("no required properties")
			}
			for _, r := range d.Required {
				if _, ok := d.Properties[r]; !ok {
					t.Errorf("required %q is not among the properties", r)
				}
			}
			for _, secret := range []string{"access_token", "refresh_token", "secret", "appsecret"} {
				if _, ok := d.Properties[secret]; ok {
					t.Errorf("schema declares credential property %q", secret)
				}
			}
		})
	}
}

// TestSharedDefinitions checks that a property that appears in several
// schemas means the same everywhere (apart from its description), except
// where a difference is deliberate.
func TestSharedDefinitions(t *testing.T) {
	// user.profile.failed allows an empty job_id/appid (the job was too
	// malformed to read them).
	exempt := map[string]map[string]bool{
		events.SubjectUserProfileFailed: {"job_id": true, "appid": true},
	}
	first := map[string]string{} // property -> "subject: definition"
	defs := map[string]string{}
	for _, name := range schemas.Names() {
		d := load(t, name)
		for prop, raw := range d.Properties {
			if exempt[name][prop] {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			delete(m, "description")
			norm, _ := json.Marshal(m)
			if prev, ok := defs[prop]; ok && prev != string(norm) {
				t.Errorf("property %q: %s in %s but %s in %s", prop, prev, first[prop], norm, name)
				continue
			}
			defs[prop] = string(norm)
			first[prop] = name
		}
	}
}

// TestCompile compiles every schema with format assertions on; the
// compiler also checks each document against the draft 2020-12
// meta-schema.
func TestCompile(t *testing.T) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	for _, name := range schemas.Names() {
		b, _ := schemas.Raw(name)
		d, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := c.AddResource(schemas.ID(name), d); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	for _, name := range schemas.Names() {
		if _, err := c.Compile(schemas.ID(name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Sanity: the compiled closed schemas reject a leaked token.
	sch := c.MustCompile(schemas.ID(events.SubjectTokenRefreshed))
	v := map[string]any{"appid": "wx1", "version": json.Number("1"), "expires_at": "2025-01-01T00:00:00Z",
		"fetched_at": "2025-01-01T00:00:00Z", "reason": "startup", "access_token": "x"}
	if err := sch.Validate(v); err == nil {
		t.Error("token.refreshed with access_token validated")
	}
	delete(v, "access_token")
	if err := sch.Validate(v); err != nil {
		t.Errorf("valid token.refreshed rejected: %v", err)
	}
}
