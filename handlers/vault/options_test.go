package vault_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wxhub/wxhub/broker/brokertest"
	"github.com/wxhub/wxhub/handlers/vault"
)

func TestMinLockTTLCoversTheRefreshTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		refresh, want time.Duration
	}{
		{vault.DefaultRefreshTimeout, 28 * time.Second},
		{10 * time.Second, 15 * time.Second},
		{2 * time.Second, 4 * time.Second},
		{500 * time.Millisecond, 2 * time.Second},
	}
	for _, tt := range tests {
		got := vault.MinLockTTL(tt.refresh)
		if got != tt.want {
			t.Errorf("MinLockTTL(%v) = %v, want %v", tt.refresh, got, tt.want)
		}
		if cut := got - got/4; cut < tt.refresh+vault.RefreshSlack {
			t.Errorf("MinLockTTL(%v) = %v cuts a refresh after %v, before %v", tt.refresh, got, cut, tt.refresh+vault.RefreshSlack)
		}
		if err := (vault.Options{RefreshTimeout: tt.refresh, LockTTL: got}).Validate(); err != nil {
			t.Errorf("RefreshTimeout %v with its MinLockTTL: %v", tt.refresh, err)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		opts    vault.Options
		wantErr string // "" means valid
	}{
		{"defaults", vault.Options{}, ""},
		{"only a refresh timeout: the lock follows", vault.Options{RefreshTimeout: time.Minute}, ""},
		{"a longer lock than needed", vault.Options{LockTTL: time.Minute}, ""},
		{"the exact minimum", vault.Options{RefreshTimeout: 2 * time.Second, LockTTL: 4 * time.Second}, ""},
		{"the old default lock under the default refresh timeout", vault.Options{LockTTL: 20 * time.Second}, "at least 28s"},
		{"a lock just too short", vault.Options{RefreshTimeout: 2 * time.Second, LockTTL: 3 * time.Second}, "at least 4s"},
		{"a longer refresh timeout than the lock allows", vault.Options{RefreshTimeout: time.Minute, LockTTL: 30 * time.Second}, "RefreshTimeout 1m0s"},
		{"a lock in fractions of a second", vault.Options{RefreshTimeout: time.Second, LockTTL: 3500 * time.Millisecond}, "whole number of seconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.opts.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, vault.ErrOptions) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate: %v, want ErrOptions containing %q", err, tt.wantErr)
			}
		})
	}
}

// Open derives the lock from the refresh timeout, and refuses options
// that do not fit before it touches the bucket.
func TestOpenDerivesTheLockAndRefusesBadOptions(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t)
	ctx := context.Background()
	r := ring(t, keyLine(t, "k1"))
	v, err := vault.Open(ctx, env.JS, r, vault.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if v.RefreshTimeout() != vault.DefaultRefreshTimeout || v.LockTTL() != 28*time.Second {
		t.Fatalf("defaults: RefreshTimeout %v, LockTTL %v; want %v and 28s", v.RefreshTimeout(), v.LockTTL(), vault.DefaultRefreshTimeout)
	}
	if v, err = vault.Open(ctx, env.JS, r, vault.Options{RefreshTimeout: 45 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if v.LockTTL() != 62*time.Second {
		t.Fatalf("RefreshTimeout 45s: LockTTL %v, want 62s", v.LockTTL())
	}
	if _, err := vault.Open(ctx, env.JS, r, vault.Options{LockTTL: 20 * time.Second}); !errors.Is(err, vault.ErrOptions) {
		t.Fatalf("Open with the old 20 s lock: %v, want ErrOptions", err)
	}
}
