package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVaultConfig(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "vault.keys")
	os.WriteFile(keys, []byte("k1:AAAA\n"), 0o600)
	file := filepath.Join(dir, "wxhub.yaml")
	os.WriteFile(file, []byte(`
vault: {keys_file: `+keys+`}
apps:
  - {appid: wxfile, secret: s, vault: true, refresh_days: 180}
`), 0o600)
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c, err := Load(fs, FlagsNATS|FlagsServer|FlagsWorker, []string{"--config", file}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ResolveSecrets(env(nil)); err != nil {
		t.Fatal(err)
	}
	if !c.Apps[0].Vault || c.Apps[0].RefreshDays != 180 {
		t.Fatalf("apps = %+v", c.Apps)
	}
	if a, err := ParseApp("appid=wxflag,secret=s,vault=on,refresh_days=30"); err != nil || !a.Vault || a.RefreshDays != 30 {
		t.Fatalf("--app with the vault: %+v %v", a, err)
	}
	if c.Vault.Keys != "k1:AAAA\n" {
		t.Fatalf("keys from the file: %q", c.Vault.Keys)
	}
	if err := c.Validate(true); err != nil {
		t.Fatal(err)
	}
	// WXHUB_VAULT_KEYS beats the file.
	if err := c.ResolveSecrets(env(map[string]string{"WXHUB_VAULT_KEYS": "k2:BBBB"})); err != nil || c.Vault.Keys != "k2:BBBB" {
		t.Fatalf("env keys: %q %v", c.Vault.Keys, err)
	}

	for _, tc := range []struct{ app, want string }{
		{"appid=a,vault=maybe", "vault=\"maybe\", want on or off"},
		{"appid=a,refresh_days=x", "refresh_days=\"x\""},
	} {
		if _, err := ParseApp(tc.app); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseApp(%q) = %v, want %q", tc.app, err, tc.want)
		}
	}
	bad := Default()
	bad.Apps = []App{{AppID: "wxa", RefreshDays: 400}}
	if err := bad.Validate(false); err == nil || !strings.Contains(err.Error(), "apps[0].refresh_days") {
		t.Errorf("refresh_days 400: %v", err)
	}
	missing := Default()
	missing.Vault.KeysFile = filepath.Join(dir, "nope")
	if err := missing.ResolveSecrets(env(nil)); err == nil || !strings.Contains(err.Error(), "vault.keys_file") {
		t.Errorf("missing keys file: %v", err)
	}
}
