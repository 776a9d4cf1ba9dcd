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

// Rotate run with an older keyring (k1,k2) while another process has k3:
// it refuses, naming k3, and k3's check record stays, so a process
// without k3 still refuses to open the vault.
func TestRotateWithAnOlderKeyringRefusesAndKeepsTheNewerKeysCheck(t *testing.T) {
	t.Parallel()
	env := brokertest.Start(t)
	c := &clock{now: time.Now()}
	ctx := context.Background()
	k1, k2, k3 := keyLine(t, "k1"), keyLine(t, "k2"), keyLine(t, "k3")
	v1 := openVault(t, env.JS, ring(t, k1), c)
	if _, err := v1.Store(ctx, "wxapp", "oOld", tokens(c, 1)); err != nil {
		t.Fatal(err)
	}
	v12 := openVault(t, env.JS, ring(t, k1, k2), c)      // opened before k3 existed
	v123 := openVault(t, env.JS, ring(t, k1, k2, k3), c) // writes k3's check record
	if _, err := v123.Store(ctx, "wxapp", "oAlice", tokens(c, 2)); err != nil {
		t.Fatal(err)
	}

	st, err := v12.Rotate(ctx)
	if !errors.Is(err, vault.ErrMissingKey) || !strings.Contains(err.Error(), `"k3"`) {
		t.Fatalf("Rotate with k1,k2 = %v, want ErrMissingKey naming k3", err)
	}
	if len(st.RetiredKeys) != 0 || st.Reencrypted != 0 {
		t.Fatalf("a refused rotate did work: %+v", st)
	}
	if _, err := vault.Open(ctx, env.JS, ring(t, k1, k2), vault.Options{Now: c.Now}); !errors.Is(err, vault.ErrMissingKey) {
		t.Fatalf("Open without k3 after the refused rotate: %v, want ErrMissingKey", err)
	}
	if rec, err := v123.Get(ctx, "wxapp", "oOld"); err != nil || rec.KeyID != "k1" {
		t.Fatalf("oOld after the refused rotate: %+v %v (want untouched under k1)", rec, err)
	}

	// With the newest ring, rotate retires k1 and k2 and keeps k3.
	st, err = v123.Rotate(ctx)
	if err != nil || strings.Join(st.RetiredKeys, ",") != "k1,k2" || st.Reencrypted != 1 {
		t.Fatalf("Rotate with k1,k2,k3 = %+v, %v", st, err)
	}
	if _, err := openVault(t, env.JS, ring(t, k3), c).Get(ctx, "wxapp", "oAlice"); err != nil {
		t.Fatal(err)
	}
}
