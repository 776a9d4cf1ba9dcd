package events_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/schemas"
)

func intp(i int) *int { return &i }

func uint64p(v uint64) *uint64 { return &v }

var (
	t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)
	t1 = t0.Add(7200 * time.Second).In(events.ChinaTZ)
)

// fullyPopulated holds, per subject, a value of its Go payload type with
// every field set to a realistic non-zero value.
var fullyPopulated = map[string]any{
	events.SubjectUserLookup: events.UserLookup{
		JobID: "job-1:a.b_c", AppID: "wx0123456789abcdef", OpenID: "oAbC-dEf_0123456789abcdefghij", Lang: "en",
	},
	events.SubjectOAuthCodeReceived: events.OAuthCodeReceived{
		JobID: "cb:2025-03-14:42", AppID: "wx0123456789abcdef", Code: "061AbCdE0xYz~!@#$%^&*()", State: "STATE123", Lang: "zh_TW",
	},
	events.SubjectOAuthUserInfo: events.OAuthUserInfo{
		JobID: "refresh-42", AppID: "wx0123456789abcdef", OpenID: "oAbC-dEf_0123456789abcdefghij", Lang: "zh_CN",
	},
	events.SubjectUserProfile: events.UserProfile{
		JobID: "job-1", AppID: "wx0123456789abcdef", OpenID: "oAbC-dEf_0123456789abcdefghij",
		Source: events.SourceSNSUserInfo, UnionID: "o6_bmasdasdsad6_2sgVt7hMZOPfL",
		Subscribe: intp(1), SubscribeTime: 1382694957, SubscribeScene: "ADD_SCENE_QR_CODE",
		QRScene: 98765, QRSceneStr: "promo-2025", Remark: "vip", TagIDList: []int64{128, 2},
		Language: "zh_CN", Nickname: "小明 🐼", HeadImgURL: "https://thirdwx.qlogo.cn/mmopen/abc/132",
		Sex: intp(2), Province: "广东", City: "广州", Country: "中国", Privilege: []string{"PRIVILEGE1", "PRIVILEGE2"},
		Scope: "snsapi_userinfo", IsSnapshotUser: 1, CompletedAt: t0,
	},
	events.SubjectUserProfileFailed: events.UserProfileFailed{
		JobID: "job-1", JobSubject: "wx.user.lookup", AppID: "wx0123456789abcdef",
		Error:    events.FailureError{Kind: events.KindWeChat, ErrCode: 40003, ErrMsg: "invalid openid rid: 617682e0-09059ac5-34a8e2ea", Retryable: true},
		Attempts: 3, FailedAt: t1,
	},
	events.SubjectTokenRefreshed: events.TokenRefreshed{
		AppID: "wx0123456789abcdef", Version: 18446744073709551615, ExpiresAt: t1, FetchedAt: t0,
		Reason: events.ReasonInvalidated, Holder: "holder-a/pid-7",
	},
	events.SubjectTokenInvalidated: events.TokenInvalidated{
		AppID: "wx0123456789abcdef", Version: 7, ErrCode: 40001, Reporter: "worker-3",
	},
	events.SubjectTokenRefreshFailed: events.TokenRefreshFailed{
		AppID: "wx0123456789abcdef", ErrCode: -1, ErrMsg: "system error", NextAttemptAt: t1,
	},
	events.SubjectTokenConflict: events.TokenConflict{
		AppID: "wx0123456789abcdef", Version: 9, Detail: "3 reports against a token fetched 2s ago",
	},
	events.SubjectTokenRefreshRequest: events.TokenRefreshRequest{AppID: "wx0123456789abcdef", Requester: "wxhub-cli@ops-1", Version: uint64p(7), TimeoutMS: 15000},
}

