package events_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/schemas"
)

// The seed corpora live in testdata/fuzz/<FuzzName>/; plain go test runs
// them. Run a fuzzer with e.g.
//
//	go test -run='^$' -fuzz=FuzzDecodeUserLookup -fuzztime=30s -fuzzminimizetime=2s ./events/
//
// (Without a short -fuzzminimizetime the engine can spend most of its time
// minimizing large interesting inputs, near MaxJobSize, and execs stall.)

// checkError asserts the error contract shared by Validate and the Decode
// functions.
func checkError(t *testing.T, subject string, err error) {
	t.Helper()
	assertOneKind(t, err)
	if errors.Is(err, events.ErrUnknownSubject) {
		return
	}
	var ve *events.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %T %q is not a *ValidationError", err, err)
	}
	if ve.Subject != subject {
		t.Errorf("Subject = %q, want %q", ve.Subject, subject)
	}
	if len(ve.Problems) == 0 {
		t.Error("no problems listed")
	}
	for _, p := range ve.Problems {
		if p == "" || strings.ContainsAny(p, "\r\n") {
			t.Errorf("problem %q is not one non-empty line", p)
		}
	}
	if !strings.HasPrefix(err.Error(), subject+": ") {
		t.Errorf("message %q does not start with the subject", err)
	}
}

// fuzzDecode checks one job decoder's properties: it never panics; an
// error is a *ValidationError of one sentinel kind and leaves a zero value;
// a success means data was valid JSON within the size limit, re-marshals to
// a value that validates and decodes back to the same value, and agrees
// with Validate and PeekJobIdentity.
func fuzzDecode[T comparable](t *testing.T, subject string, decode func([]byte) (T, error), data []byte) {
	v, err := decode(data)
	verr := events.Validate(subject, data)
	jobID, appID := events.PeekJobIdentity(data) // must not panic either
	if (err == nil) != (verr == nil) {
		t.Fatalf("decode error %v but Validate error %v", err, verr)
	}
	var zero T
	if err != nil {
		checkError(t, subject, err)
		if v != zero {
			t.Errorf("value %+v returned with error %v", v, err)
		}
		return
	}
	if len(data) > events.MaxJobSize || !json.Valid(data) {
		t.Fatalf("accepted %d bytes that are too large or not JSON", len(data))
	}
	again, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := events.Validate(subject, again); err != nil {
		t.Fatalf("re-marshalled value does not validate: %v\n%s", err, again)
	}
	back, err := decode(again)
	if err != nil || back != v {
		t.Fatalf("round trip: %+v, %v; want %+v", back, err, v)
	}
	var id struct {
		JobID string `json:"job_id"`
		AppID string `json:"appid"`
	}
	_ = json.Unmarshal(again, &id)
	if jobID != id.JobID || appID != id.AppID {
		t.Errorf("PeekJobIdentity = %q, %q; decoded %q, %q", jobID, appID, id.JobID, id.AppID)
	}
}

func FuzzDecodeUserLookup(f *testing.F) {
	f.Add([]byte(goodLookup))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzDecode(t, events.SubjectUserLookup, events.DecodeUserLookup, data)
	})
}

func FuzzDecodeOAuthCodeReceived(f *testing.F) {
	f.Add([]byte(`{"job_id":"cb-1","appid":"wx0123456789abcdef","code":"061AbC","state":"s1","lang":"en"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzDecode(t, events.SubjectOAuthCodeReceived, events.DecodeOAuthCodeReceived, data)
	})
}

// FuzzValidate checks Validate on every subject: it never panics, its
// error keeps the contract, it is deterministic, and it accepts only JSON
// within the size limit. An unknown subject is checked and then replaced by
// a known one so the input is not wasted.
func FuzzValidate(f *testing.F) {
	f.Add(events.SubjectTokenRefreshed, []byte(`{"appid":"a","version":1,"expires_at":"2025-01-01T00:00:00Z","fetched_at":"2025-01-01T00:00:00Z","reason":"startup"}`))
	names := schemas.Names()
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		if !slices.Contains(names, subject) {
			if err := events.Validate(subject, data); !errors.Is(err, events.ErrUnknownSubject) {
				t.Fatalf("Validate(%q) = %v, want ErrUnknownSubject", subject, err)
			}
			subject = names[len(subject)%len(names)]
		}
		err := events.Validate(subject, data)
		if err2 := events.Validate(subject, data); (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("not deterministic: %v, then %v", err, err2)
		}
		if err != nil {
			checkError(t, subject, err)
			return
		}
		if len(data) > events.MaxJobSize || !json.Valid(data) {
			t.Fatalf("accepted %d bytes that are too large or not JSON", len(data))
		}
		// What validates decodes into the Go type, but for integers written
		// as 1.0 or 1e2 (which JSON Schema counts as integers); and what
		// decodes marshals back to something that validates.
		v := goValue(subject)
		if err := events.Decode(subject, data, v); err != nil {
			if !errors.Is(err, events.ErrSchema) || !strings.Contains(err.Error(), "must be a plain integer") {
				t.Fatalf("validates but does not decode into the Go type: %v", err)
			}
			return
		}
		again, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := events.Validate(subject, again); err != nil {
			t.Fatalf("re-marshalled value does not validate: %v\n%s", err, again)
		}
	})
}
