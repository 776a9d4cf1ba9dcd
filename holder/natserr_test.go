package holder

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/internal/cas"
	"github.com/wxhub/wxhub/internal/wxhubtest"
)

// shrinkBucket makes JetStream refuse every write to bucket with a real
// API error (10054, message size exceeds maximum allowed), which nats.go
// reports as "nats: nats: API error: ...".
func shrinkBucket(t *testing.T, e *testEnv, bucket string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.nats.JS.Stream(ctx, "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxMsgSize = 8
	if _, err := e.nats.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// A NATS refusal reaches the holder's logs and errors saying "nats: "
// once: nats.go wraps JetStream's API error, which says "nats: API
// error: ..." itself, in another "nats: ". errors.As still finds the
// API error.
func TestNATSRefusalsSayNATSOnce(t *testing.T) {
	t.Parallel()
	const refusal = "nats: API error: code=400 err_code=10054 "
	noDoubled := func(t *testing.T, where, s string) {
		t.Helper()
		for _, line := range strings.Split(s, "\n") {
			if strings.Contains(line, "nats: nats: ") {
				t.Errorf("%s says \"nats: nats: \": %s", where, line)
			}
		}
	}

	t.Run("the clock probe's error", func(t *testing.T) {
		t.Parallel()
		e := newTestEnv(t)
		cfg := e.config("probe-of-a-holder", e.newApp(events.ModeToken))
		cfg.MaxClockSkew = 0
		h, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := h.open(ctx); err != nil {
			t.Fatal(err)
		}
		shrinkBucket(t, e, events.BucketLeases)
		err = h.probeClock(ctx)
		if err == nil {
			t.Fatal("the probe was stored in a bucket that refuses it")
		}
		if want := "holder: clock probe: " + refusal; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("error %q, want it to start %q", err, want)
		}
		noDoubled(t, "the error", err.Error())
		var api *jetstream.APIError
		if !errors.As(err, &api) || api.ErrorCode != jetstream.JSErrCodeStreamMessageExceedsMaximum {
			t.Errorf("errors.As(*jetstream.APIError) lost: %v", api)
		}
	})

	t.Run("a lost compare-and-swap still matches", func(t *testing.T) {
		t.Parallel()
		e := newTestEnv(t)
		app := e.newApp(events.ModeToken)
		h, err := New(e.config("cas", app))
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := h.open(ctx); err != nil {
			t.Fatal(err)
		}
		rev, err := h.tokens.Create(ctx, app.AppID, []byte("{}"))
		if err != nil {
			t.Fatal(err)
		}
		_, created := h.tokens.Create(ctx, app.AppID, []byte("{}"))
		_, updated := h.tokens.Update(ctx, app.AppID, []byte("{}"), rev+7)
		for what, err := range map[string]error{"Create over a key": created, "Update at a stale revision": updated} {
			if !cas.Lost(err) {
				t.Errorf("%s: cas.Lost(%v) is false", what, err)
			}
			var api *jetstream.APIError
			if !errors.As(err, &api) || api.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
				t.Errorf("%s: errors.As(*jetstream.APIError) lost: %v", what, err)
			}
			if !strings.HasPrefix(err.Error(), "nats: API error: ") {
				t.Errorf("%s: error %q", what, err)
			}
		}
	})

	t.Run("the log line of a refused quota count", func(t *testing.T) {
		t.Parallel()
		e := newTestEnv(t)
		shrinkBucket(t, e, events.BucketQuota)
		e.start(e.config("h1", e.newApp(events.ModeToken)), nil)
		const msg = "counting the fetch in wx_quota failed (NATS); retrying"
		var line string
		wxhubtest.Eventually(t, 10*time.Second, "the refused count logged", func() bool {
			for _, l := range strings.Split(e.logs.String(), "\n") {
				var rec struct{ Msg, Error string }
				if json.Unmarshal([]byte(l), &rec) == nil && rec.Msg == msg {
					line = rec.Error
					return true
				}
			}
			return false
		})
		if !strings.HasPrefix(line, refusal) {
			t.Errorf("logged error %q, want it to start %q", line, refusal)
		}
		noDoubled(t, "the holder's log", e.logs.String())
	})
}