// minimal holds, per subject, a value with only the required fields set
// (and the others at their zero value).
var minimal = map[string]any{
	events.SubjectUserLookup:          events.UserLookup{JobID: "j", AppID: "a", OpenID: "o"},
	events.SubjectOAuthCodeReceived:   events.OAuthCodeReceived{JobID: "j", AppID: "a", Code: "c"},
	events.SubjectOAuthUserInfo:       events.OAuthUserInfo{JobID: "j", AppID: "a", OpenID: "o"},
	events.SubjectUserProfile:         events.UserProfile{JobID: "j", AppID: "a", OpenID: "o", Source: events.SourceSNSOAuth2},
	events.SubjectUserProfileFailed:   events.UserProfileFailed{JobSubject: events.SubjectUserLookup, Error: events.FailureError{Kind: events.KindInvalidJob}},
	events.SubjectTokenRefreshed:      events.TokenRefreshed{AppID: "a", Reason: events.ReasonStartup},
	events.SubjectTokenInvalidated:    events.TokenInvalidated{AppID: "a"},
	events.SubjectTokenRefreshFailed:  events.TokenRefreshFailed{AppID: "a"},
	events.SubjectTokenConflict:       events.TokenConflict{AppID: "a"},
	events.SubjectTokenRefreshRequest: events.TokenRefreshRequest{AppID: "a"},
}

func TestEverySubjectHasAGoType(t *testing.T) {
	for _, name := range schemas.Names() {
		if _, ok := fullyPopulated[name]; !ok {
			t.Errorf("schema %s has no Go payload in the tests", name)
		}
	}
	if len(fullyPopulated) != len(schemas.Names()) {
		t.Errorf("%d Go payloads, %d schemas", len(fullyPopulated), len(schemas.Names()))
	}
}

// (a) What the Go types marshal to validates against the schemas.
func TestGoValuesValidate(t *testing.T) {
	for _, set := range []struct {
		name   string
		values map[string]any
	}{{"full", fullyPopulated}, {"minimal", minimal}} {
		for subject, v := range set.values {
			t.Run(set.name+"/"+subject, func(t *testing.T) {
				b, err := json.Marshal(v)
				if err != nil {
					t.Fatal(err)
				}
				if err := events.Validate(subject, b); err != nil {
					t.Fatalf("%s\n%s", err, b)
				}
			})
		}
	}
}

// A fully populated value sets every field: otherwise (a) would not cover
// the omitempty ones.
func TestFullyPopulatedSetsEveryField(t *testing.T) {
	for subject, v := range fullyPopulated {
		b, _ := json.Marshal(v)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		for _, f := range jsonFields(reflect.TypeOf(v)) {
			if _, ok := m[f.name]; !ok {
				t.Errorf("%s: fully populated value leaves %q out", subject, f.name)
			}
		}
	}
}

type jsonField struct {
	name      string
	omitempty bool
	typ       reflect.Type
}

func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if !f.IsExported() || tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		out = append(out, jsonField{name: name, omitempty: slices.Contains(strings.Split(opts, ","), "omitempty"), typ: f.Type})
	}
	return out
}

// objectSchema is the part of a (sub)schema the drift checks read.
type objectSchema struct {
	Required   []string                `json:"required"`
	Properties map[string]objectSchema `json:"properties"`
	Type       any                     `json:"type"`
}

