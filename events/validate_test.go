package events_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/schemas"
)

const goodLookup = `{"job_id":"j-1","appid":"wx0123456789abcdef","openid":"oAbC_dEf-1","lang":"zh_CN"}`

func TestValidateBadInput(t *testing.T) {
	big := `{"job_id":"j","appid":"a","openid":"o","lang":"en","x":"` + strings.Repeat("y", events.MaxJobSize) + `"}`
	exactlyMax := `{"job_id":"j","appid":"a","openid":"` + strings.Repeat("o", 64) + `"}`
	exactlyMax += strings.Repeat(" ", events.MaxJobSize-len(exactlyMax))
	tests := []struct {
		name    string
		subject string
		data    string
		want    error    // sentinel, nil for success
		msgs    []string // substrings the message must contain
	}{
		{"valid", events.SubjectUserLookup, goodLookup, nil, nil},
		{"valid without lang", events.SubjectUserLookup, `{"job_id":"j","appid":"a","openid":"o"}`, nil, nil},
		{"valid at exactly MaxJobSize", events.SubjectUserLookup, exactlyMax, nil, nil},
		{"empty", events.SubjectUserLookup, ``, events.ErrNotJSON, []string{"user.lookup: not JSON: empty message"}},
		{"white space", events.SubjectUserLookup, " \n\t", events.ErrNotJSON, []string{"not JSON: empty message"}},
		{"not JSON", events.SubjectUserLookup, `job_id=1`, events.ErrNotJSON, []string{"not JSON", "invalid character 'j'", "at offset 1"}},
		{"truncated", events.SubjectUserLookup, `{"job_id":"j","appid"`, events.ErrNotJSON, []string{"not JSON: unexpected end of input at offset 21"}},
		{"trailing garbage", events.SubjectUserLookup, goodLookup + ` x`, events.ErrNotJSON, []string{"not JSON", "after the top-level value", fmt.Sprintf("at offset %d", len(goodLookup)+1)}},
		{"two objects", events.SubjectUserLookup, goodLookup + goodLookup, events.ErrNotJSON, []string{"after the top-level value"}},
		{"array", events.SubjectUserLookup, `[` + goodLookup + `]`, events.ErrSchema, []string{"(root): must be object, got array"}},
		{"null", events.SubjectUserLookup, `null`, events.ErrSchema, []string{"(root): must be object, got null"}},
		{"string", events.SubjectUserLookup, `"hello"`, events.ErrSchema, []string{"(root): must be object, got string"}},
		{"missing job_id", events.SubjectUserLookup, `{"appid":"a","openid":"o"}`, events.ErrSchema, []string{"user.lookup: /job_id: missing required property"}},
		{"missing appid", events.SubjectUserLookup, `{"job_id":"j","openid":"o"}`, events.ErrSchema, []string{"/appid: missing required property"}},
		{"missing openid", events.SubjectUserLookup, `{"job_id":"j","appid":"a"}`, events.ErrSchema, []string{"user.lookup: /openid: missing required property"}},
		{"empty object", events.SubjectUserLookup, `{}`, events.ErrSchema, []string{"/appid: missing required property", "/job_id: missing required property", "/openid: missing required property"}},
		{"missing code", events.SubjectOAuthCodeReceived, `{"job_id":"j","appid":"a"}`, events.ErrSchema, []string{"oauth.code.received: /code: missing required property"}},
		{"openid as number", events.SubjectUserLookup, `{"job_id":"j","appid":"a","openid":12345}`, events.ErrSchema, []string{"/openid: must be string, got number"}},
		{"job_id as null", events.SubjectUserLookup, `{"job_id":null,"appid":"a","openid":"o"}`, events.ErrSchema, []string{"/job_id: must be string, got null"}},
		{"bad lang", events.SubjectUserLookup, `{"job_id":"j","appid":"a","openid":"o","lang":"fr"}`, events.ErrSchema, []string{"/lang: must be one of zh_CN, zh_TW, en"}},
		{"unknown property", events.SubjectUserLookup, `{"job_id":"j","appid":"a","openid":"o","open_id":"o"}`, events.ErrSchema, []string{"/open_id: unknown property (not allowed)"}},
		{"property in other case", events.SubjectUserLookup, `{"job_id":"j","appid":"a","openid":"o","OpenID":"p"}`, events.ErrSchema, []string{"/OpenID: unknown property"}},
		{"job_id with spaces", events.SubjectUserLookup, `{"job_id":"job 1","appid":"a","openid":"o"}`, events.ErrSchema, []string{"/job_id: must match ^[A-Za-z0-9._:-]{1,128}$"}},
		{"job_id with newline", events.SubjectUserLookup, `{"job_id":"j\r\nX-Evil: 1","appid":"a","openid":"o"}`, events.ErrSchema, []string{"/job_id: must match"}},
		{"empty job_id", events.SubjectUserLookup, `{"job_id":"","appid":"a","openid":"o"}`, events.ErrSchema, []string{"/job_id: must match"}},
		{"job_id too long", events.SubjectUserLookup, `{"job_id":"` + strings.Repeat("j", 129) + `","appid":"a","openid":"o"}`, events.ErrSchema, []string{"/job_id: must match"}},
		{"code with space", events.SubjectOAuthCodeReceived, `{"job_id":"j","appid":"a","code":"SECRET CODE"}`, events.ErrSchema, []string{"/code: must match"}},
		{"bad state", events.SubjectOAuthCodeReceived, `{"job_id":"j","appid":"a","code":"c","state":"a-b"}`, events.ErrSchema, []string{"/state: must match ^[a-zA-Z0-9]{0,128}$"}},
		{"several problems", events.SubjectUserLookup, `{"appid":7,"openid":"o","lang":"de","x":1}`, events.ErrSchema, []string{"/job_id: missing required property", "/appid: must be string, got number", "/lang: must be one of", "/x: unknown property"}},
		{"duplicate key, wrong type first", events.SubjectUserLookup, `{"job_id":123,"job_id":"j1","appid":"wx1","openid":"o1"}`, events.ErrSchema, []string{"user.lookup: /job_id: appears twice"}},
		{"duplicate key, same type", events.SubjectUserLookup, `{"job_id":"j1","job_id":"j2","appid":"wx1","openid":"o1"}`, events.ErrSchema, []string{"/job_id: appears twice"}},
		{"duplicate key, object then string", events.SubjectUserLookup, `{"job_id":"j1","appid":"wx1","openid":"o1","lang":{"a":1},"lang":"en"}`, events.ErrSchema, []string{"/lang: appears twice"}},
		{"duplicate key, escaped spelling", events.SubjectUserLookup, `{"job_id":"j1","job\u005fid":"j2","appid":"wx1","openid":"o1"}`, events.ErrSchema, []string{"/job_id: appears twice"}},
		{"duplicate key inside a nested object", events.SubjectTokenConflict, `{"x":{"a":1,"a":2}}`, events.ErrSchema, []string{"/x/a: appears twice"}},
		{"oversized", events.SubjectUserLookup, big, events.ErrTooLarge, []string{fmt.Sprintf("user.lookup: job is %d bytes, limit 16384", len(big))}},
		{"oversized non-JSON", events.SubjectUserLookup, strings.Repeat("x", events.MaxJobSize+1), events.ErrTooLarge, []string{"job is 16385 bytes, limit 16384"}},
		{"oversized result", events.SubjectTokenConflict, big, events.ErrTooLarge, []string{"token.conflict: message is"}},
		{"bad date-time", events.SubjectTokenRefreshFailed, `{"appid":"a","errcode":-1,"next_attempt_at":"tomorrow"}`, events.ErrSchema, []string{"/next_attempt_at: must be a valid date-time"}},
		{"negative version", events.SubjectTokenInvalidated, `{"appid":"a","version":-1,"errcode":40001}`, events.ErrSchema, []string{"/version: must be >= 0"}},
		{"fractional version", events.SubjectTokenInvalidated, `{"appid":"a","version":1.5,"errcode":40001}`, events.ErrSchema, []string{"/version: must be integer, got number"}},
		{"bad reason", events.SubjectTokenRefreshed, `{"appid":"a","version":1,"expires_at":"2025-01-01T00:00:00Z","fetched_at":"2025-01-01T00:00:00Z","reason":"because"}`, events.ErrSchema, []string{"/reason: must be one of startup, scheduled, invalidated, manual, takeover"}},
		{"bad error kind", events.SubjectUserProfileFailed, `{"job_id":"","job_subject":"user.lookup","appid":"","error":{"kind":"oops","retryable":false},"attempts":1,"failed_at":"2025-01-01T00:00:00Z"}`, events.ErrSchema, []string{"/error/kind: must be one of invalid_job, wechat, quota, token_unavailable, config, timeout, internal"}},
		{"missing nested retryable", events.SubjectUserProfileFailed, `{"job_id":"","job_subject":"user.lookup","appid":"","error":{"kind":"internal"},"attempts":1,"failed_at":"2025-01-01T00:00:00Z"}`, events.ErrSchema, []string{"/error/retryable: missing required property"}},
		{"bad subscribe", events.SubjectUserProfile, `{"job_id":"j","appid":"a","openid":"o","source":"user.info","subscribe":2,"completed_at":"2025-01-01T00:00:00Z"}`, events.ErrSchema, []string{"/subscribe: must be one of 0, 1"}},
		{"odd property name", events.SubjectUserLookup, `{"job_id":"j","appid":"a","openid":"o","a b\n":1}`, events.ErrSchema, []string{`/"a b\n": unknown property`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := events.Validate(tt.subject, []byte(tt.data))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("error %q does not match %v", err, tt.want)
			}
			assertOneKind(t, err)
			var ve *events.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %T is not a *ValidationError", err)
			}
			if ve.Subject != tt.subject || len(ve.Problems) == 0 {
				t.Errorf("ValidationError = %+v", ve)
			}
			for _, m := range tt.msgs {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not contain %q", err, m)
				}
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error repeats a value from the message: %q", err)
			}
		})
	}
}

