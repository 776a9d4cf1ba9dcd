package main

import (
	"context"
	"testing"
	"time"

	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// TestReportGetsANewerToken: against a real `wxhub run`, the program sees
// the holder's token, reports it as rejected, and returns with a newer
// version, never printing the token itself.
func TestReportGetsANewerToken(t *testing.T) {
	run := wxhubtest.StartRun(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var versions []uint64
	err := watch(ctx, run.NATSURL, run.AppID, true, func(r *tokenRecord) {
		if r.AccessToken == "" {
			t.Errorf("version %d has no token", r.Version)
		}
		versions = append(versions, r.Version)
	})
	if err != nil {
		t.Fatalf("watch: %v (versions seen %v)", err, versions)
	}
	if len(versions) < 2 || versions[len(versions)-1] <= versions[0] {
		t.Fatalf("versions seen %v, want a newer one after the report", versions)
	}
}