func loadSchema(t *testing.T, subject string) objectSchema {
	t.Helper()
	raw, err := schemas.Raw(subject)
	if err != nil {
		t.Fatal(err)
	}
	var s objectSchema
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

var timeType = reflect.TypeFor[time.Time]()

// (b) and (c): the schema's properties and the Go struct's json fields are
// the same set; a required property is a Go field that is always written
// (no omitempty, unless it is a struct, which encoding/json never omits);
// nested objects are compared the same way.
func TestSchemaAndGoTypeAgree(t *testing.T) {
	for subject, v := range fullyPopulated {
		t.Run(subject, func(t *testing.T) {
			compare(t, subject, loadSchema(t, subject), reflect.TypeOf(v))
		})
	}
}

func compare(t *testing.T, where string, s objectSchema, typ reflect.Type) {
	t.Helper()
	fields := map[string]jsonField{}
	for _, f := range jsonFields(typ) {
		fields[f.name] = f
		if _, ok := s.Properties[f.name]; !ok {
			t.Errorf("%s: Go field %s.%s (json %q) is not in the schema", where, typ.Name(), f.name, f.name)
		}
	}
	for name := range s.Properties {
		if _, ok := fields[name]; !ok {
			t.Errorf("%s: schema property %q has no field in Go type %s", where, name, typ.Name())
		}
	}
	for _, r := range s.Required {
		f, ok := fields[r]
		if !ok {
			continue // reported above
		}
		if f.omitempty && f.typ.Kind() != reflect.Struct {
			t.Errorf("%s: required property %q is omitempty in Go type %s: a zero value would drop it", where, r, typ.Name())
		}
		if f.typ.Kind() == reflect.Pointer {
			t.Errorf("%s: required property %q is a pointer in Go type %s: nil would marshal as null", where, r, typ.Name())
		}
	}
	for name, f := range fields {
		if f.typ.Kind() == reflect.Struct && f.typ != timeType {
			sub, ok := s.Properties[name]
			if ok {
				compare(t, where+"/"+name, sub, f.typ)
			}
		}
	}
}

// Result and token-event schemas are closed: a leaked token fails.
func TestCredentialsNeverValidate(t *testing.T) {
	for subject, v := range fullyPopulated {
		for _, key := range []string{"access_token", "refresh_token", "secret"} {
			b, _ := json.Marshal(v)
			var m map[string]any
			_ = json.Unmarshal(b, &m)
			m[key] = "ACCESS_TOKEN_VALUE"
			b, _ = json.Marshal(m)
			err := events.Validate(subject, b)
			if err == nil {
				t.Errorf("%s with %s validated", subject, key)
				continue
			}
			if want := "/" + key + ": unknown property"; !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not say %q", subject, err, want)
			}
			if strings.Contains(err.Error(), "ACCESS_TOKEN_VALUE") {
				t.Errorf("%s: error repeats the value: %q", subject, err)
			}
		}
	}
	// Nested too.
	b, _ := json.Marshal(fullyPopulated[events.SubjectUserProfileFailed])
	b = []byte(strings.Replace(string(b), `"retryable":true`, `"retryable":true,"access_token":"T"`, 1))
	if err := events.Validate(events.SubjectUserProfileFailed, b); err == nil || !strings.Contains(err.Error(), "/error/access_token: unknown property") {
		t.Errorf("nested access_token: got %v", err)
	}
}

// goValue returns a new pointer to the Go payload type of subject.
func goValue(subject string) any {
	return reflect.New(reflect.TypeOf(fullyPopulated[subject])).Interface()
}

// Integer properties have bounds that fit the Go field's type, so a value
// that validates always decodes.
func TestIntegerBoundsFitGoTypes(t *testing.T) {
	type intSchema struct {
		Type       string                     `json:"type"`
		Minimum    *json.Number               `json:"minimum"`
		Maximum    *json.Number               `json:"maximum"`
		Enum       []any                      `json:"enum"`
		Items      *intSchema                 `json:"items"`
		Properties map[string]json.RawMessage `json:"properties"`
	}
	var check func(where string, props map[string]json.RawMessage, typ reflect.Type)
	check = func(where string, props map[string]json.RawMessage, typ reflect.Type) {
		for _, f := range jsonFields(typ) {
			var s intSchema
			dec := json.NewDecoder(strings.NewReader(string(props[f.name])))
			dec.UseNumber()
			if err := dec.Decode(&s); err != nil {
				t.Fatalf("%s/%s: %v", where, f.name, err)
			}
			ft := f.typ
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
				ft = ft.Elem()
				if s.Items != nil {
					s = *s.Items
				}
			}
			if ft.Kind() == reflect.Struct && ft != timeType {
				check(where+"/"+f.name, s.Properties, ft)
				continue
			}
			var lo, hi string
			switch ft.Kind() {
			case reflect.Int, reflect.Int32:
				lo, hi = "-2147483648", "2147483647" // int may be 32 bits
			case reflect.Int64:
				lo, hi = "-9223372036854775808", "9223372036854775807"
			case reflect.Uint64:
				lo, hi = "0", "18446744073709551615"
			default:
				continue
			}
			if s.Type != "integer" {
				t.Errorf("%s/%s: Go %s but schema type %q", where, f.name, ft, s.Type)
				continue
			}
			var vals []json.Number
			if len(s.Enum) > 0 {
				for _, e := range s.Enum {
					vals = append(vals, json.Number(fmt.Sprint(e)))
				}
			} else if s.Minimum == nil || s.Maximum == nil {
				t.Errorf("%s/%s: integer without minimum and maximum", where, f.name)
				continue
			} else {
				vals = []json.Number{*s.Minimum, *s.Maximum}
			}
			for _, v := range vals {
				if !fits(string(v), lo, hi) {
					t.Errorf("%s/%s: bound %s does not fit Go %s", where, f.name, v, ft)
				}
			}
		}
	}
	for subject := range fullyPopulated {
		var top struct {
			Properties map[string]json.RawMessage `json:"properties"`
		}
		raw, _ := schemas.Raw(subject)
		if err := json.Unmarshal(raw, &top); err != nil {
			t.Fatal(err)
		}
		check(subject, top.Properties, reflect.TypeOf(fullyPopulated[subject]))
	}
}

