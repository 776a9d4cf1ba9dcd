package vault_test

import (
	"fmt"
	"strings"

	"github.com/wxhub/wxhub/handlers/vault"
)

// A keyring lists keys oldest first; the last one encrypts new records
// and every one decrypts. After `wxhub vault rotate`, k1 may be dropped.
func ExampleParseKeyring() {
	k1, _ := vault.NewKeyLine("k1") // what `wxhub vault keygen --id k1` prints
	k2, _ := vault.NewKeyLine("k2")
	ring, err := vault.ParseKeyring(k1 + "\n" + k2)
	if err != nil {
		panic(err)
	}
	fmt.Println("keys:", strings.Join(ring.IDs(), ", "))
	fmt.Println("encrypts with:", ring.Current())

	_, err = vault.ParseKeyring("k3:c2hvcnQ=")
	fmt.Println(err)
	// Output:
	// keys: k1, k2
	// encrypts with: k2
	// vault: key "k3": 5 bytes, want 32 (AES-256)
}
