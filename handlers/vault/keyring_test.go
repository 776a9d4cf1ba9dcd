package vault

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func testLine(t *testing.T, id string) string {
	t.Helper()
	l, err := NewKeyLine(id)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestParseKeyring(t *testing.T) {
	k1, k2 := testLine(t, "k1"), testLine(t, "k2")
	short := "k3:" + base64.StdEncoding.EncodeToString(make([]byte, 16))
	for _, tc := range []struct {
		name, text string
		current    string
		wantErr    string
	}{
		{name: "one key", text: k1, current: "k1"},
		{name: "newest last", text: "# ring\n" + k1 + "\n\n" + k2 + "\n", current: "k2"},
		{name: "semicolons", text: k1 + ";" + k2, current: "k2"},
		{name: "empty", text: "# nothing\n", wantErr: "no keys"},
		{name: "no colon", text: "k1", wantErr: "want <id>:<base64 key>"},
		{name: "bad id", text: "k 1:" + strings.SplitN(k1, ":", 2)[1], wantErr: "key id must be"},
		{name: "duplicate", text: k1 + "\n" + k1, wantErr: "appears twice"},
		{name: "not base64", text: "k1:!!!", wantErr: "not base64"},
		{name: "AES-128 key", text: short, wantErr: "16 bytes, want 32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseKeyring(tc.text)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				// Never the key material in an error.
				for _, l := range []string{k1, k2} {
					if b64 := strings.SplitN(l, ":", 2)[1]; strings.Contains(err.Error(), b64) {
						t.Fatalf("error quotes a key: %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Current() != tc.current {
				t.Fatalf("Current = %s, want %s", r.Current(), tc.current)
			}
		})
	}
}

func TestSealOpen(t *testing.T) {
	k1, k2 := testLine(t, "k1"), testLine(t, "k2")
	old, err := ParseKeyring(k1)
	if err != nil {
		t.Fatal(err)
	}
	both, err := ParseKeyring(k1 + "\n" + k2)
	if err != nil {
		t.Fatal(err)
	}
	tok := Tokens{AccessToken: "ACCESS-secret", RefreshToken: "REFRESH-secret", Scope: "snsapi_userinfo"}
	b, kid, err := old.sealTokens("wxapp", "oAlice", tok)
	if err != nil || kid != "k1" {
		t.Fatalf("seal: %v %s", err, kid)
	}
	if strings.Contains(string(b), "secret") {
		t.Fatalf("plaintext in the envelope: %s", b)
	}
	// An old record reads under the new ring; new records use k2.
	got, kid, err := both.openTokens("wxapp", "oAlice", b)
	if err != nil || kid != "k1" || got.AccessToken != tok.AccessToken || got.RefreshToken != tok.RefreshToken {
		t.Fatalf("open: %+v %s %v", got, kid, err)
	}
	if _, kid, _ := both.sealTokens("wxapp", "oAlice", tok); kid != "k2" {
		t.Fatalf("new records under %s, want k2", kid)
	}
	// Moved under another user's key: does not decrypt.
	if _, _, err := both.openTokens("wxapp", "oBob", b); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("swapped record: err = %v, want ErrDecrypt", err)
	}
	if _, _, err := both.openTokens("wxother", "oAlice", b); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("record moved to another app: err = %v, want ErrDecrypt", err)
	}
	// Another key under the same id: ErrDecrypt; an unknown id: ErrUnknownKey.
	impostor, _ := ParseKeyring(testLine(t, "k1"))
	if _, _, err := impostor.openTokens("wxapp", "oAlice", b); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("wrong key: err = %v", err)
	}
	only2, _ := ParseKeyring(k2)
	if _, _, err := only2.openTokens("wxapp", "oAlice", b); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("missing key: err = %v", err)
	}
	if _, _, err := only2.openTokens("wxapp", "oAlice", []byte("{not json")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("garbage: err = %v", err)
	}
}

func TestTokensNeverPrinted(t *testing.T) {
	tok := Tokens{AccessToken: "ACCESS-secret", RefreshToken: "REFRESH-secret"}
	for _, s := range []string{tok.String(), tok.GoString(), tok.LogValue().String(), Record{Tokens: tok}.LogValue().String()} {
		if strings.Contains(s, "secret") {
			t.Fatalf("token printed: %s", s)
		}
	}
}

// The key bytes a keyring decodes are zeroed once its cipher is built,
// and also when they are no key (the wrong size): only the cipher's own
// copy lives on.
func TestNewAEADZeroesTheKeyBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
		ok   bool
	}{
		{"AES-256 key", KeySize, true},
		{"AES-128 key", 16, false},
		{"too long", 64, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := make([]byte, tc.size)
			for i := range raw {
				raw[i] = byte(i) | 0x80
			}
			aead, err := newAEAD(raw)
			if (err == nil) != tc.ok {
				t.Fatalf("newAEAD(%d bytes) = %v, %v", tc.size, aead, err)
			}
			for i, b := range raw {
				if b != 0 {
					t.Fatalf("byte %d of the key is %#x after newAEAD, want 0", i, b)
				}
			}
		})
	}
}
