package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// TestLookupTwiceAgainstWxhubRun: the README's program against a real
// `wxhub run` with the demo app: the first run gets the profile, the second
// (same job_id, so PubAck.Duplicate) reads the same result back from
// WX_RESULTS instead of waiting forever.
func TestLookupTwiceAgainstWxhubRun(t *testing.T) {
	run := wxhubtest.StartRun(t)
	if run.AppID != "wxdemo0000000001" || run.OpenID != "oDemo6_bmjrPTlm6_2sgVt7hMZOA" {
		t.Fatalf("wxhub run's demo app is %s/%s; the example hard-codes wxdemo0000000001/oDemo6_bmjrPTlm6_2sgVt7hMZOA", run.AppID, run.OpenID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var first []byte
	for i, want := range []string{"fresh", "duplicate"} {
		subject, body, err := lookup(ctx, run.NATSURL, "order-42-lookup", run.AppID, run.OpenID)
		if err != nil {
			t.Fatalf("run %d (%s): %v", i+1, want, err)
		}
		var p struct{ JobID, OpenID, Source string }
		if err := json.Unmarshal(body, &p); err != nil || subject != "user.profile" {
			t.Fatalf("run %d (%s): %s %s (%v)", i+1, want, subject, body, err)
		}
		if i == 0 {
			first = body
		} else if string(body) != string(first) {
			t.Fatalf("the duplicate run read %s, the first got %s", body, first)
		}
	}
	// A job that fails still ends in its one result.
	subject, body, err := lookup(ctx, run.NATSURL, "order-43-lookup", run.AppID, "o-not-a-follower")
	if err != nil || subject != "user.profile.failed" {
		t.Fatalf("lookup of a stranger: %s %s %v", subject, body, err)
	}
}