func fits(v, lo, hi string) bool {
	x, ok1 := new(big.Int).SetString(v, 10)
	l, _ := new(big.Int).SetString(lo, 10)
	h, _ := new(big.Int).SetString(hi, 10)
	return ok1 && x.Cmp(l) >= 0 && x.Cmp(h) <= 0
}

// Values at the edges of the schema's bounds decode into the Go types.
func TestDecodeEdges(t *testing.T) {
	tests := []struct {
		subject, data string
		want          error
		msg           string
	}{
		{events.SubjectTokenInvalidated, `{"appid":"a","version":18446744073709551615,"errcode":-2147483648}`, nil, ""},
		{events.SubjectTokenInvalidated, `{"appid":"a","version":18446744073709551616,"errcode":1}`, events.ErrSchema, "/version: must be <= 18446744073709551615"},
		{events.SubjectTokenInvalidated, `{"appid":"a","version":1,"errcode":2147483648}`, events.ErrSchema, "/errcode: must be <= 2147483647"},
		{events.SubjectTokenInvalidated, `{"appid":"a","version":1e400,"errcode":1}`, events.ErrSchema, "/version: must be <="},
		{events.SubjectTokenInvalidated, `{"appid":"a","version":1.0,"errcode":40001}`, events.ErrSchema, "/version: must be a plain integer that fits uint64"},
		{events.SubjectTokenInvalidated, `{"appid":"a","version":2,"errcode":4e4}`, events.ErrSchema, "/errcode: must be a plain integer that fits int"},
		{events.SubjectUserProfileFailed, `{"job_id":"","job_subject":"user.lookup","appid":"","error":{"kind":"internal","retryable":false,"errcode":1.0},"attempts":1,"failed_at":"2025-01-01T00:00:00Z"}`, events.ErrSchema, "/error/errcode: must be a plain integer"},
		{events.SubjectTokenRefreshFailed, `{"appid":"a","errcode":1,"next_attempt_at":"2016-12-31T23:59:60Z"}`, events.ErrSchema, "/next_attempt_at: must match"},
		{events.SubjectTokenRefreshFailed, `{"appid":"a","errcode":1,"next_attempt_at":"2025-01-01t00:00:00z"}`, events.ErrSchema, "/next_attempt_at: must match"},
		{events.SubjectTokenRefreshFailed, `{"appid":"a","errcode":1,"next_attempt_at":"2025-02-30T00:00:00Z"}`, events.ErrSchema, "/next_attempt_at: must be a valid date-time"},
		{events.SubjectTokenRefreshFailed, `{"appid":"a","errcode":1,"next_attempt_at":"2025-01-01T00:00:00.123456789+08:00"}`, nil, ""},
	}
	for _, tt := range tests {
		v := goValue(tt.subject)
		err := events.Decode(tt.subject, []byte(tt.data), v)
		if tt.want == nil {
			if err != nil {
				t.Errorf("%s: %v", tt.data, err)
			}
			continue
		}
		if !errors.Is(err, tt.want) || !strings.Contains(fmt.Sprint(err), tt.msg) {
			t.Errorf("%s: error %v, want %v containing %q", tt.data, err, tt.want, tt.msg)
		}
	}
	if err := events.Decode("nope", []byte(`{}`), new(events.UserLookup)); !errors.Is(err, events.ErrUnknownSubject) {
		t.Errorf("unknown subject: %v", err)
	}
}
