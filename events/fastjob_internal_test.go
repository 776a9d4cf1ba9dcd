package events

import (
	"bytes"
	"encoding/json"
	"testing"
)

// fullUserLookup and fullOAuth are the schema path alone.
func fullUserLookup(data []byte) (UserLookup, error) {
	var v UserLookup
	return v, decode(SubjectUserLookup, data, &v)
}

func fullOAuth(data []byte) (OAuthCodeReceived, error) {
	var v OAuthCodeReceived
	return v, decode(SubjectOAuthCodeReceived, data, &v)
}

// fullPeek is PeekJobIdentity without the fast path.
func fullPeek(data []byte) (string, string) {
	var fields map[string]json.RawMessage
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&fields); err != nil {
		return "", ""
	}
	str := func(key string, ok func([]byte) bool) string {
		var s string
		if raw, found := fields[key]; !found || json.Unmarshal(raw, &s) != nil || !ok([]byte(s)) {
			return ""
		}
		return s
	}
	return str("job_id", matchJobID), str("appid", matchID64)
}

var fastSeeds = []string{
	`{"job_id":"j-1","appid":"wx0123456789abcdef","openid":"oAbC_dEf-1","lang":"zh_CN"}`,
	` { "job_id" : "j-1" , "appid":"a", "openid":"o" } ` + "\n",
	`{"job_id":"j-1","appid":"a","openid":"o","lang":"fr"}`,
	`{"job_id":"j-1","appid":"a","openid":"o","x":"y"}`,
	`{"job_id":"j-1","appid":"a"}`,
	`{"JOB_ID":"j-1","appid":"a","openid":"o"}`,
	`{"job_id":"j-1","job_id":"j 2","appid":"a","openid":"o"}`,
	`{"job_id":"j\u002d1","appid":"a","openid":"o"}`,
	`{"job_id":"j-1","appid":"a","openid":"o","lang":null}`,
	`{"job_id":"j-1","appid":"a","openid":"o"} x`,
	`{"job_id":"j-1","appid":"a","openid":"o"}{}`,
	`{"job_id":"","appid":"a","openid":"o"}`,
	`{"job_id":"cb-1","appid":"wx0123456789abcdef","code":"061AbC","state":"s1","lang":"en"}`,
	`{"job_id":"cb-1","appid":"a","code":"!~{}","state":""}`,
	`{"job_id":"cb-1","appid":"a","code":"a b"}`,
	`{"job_id":"cb-1","appid":"a","code":"c","state":"s-1"}`,
	`{}`, `[]`, `"x"`, ``, `{"job_id":1}`, `{"job_id":"j","appid":"a",}`,
}

// FuzzFastJob checks that the fast paths agree with the schema path: what
// they accept the schema accepts with the same value, and PeekJobIdentity
// gives the same identity either way.
func FuzzFastJob(f *testing.F) {
	for _, s := range fastSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkFastEquivalent(t, data)
	})
}

func checkFastEquivalent(t *testing.T, data []byte) {
	t.Helper()
	if v, ok := fastUserLookup(data); ok {
		if full, err := fullUserLookup(data); err != nil || full != v {
			t.Fatalf("user.lookup fast path accepted %q as %+v; schema path: %+v, %v", data, v, full, err)
		}
	}
	if v, ok := fastOAuthCodeReceived(data); ok {
		if full, err := fullOAuth(data); err != nil || full != v {
			t.Fatalf("oauth.code.received fast path accepted %q as %+v; schema path: %+v, %v", data, v, full, err)
		}
	}
	if len(data) <= MaxJobSize {
		if j, a, ok := fastPeek(data); ok {
			if fj, fa := fullPeek(data); fj != j || fa != a {
				t.Fatalf("fast peek of %q = %q, %q; full: %q, %q", data, j, a, fj, fa)
			}
		}
	}
}

// TestFastJobPaths pins which seeds take the fast path, so a fast path
// that quietly stops working (everything falling back) fails too.
func TestFastJobPaths(t *testing.T) {
	for _, tc := range []struct {
		data          string
		lookup, oauth bool
	}{
		{fastSeeds[0], true, false},
		{fastSeeds[1], true, false},
		{fastSeeds[2], false, false},
		{fastSeeds[5], false, false},
		{fastSeeds[6], false, false},
		{fastSeeds[7], false, false},
		{fastSeeds[12], false, true},
		{fastSeeds[13], false, true},
		{fastSeeds[15], false, false},
	} {
		t.Run(tc.data, func(t *testing.T) {
			checkFastEquivalent(t, []byte(tc.data))
			if _, ok := fastUserLookup([]byte(tc.data)); ok != tc.lookup {
				t.Errorf("user.lookup fast path: %v, want %v", ok, tc.lookup)
			}
			if _, ok := fastOAuthCodeReceived([]byte(tc.data)); ok != tc.oauth {
				t.Errorf("oauth fast path: %v, want %v", ok, tc.oauth)
			}
		})
	}
}

// The fast paths copy the job once: its fields are slices of one string.
func TestFastJobAllocatesOnce(t *testing.T) {
	job := []byte(`{"job_id":"j-1","appid":"wx0123456789abcdef","openid":"o0001","lang":"en"}`)
	for _, tc := range []struct {
		name string
		run  func()
	}{
		{"user.lookup", func() {
			if _, ok := fastUserLookup(job); !ok {
				t.Fatal("fast path refused a plain job")
			}
		}},
		{"peek", func() {
			if id, app, ok := fastPeek(job); !ok || id != "j-1" || app != "wx0123456789abcdef" {
				t.Fatalf("peek = %q, %q, %v", id, app, ok)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, tc.run); n != 1 {
				t.Errorf("%v allocations per job, want 1", n)
			}
		})
	}
}
