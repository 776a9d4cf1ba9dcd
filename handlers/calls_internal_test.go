package handlers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wxhub/wxhub/events"
	"github.com/wxhub/wxhub/wechat"
)

// fakeTokens is a TokenSource whose record the test (or a fake holder)
// replaces; WaitNewer wakes on every replacement.
type fakeTokens struct {
	mu      sync.Mutex
	rec     events.TokenRecord
	ok      bool
	changed chan struct{}
	onWait  func() // called once, as a WaitNewer is about to wait (set with whenWaiting)
}

// whenWaiting makes the next WaitNewer that would wait call fn first (a
// holder storing a token as a job starts waiting).
func (f *fakeTokens) whenWaiting(fn func()) {
	f.mu.Lock()
	f.onWait = fn
	f.mu.Unlock()
}

func newFakeTokens(rec *events.TokenRecord) *fakeTokens {
	f := &fakeTokens{changed: make(chan struct{})}
	if rec != nil {
		f.rec, f.ok = *rec, true
	}
	return f
}

func (f *fakeTokens) set(rec events.TokenRecord) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rec, f.ok = rec, true
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeTokens) Current(string) (events.TokenRecord, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rec, f.ok
}

func (f *fakeTokens) WaitNewer(ctx context.Context, _ string, version uint64) (events.TokenRecord, error) {
	for {
		f.mu.Lock()
		rec, ok, ch := f.rec, f.ok, f.changed
		if ok && rec.Version > version {
			f.mu.Unlock()
			return rec, nil
		}
		hook := f.onWait
		f.onWait = nil
		f.mu.Unlock()
		if hook != nil {
			hook()
			continue
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return events.TokenRecord{}, ctx.Err()
		}
	}
}

// fakeInvalidator records the reported versions; onReport, if set, plays
// the holder.
type fakeInvalidator struct {
	mu       sync.Mutex
	versions []uint64
	onReport func(version uint64)
}

func (f *fakeInvalidator) Invalidate(_ context.Context, _ string, version uint64, _ int) error {
	f.mu.Lock()
	f.versions = append(f.versions, version)
	f.mu.Unlock()
	if f.onReport != nil {
		f.onReport(version)
	}
	return nil
}

func (f *fakeInvalidator) reported() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.versions)
}

var errRejected = &wechat.APIError{Endpoint: "/cgi-bin/user/info", Code: wechat.CodeInvalidCredential, Msg: "invalid credential"}

func TestWithToken(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tok := func(v uint64, expiresIn time.Duration) events.TokenRecord {
		return events.TokenRecord{AppID: "wxa", AccessToken: fmt.Sprintf("t%d", v), Version: v, ExpiresAt: now.Add(expiresIn)}
	}
	type env struct {
		tokens *fakeTokens
		inval  *fakeInvalidator
	}
	tests := []struct {
		name        string
		start       *events.TokenRecord
		setup       func(env)                       // fake holder behaviour
		call        func(e env, token string) error // WeChat
		tried       []string
		reports     []uint64
		unavailable bool  // the job fails with a *tokenUnavailableError (else it succeeds)
		is          error // and the error matches it (errors.Is)
	}{
		{
			name:  "rejected version still held: reported, retried with the holder's next",
			start: ptr(tok(1, time.Hour)),
			setup: func(e env) { e.inval.onReport = func(uint64) { e.tokens.set(tok(2, 2*time.Hour)) } },
			call: func(_ env, token string) error {
				if token == "t1" {
					return errRejected
				}
				return nil
			},
			tried:   []string{"t1", "t2"},
			reports: []uint64{1},
		},
		{
			name:  "newer version held when rejected: retried with it at once, no report",
			start: ptr(tok(1, time.Hour)),
			call: func(e env, token string) error {
				if token == "t1" {
					e.tokens.set(tok(2, 2*time.Hour)) // refreshed while the call was in flight
					return errRejected
				}
				return nil
			},
			tried: []string{"t1", "t2"},
		},
		{
			name:        "rejected, nothing newer comes: one report, token unavailable",
			start:       ptr(tok(1, time.Hour)),
			call:        func(env, string) error { return errRejected },
			tried:       []string{"t1"},
			reports:     []uint64{1},
			unavailable: true,
		},
		{
			name:  "expired token not used: waits for the holder's next",
			start: ptr(tok(1, -time.Hour)),
			setup: func(e env) { e.tokens.whenWaiting(func() { e.tokens.set(tok(2, 2*time.Hour)) }) },
			call:  func(env, string) error { return nil },
			tried: []string{"t2"},
		},
		{
			name:        "expired token, nothing newer comes: no call, no report, no fresh token",
			start:       ptr(tok(1, -time.Hour)),
			call:        func(env, string) error { return nil },
			unavailable: true,
			is:          ErrNoFreshToken,
		},
		{
			name:  "expired token, the next one expired too: waits for a fresh one",
			start: ptr(tok(1, -2*time.Hour)),
			setup: func(e env) {
				e.tokens.whenWaiting(func() {
					e.tokens.set(tok(2, -time.Hour))
					e.tokens.whenWaiting(func() { e.tokens.set(tok(3, 2*time.Hour)) })
				})
			},
			call:  func(env, string) error { return nil },
			tried: []string{"t3"},
		},
		{
			name:  "expired within the clock margin: used",
			start: ptr(tok(1, -TokenExpiryMargin+time.Second)),
			call:  func(env, string) error { return nil },
			tried: []string{"t1"},
		},
		{
			name:  "no expires_at: used",
			start: &events.TokenRecord{AppID: "wxa", AccessToken: "t1", Version: 1},
			call:  func(env, string) error { return nil },
			tried: []string{"t1"},
		},
		{
			name:  "newer version held when rejected but expired: not used, not reported",
			start: ptr(tok(1, time.Hour)),
			call: func(e env, token string) error {
				e.tokens.set(tok(2, -time.Hour))
				return errRejected
			},
			tried:       []string{"t1"},
			unavailable: true,
			is:          ErrNoFreshToken,
		},
		{
			name:        "no token at all: token unavailable, not the expiry reason",
			call:        func(env, string) error { return nil },
			unavailable: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := env{tokens: newFakeTokens(tt.start), inval: &fakeInvalidator{}}
			if tt.setup != nil {
				tt.setup(e)
			}
			h := &Handlers{cfg: Config{Tokens: e.tokens, Invalidator: e.inval, MaxRotations: 3, TokenWait: 50 * time.Millisecond,
				Now: func() time.Time { return now }}, log: slog.New(slog.DiscardHandler)}
			var tried []string
			err := h.withToken(context.Background(), "wxa", func(_ context.Context, token string) error {
				tried = append(tried, token)
				return tt.call(e, token)
			})
			var tu *tokenUnavailableError
			switch {
			case !tt.unavailable && err != nil:
				t.Fatalf("err = %v, want success", err)
			case tt.unavailable && !errors.As(err, &tu):
				t.Fatalf("err = %v, want a *tokenUnavailableError", err)
			case tt.is != nil && !errors.Is(err, tt.is):
				t.Fatalf("err = %v, want %v", err, tt.is)
			case tt.is == nil && errors.Is(err, ErrNoFreshToken):
				t.Fatalf("err = %v: not an expiry", err)
			}
			if !slices.Equal(tried, tt.tried) {
				t.Errorf("tokens tried %v, want %v", tried, tt.tried)
			}
			if got := e.inval.reported(); !slices.Equal(got, tt.reports) {
				t.Errorf("versions reported %v, want %v", got, tt.reports)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