// assertOneKind checks that err matches exactly one sentinel.
func assertOneKind(t *testing.T, err error) {
	t.Helper()
	n := 0
	for _, s := range []error{events.ErrNotJSON, events.ErrTooLarge, events.ErrSchema, events.ErrUnknownSubject} {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("error %q matches %d sentinels, want 1", err, n)
	}
}

func TestValidateUnknownSubject(t *testing.T) {
	for _, s := range []string{"", "user", "wx.user.lookup", "deadletter.user.lookup", "user.lookup.schema.json"} {
		err := events.Validate(s, []byte(goodLookup))
		if !errors.Is(err, events.ErrUnknownSubject) {
			t.Errorf("Validate(%q) = %v, want ErrUnknownSubject", s, err)
		}
		assertOneKind(t, err)
	}
}

func TestDecodeUserLookup(t *testing.T) {
	got, err := events.DecodeUserLookup([]byte(goodLookup))
	if err != nil {
		t.Fatal(err)
	}
	want := events.UserLookup{JobID: "j-1", AppID: "wx0123456789abcdef", OpenID: "oAbC_dEf-1", Lang: "zh_CN"}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	for _, bad := range []struct {
		data string
		want error
	}{
		{``, events.ErrNotJSON},
		{`{"job_id":"j","appid":"a"}`, events.ErrSchema},
		{`{"job_id":"j","appid":"a","openid":"o","code":"c"}`, events.ErrSchema},
		{strings.Repeat(" ", events.MaxJobSize+1), events.ErrTooLarge},
	} {
		v, err := events.DecodeUserLookup([]byte(bad.data))
		if !errors.Is(err, bad.want) {
			t.Errorf("DecodeUserLookup(%.40q) error = %v, want %v", bad.data, err, bad.want)
		}
		if v != (events.UserLookup{}) {
			t.Errorf("DecodeUserLookup(%.40q) returned %+v with an error", bad.data, v)
		}
	}
}

func TestDecodeOAuthCodeReceived(t *testing.T) {
	data := `{"job_id":"cb-9","appid":"wx1","code":"0a1B~c","state":"xyz","lang":"en"}`
	got, err := events.DecodeOAuthCodeReceived([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := events.OAuthCodeReceived{JobID: "cb-9", AppID: "wx1", Code: "0a1B~c", State: "xyz", Lang: "en"}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// A user.lookup job is not an OAuth job.
	if _, err := events.DecodeOAuthCodeReceived([]byte(goodLookup)); !errors.Is(err, events.ErrSchema) {
		t.Errorf("user.lookup job decoded as oauth.code.received: %v", err)
	}
	// The code is a credential: it is never echoed in an error.
	_, err = events.DecodeOAuthCodeReceived([]byte(`{"job_id":"j","appid":"a","code":"TOPSECRET","lang":"xx"}`))
	if err == nil || strings.Contains(err.Error(), "TOPSECRET") {
		t.Errorf("error = %v", err)
	}
}

func TestPeekJobIdentity(t *testing.T) {
	long := strings.Repeat("j", 129)
	tests := []struct {
		data, jobID, appID string
	}{
		{goodLookup, "j-1", "wx0123456789abcdef"},
		{`{"job_id":"j","appid":"a","lang":"fr","x":[1,2]}`, "j", "a"},
		{`{"job_id":"j"}`, "j", ""},
		{`{"appid":"a"}`, "", "a"},
		{`{"job_id":42,"appid":["a"]}`, "", ""},
		{`{"job_id":null,"appid":"a"}`, "", "a"},
		{`{"job_id":"has space","appid":"a"}`, "", "a"},
		{`{"job_id":"j\r\nNats-Msg-Id: x","appid":"a"}`, "", "a"},
		{`{"job_id":"` + long + `","appid":"a"}`, "", "a"},
		{`{"job_id":"j","job_id":"k"}`, "k", ""},
		{`{"job_id":"j","appid":"a"} trailing`, "j", "a"},
		{`[{"job_id":"j"}]`, "", ""},
		{`not json`, "", ""},
		{``, "", ""},
		{`{"job_id":"j","appid":"a","pad":"` + strings.Repeat("x", events.MaxJobSize) + `"}`, "", ""},
	}
	for _, tt := range tests {
		j, a := events.PeekJobIdentity([]byte(tt.data))
		if j != tt.jobID || a != tt.appID {
			t.Errorf("PeekJobIdentity(%.50q) = %q, %q; want %q, %q", tt.data, j, a, tt.jobID, tt.appID)
		}
	}
}

// The identity PeekJobIdentity returns always fits a user.profile.failed
// result, and agrees with the job schemas' patterns.
func TestPeekJobIdentityFitsFailureSchema(t *testing.T) {
	for _, subject := range []string{events.SubjectUserLookup, events.SubjectOAuthCodeReceived} {
		raw, _ := schemas.Raw(subject)
		var s struct {
			Properties map[string]struct{ Pattern string } `json:"properties"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatal(err)
		}
		for prop, probe := range map[string][]string{
			"job_id": {"a", "A.b:c-d_e", "a b", "", strings.Repeat("x", 128), strings.Repeat("x", 129), "ü", "a\n"},
			"appid":  {"wx0123456789abcdef", "a-b_c", "a.b", "", strings.Repeat("x", 64), strings.Repeat("x", 65), "a:b"},
		} {
			re := regexp.MustCompile(s.Properties[prop].Pattern)
			for _, p := range probe {
				data, _ := json.Marshal(map[string]string{prop: p})
				j, a := events.PeekJobIdentity(data)
				got := map[string]string{"job_id": j, "appid": a}[prop]
				if want := re.MatchString(p); (got == p && p != "") != want {
					t.Errorf("%s %s %q: peek returned %q, schema match %v", subject, prop, p, got, want)
				}
			}
		}
	}
}

func TestValidateConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 200 {
				good := fmt.Sprintf(`{"job_id":"j-%d-%d","appid":"a","openid":"o"}`, i, n)
				if err := events.Validate(events.SubjectUserLookup, []byte(good)); err != nil {
					t.Error(err)
					return
				}
				if err := events.Validate(events.SubjectUserLookup, []byte(`{"job_id":1}`)); !errors.Is(err, events.ErrSchema) {
					t.Errorf("got %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
